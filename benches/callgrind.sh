#!/usr/bin/env bash
# Instructions per call of benchmark subjects, under valgrind's callgrind:
# steady where nanoseconds on a shared machine are not.
#
#   benches/callgrind.sh BENCH [SUBJECT...]
#   benches/callgrind.sh retry success/tower_layer/palisade success/tower_layer/tower
#
# Each subject runs N and 2N times (PALISADE_CALLGRIND=<subject>:<calls>, see
# `palisade_benches::callgrind`; N is $CALLS, 20,000 by default). Instructions
# are collected only inside `palisade_benches::callgrind`, the loop of calls
# (--toggle-collect): set-up whose count varies between runs (quanta's clock
# calibration, randomly seeded hashers) is left out. (instructions(2N) -
# instructions(N)) / N is what one more call costs, the subject lookup
# cancelled out. With no SUBJECT, the bench's whole list is run. Run on demand,
# not in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?usage: benches/callgrind.sh BENCH [SUBJECT...]}
shift
calls=${CALLS:-20000}
bin=$(cargo bench -q -p palisade-benches --bench "$bench" --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.reason == "compiler-artifact" and .target.name == "'"$bench"'" and .executable != null) | .executable' | tail -1)
[ -x "$bin" ] || { echo "no bench binary for $bench" >&2; exit 1; }
if [ $# -eq 0 ]; then
  # An unknown subject makes the binary list the known ones.
  mapfile -t subjects < <(PALISADE_CALLGRIND="?:1" "$bin" 2>&1 | grep -o 'known: \[.*\]' | tr -d '[]"' | sed 's/known: //' | tr ',' '\n' | sed 's/^ *//')
  set -- "${subjects[@]}"
fi
instructions() {
  PALISADE_CALLGRIND="$1:$2" valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    --toggle-collect='palisade_benches::callgrind*' "$bin" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '| subject | instructions per call |\n|---|---:|\n'
for subject in "$@"; do
  one=$(instructions "$subject" "$calls")
  two=$(instructions "$subject" "$((2 * calls))")
  printf '| `%s` | %s |\n' "$subject" "$(( (two - one) / calls ))"
done
