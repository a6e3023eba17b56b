//! Random sequences of calls, outcomes, drops and clock moves, checked step by
//! step against a small reference model of the state machine.

use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreaker, Outcome, Permit, SlidingWindow, State};
use palisade_core::ManualClock;
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const OPEN_NANOS: u64 = 1_000 * MS;
const SLOW_NANOS: u64 = 100 * MS;
const MAX_HALF_OPEN_NANOS: u64 = 3_000 * MS;
const PROBES: u32 = 2;
const MINIMUM: u64 = 3;
const STREAK: u32 = 4;
const FAILURE_RATE: f64 = 0.5;
const SLOW_RATE: f64 = 0.6;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// The last 5 calls, with every rule on.
    Count,
    /// The last 4 s in 4 buckets of 1 s, with every rule on.
    Time,
    /// The last 5 calls, failure rate only: the path that never reads the clock.
    PlainCount,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Finish { which: usize, outcome: Outcome },
    Drop { which: usize },
    Advance { millis: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<usize>(), prop_oneof![
            5 => Just(Outcome::Failure),
            4 => Just(Outcome::Success),
            1 => Just(Outcome::Ignored),
        ]).prop_map(|(which, outcome)| Op::Finish { which, outcome }),
        1 => any::<usize>().prop_map(|which| Op::Drop { which }),
        3 => prop::sample::select(vec![0u64, 50, 100, 400, 999, 1000, 2500])
            .prop_map(|millis| Op::Advance { millis }),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Ticket {
    generation: u64,
    state: State,
    started: u64,
}

/// The reference: the rules written as plainly as possible.
#[derive(Debug)]
struct Model {
    kind: Kind,
    state: State,
    generation: u64,
    /// (time, failed, slow) of each recorded call since the window was emptied.
    calls: Vec<(u64, bool, bool)>,
    streak: u32,
    open_until: u64,
    half_open_since: u64,
    admitted: u32,
    finished: u32,
    probe_failures: u32,
    probe_slow: u32,
}

impl Model {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            state: State::Closed,
            generation: 0,
            calls: Vec::new(),
            streak: 0,
            open_until: 0,
            half_open_since: 0,
            admitted: 0,
            finished: 0,
            probe_failures: 0,
            probe_slow: 0,
        }
    }

    /// The calls the window holds at `now`: (calls, failures, slow).
    fn window(&self, now: u64) -> (u64, u64, u64) {
        let held: Vec<_> = match self.kind {
            Kind::Count | Kind::PlainCount => self.calls.iter().rev().take(5).collect(),
            Kind::Time => {
                let bucket = 1_000 * MS;
                let current = now / bucket;
                self.calls
                    .iter()
                    .filter(|(t, _, _)| t / bucket + 4 > current)
                    .collect()
            }
        };
        let failures = held.iter().filter(|c| c.1).count() as u64;
        let slow = held.iter().filter(|c| c.2).count() as u64;
        (held.len() as u64, failures, slow)
    }

    fn enter(&mut self, state: State, now: u64) {
        self.generation += 1;
        self.state = state;
        match state {
            State::Open => self.open_until = now + OPEN_NANOS,
            State::HalfOpen => {
                self.half_open_since = now;
                self.admitted = 0;
                self.finished = 0;
                self.probe_failures = 0;
                self.probe_slow = 0;
            }
            State::Closed => {
                self.calls.clear();
                self.streak = 0;
            }
            _ => unreachable!("the model has no manual states"),
        }
    }

    fn acquire(&mut self, now: u64) -> Result<Ticket, (State, Option<u64>)> {
        if self.state == State::Closed {
            return Ok(Ticket {
                generation: self.generation,
                state: State::Closed,
                started: now,
            });
        }
        if self.state == State::Open {
            if now < self.open_until {
                return Err((State::Open, Some(self.open_until - now)));
            }
            self.enter(State::HalfOpen, now);
        }
        if self.kind != Kind::PlainCount && now - self.half_open_since >= MAX_HALF_OPEN_NANOS {
            self.enter(State::Open, now);
            return Err((State::Open, Some(OPEN_NANOS)));
        }
        if self.admitted == PROBES {
            return Err((State::HalfOpen, None));
        }
        self.admitted += 1;
        Ok(Ticket {
            generation: self.generation,
            state: State::HalfOpen,
            started: now,
        })
    }

    fn finish(&mut self, ticket: Ticket, outcome: Outcome, now: u64) {
        let slow = self.kind != Kind::PlainCount && now - ticket.started >= SLOW_NANOS;
        let failed = outcome == Outcome::Failure;
        if ticket.generation != self.generation {
            return;
        }
        if ticket.state == State::Closed {
            if outcome == Outcome::Ignored {
                return;
            }
            self.calls.push((now, failed, slow));
            self.streak = if failed { self.streak + 1 } else { 0 };
            let (calls, failures, slow_calls) = self.window(now);
            let rate_trips = calls >= MINIMUM
                && (failures as f64 / calls as f64 >= FAILURE_RATE
                    || slow_calls as f64 / calls as f64 >= SLOW_RATE);
            let streak_trips = self.kind != Kind::PlainCount && self.streak >= STREAK;
            if rate_trips || streak_trips {
                self.enter(State::Open, now);
            }
            return;
        }
        if self.kind != Kind::PlainCount && now - self.half_open_since >= MAX_HALF_OPEN_NANOS {
            self.enter(State::Open, now);
            return;
        }
        if outcome == Outcome::Ignored {
            self.admitted -= 1;
            return;
        }
        self.finished += 1;
        self.probe_failures += u32::from(failed);
        self.probe_slow += u32::from(slow);
        if self.finished == PROBES {
            let reopen = f64::from(self.probe_failures) / f64::from(PROBES) >= FAILURE_RATE
                || f64::from(self.probe_slow) / f64::from(PROBES) >= SLOW_RATE;
            self.enter(if reopen { State::Open } else { State::Closed }, now);
        }
    }

    fn drop_unfinished(&mut self, ticket: Ticket) {
        if ticket.state == State::HalfOpen && ticket.generation == self.generation {
            self.admitted -= 1;
        }
    }
}

fn breaker(kind: Kind, clock: &ManualClock) -> CircuitBreaker {
    let window = match kind {
        Kind::Count | Kind::PlainCount => SlidingWindow::count(5),
        Kind::Time => SlidingWindow::time_with_buckets(Duration::from_secs(4), 4),
    };
    if kind == Kind::PlainCount {
        return CircuitBreaker::builder()
            .clock(clock.shared())
            .sliding_window(window)
            .minimum_calls(MINIMUM as u32)
            .failure_rate_threshold(FAILURE_RATE)
            .half_open_probes(PROBES)
            .open_duration(Duration::from_nanos(OPEN_NANOS))
            .build()
            .expect("valid configuration");
    }
    CircuitBreaker::builder()
        .clock(clock.shared())
        .sliding_window(window)
        .minimum_calls(MINIMUM as u32)
        .failure_rate_threshold(FAILURE_RATE)
        .slow_call_duration(Duration::from_nanos(SLOW_NANOS))
        .slow_call_rate_threshold(SLOW_RATE)
        .consecutive_failures(STREAK)
        .half_open_probes(PROBES)
        .open_duration(Duration::from_nanos(OPEN_NANOS))
        .max_wait_in_half_open(Duration::from_nanos(MAX_HALF_OPEN_NANOS))
        .build()
        .expect("valid configuration")
}

fn run(kind: Kind, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let real = breaker(kind, &clock);
    let mut model = Model::new(kind);
    let mut open: Vec<(Permit<'_>, Ticket)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        let now = palisade_core::Clock::now_nanos(&clock);
        match *op {
            Op::Acquire => match (real.try_acquire(), model.acquire(now)) {
                (Ok(permit), Ok(ticket)) => {
                    prop_assert_eq!(permit.state(), ticket.state, "step {}", step);
                    open.push((permit, ticket));
                }
                (Err(rejected), Err((state, after))) => {
                    prop_assert_eq!(State::rejected_by(&rejected), Some(state), "step {}", step);
                    prop_assert_eq!(
                        rejected.retry_after(),
                        after.map(Duration::from_nanos),
                        "step {}",
                        step
                    );
                }
                (real, model) => {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: real {:?}, model {model:?}",
                        real.map(|p| p.state())
                    )));
                }
            },
            Op::Finish { which, outcome } if !open.is_empty() => {
                let (permit, ticket) = open.swap_remove(which % open.len());
                permit.record(outcome);
                model.finish(ticket, outcome, now);
            }
            Op::Drop { which } if !open.is_empty() => {
                let (permit, ticket) = open.swap_remove(which % open.len());
                drop(permit);
                model.drop_unfinished(ticket);
            }
            Op::Advance { millis } => clock.advance(Duration::from_millis(millis)),
            Op::Finish { .. } | Op::Drop { .. } => {}
        }
        let now = palisade_core::Clock::now_nanos(&clock);
        prop_assert_eq!(real.state(), model.state, "step {}: {:?}", step, op);
        let snap = real.snapshot();
        let (calls, failures, slow) = model.window(now);
        prop_assert_eq!(
            (snap.calls, snap.failed_calls, snap.slow_calls),
            (calls, failures, slow),
            "step {}",
            step
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn count_window_follows_the_model(ops in prop::collection::vec(op(), 1..200)) {
        run(Kind::Count, &ops)?;
    }

    #[test]
    fn plain_count_window_follows_the_model(ops in prop::collection::vec(op(), 1..200)) {
        run(Kind::PlainCount, &ops)?;
    }

    #[test]
    fn time_window_follows_the_model(ops in prop::collection::vec(op(), 1..200)) {
        run(Kind::Time, &ops)?;
    }
}
