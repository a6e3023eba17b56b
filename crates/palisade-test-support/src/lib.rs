//! Helpers for Palisade's tests that need a real server (PostgreSQL, Redis).
//!
//! A test asks for its server's URL with [`postgres_url`] or [`redis_url`]
//! (or [`service_url`] for another [`Service`]):
//!
//! - the URL is the service's variable (`PALISADE_POSTGRES_URL`,
//!   `PALISADE_REDIS_URL`) or, when that is unset or empty, the usual local
//!   address, so `cargo test` runs the test wherever the server is up;
//! - the server is probed with a plain TCP connect (2 s at most, once per URL
//!   and process);
//! - when it cannot be reached the helper returns `None` and the test returns
//!   early, after a `SKIPPED <package> <test>: <why>` line written straight to
//!   the process's stderr, which `cargo test` does not capture, so a skip
//!   never looks like a pass;
//! - under `PALISADE_REQUIRE_SERVICES=1` an unreachable server fails the test
//!   instead.
//!
//! ```no_run
//! # async fn connect(_: &str) {}
//! # async fn test() {
//! let Some(url) = palisade_test_support::redis_url(palisade_test_support::test_name!()) else {
//!     return; // skipped, and the output says so
//! };
//! let prefix = palisade_test_support::unique_name("palisade_test");
//! connect(&url).await;
//! # }
//! ```
//!
//! What a test creates on a shared server (a schema, keys under a prefix) it
//! removes with a [`Cleanup`] guard, which runs when the test ends, whether
//! it passed or panicked.

mod own_server;
mod traced;

pub use own_server::{OwnPostgres, OwnRedis, TestCerts, free_port};
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::hash::BuildHasher;
use std::io::{ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
pub use traced::{Collector, Traced};

/// The variable that turns an unreachable server into a failure: set it to `1`.
pub const REQUIRE_SERVICES_VAR: &str = "PALISADE_REQUIRE_SERVICES";

/// How long the reachability probe waits for a TCP connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a [`Cleanup`] guard waits for its work before giving up on it.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server some tests need: its name, the variable holding its URL, and
/// where it usually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// The name in messages, e.g. `PostgreSQL`.
    pub name: &'static str,
    /// The variable holding the URL, e.g. `PALISADE_POSTGRES_URL`.
    pub var: &'static str,
    /// The URL used when the variable is unset or empty.
    pub default_url: &'static str,
    /// The port probed when the URL names none.
    pub default_port: u16,
}

/// PostgreSQL: `PALISADE_POSTGRES_URL`, by default `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES: Service = Service {
    name: "PostgreSQL",
    var: "PALISADE_POSTGRES_URL",
    default_url: "postgres://postgres@127.0.0.1:5432/test",
    default_port: 5432,
};

/// Redis: `PALISADE_REDIS_URL`, by default `redis://127.0.0.1:6379`.
pub const REDIS: Service = Service {
    name: "Redis",
    var: "PALISADE_REDIS_URL",
    default_url: "redis://127.0.0.1:6379",
    default_port: 6379,
};

/// The PostgreSQL URL for `test`, or `None` when the server cannot be
/// reached (the test is then skipped, visibly); see [`service_url`].
///
/// # Panics
///
/// When the server cannot be reached and `PALISADE_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn postgres_url(test: &str) -> Option<String> {
    service_url(&POSTGRES, test)
}

/// The Redis URL for `test`, or `None` when the server cannot be reached
/// (the test is then skipped, visibly); see [`service_url`].
///
/// # Panics
///
/// When the server cannot be reached and `PALISADE_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn redis_url(test: &str) -> Option<String> {
    service_url(&REDIS, test)
}

/// The URL of `service` for `test` (its name in skip lines, such as
/// [`test_name!`] gives): the service's variable, or its default address
/// when that is unset or empty.
///
/// Returns `None` when a TCP connection to the URL's host and port fails
/// within [`PROBE_TIMEOUT`], after writing a `SKIPPED` line naming the
/// package, the test and the reason to stderr (once per test and process).
/// URLs whose server cannot be probed over TCP (a Unix socket, a key=value
/// connection string) are returned without a probe.
///
/// # Panics
///
/// When the server cannot be reached and `PALISADE_REQUIRE_SERVICES=1`.
#[track_caller]
pub fn service_url(service: &Service, test: &str) -> Option<String> {
    let url = std::env::var(service.var)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| service.default_url.to_owned());
    let Err(reason) = probe_cached(&url, service.default_port) else {
        return Some(url);
    };
    let why = format!(
        "{} not reachable at {} ({reason}); start it or set {}",
        service.name,
        redact(&url),
        service.var
    );
    assert!(
        !services_required(),
        "{test}: {why} ({REQUIRE_SERVICES_VAR}=1 makes this a failure)"
    );
    skipped(test, &why);
    None
}

/// Whether `PALISADE_REQUIRE_SERVICES=1`: a test that cannot run must fail.
pub fn services_required() -> bool {
    std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|value| value.trim() == "1")
}

/// Writes `SKIPPED <package> <test>: <why>` straight to the process's stderr,
/// where libtest's output capture does not reach, once per `test` and
/// process (a property test asking once per case says it once).
pub fn skipped(test: &str, why: &str) {
    static SAID: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(test.to_owned());
    if first {
        // Cargo sets the package's name when it runs a test binary.
        let package = std::env::var("CARGO_PKG_NAME").map_or_else(|_| String::new(), |p| p + " ");
        visible(&format!("SKIPPED {package}{test}: {why}\n"));
    }
}

/// Writes `line` in one piece to the real stderr (not `eprintln!`, which
/// libtest captures and shows only for failing tests).
fn visible(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A name no other test, run or process uses: `{prefix}_{16 hex digits}`,
/// for a schema, a key prefix or a database (lower case, so a PostgreSQL
/// identifier as it is).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = (
        std::process::id(),
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed),
    );
    // RandomState is seeded randomly per process, and differs per instance.
    format!("{prefix}_{:016x}", RandomState::new().hash_one(seed))
}

/// The path of the function this is called in, e.g.
/// `postgres::a_late_commit_is_never_skipped_by_a_reader` in test target
/// `postgres`: the test's name for [`service_url`]'s skip lines.
///
/// Best effort: it reads [`std::any::type_name_of_val`] of a local function,
/// whose format Rust does not promise.
#[macro_export]
macro_rules! test_name {
    () => {{
        fn here() {}
        $crate::function_path(::std::any::type_name_of_val(&here))
    }};
}

/// What [`test_name!`] makes of the type name of its local function `here`:
/// the enclosing function's path, without `::here` and the `::{{closure}}`s
/// of async bodies.
pub fn function_path(here: &'static str) -> &'static str {
    let mut path = here.strip_suffix("::here").unwrap_or(here);
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path
}

/// Runs its work when dropped, so what a test made on a shared server is
/// removed whether the test passed or panicked.
///
/// The work runs on a thread of its own, where it may start a runtime of
/// its own and block (a guard is usually dropped inside the test's async
/// runtime, where neither is allowed), and is waited for up to
/// [`CLEANUP_TIMEOUT`]. A failure is written to stderr as a
/// `CLEANUP FAILED` line, never a panic (the test may be unwinding already).
#[must_use = "the work runs when the guard is dropped: bind it to a named variable"]
pub struct Cleanup {
    what: String,
    work: Option<Box<dyn FnOnce() -> Result<(), String> + Send>>,
}

impl Cleanup {
    /// A guard that runs `work` when dropped; `what` names it in a failure
    /// message (e.g. `drop schema palisade_test_…`).
    pub fn new<F, E>(what: impl Into<String>, work: F) -> Self
    where
        F: FnOnce() -> Result<(), E> + Send + 'static,
        E: Display,
    {
        Self {
            what: what.into(),
            work: Some(Box::new(move || work().map_err(|e| e.to_string()))),
        }
    }
}

impl std::fmt::Debug for Cleanup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cleanup")
            .field("what", &self.what)
            .field("pending", &self.work.is_some())
            .finish()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        let (done, outcome) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("cleanup: {}", self.what))
            .spawn(move || {
                let _ = done.send(work());
            });
        let failure = match spawned {
            Err(e) => format!("cannot start a thread: {e}"),
            Ok(_) => match outcome.recv_timeout(CLEANUP_TIMEOUT) {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    format!("not done within {CLEANUP_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => "it panicked".to_owned(),
            },
        };
        visible(&format!("CLEANUP FAILED {}: {failure}\n", self.what));
    }
}

/// The probe's verdict on `url`, computed once per process.
fn probe_cached(url: &str, default_port: u16) -> Result<(), String> {
    static SEEN: OnceLock<Mutex<HashMap<String, Result<(), String>>>> = OnceLock::new();
    // Held while probing, so tests starting together probe once.
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    seen.entry(url.to_owned())
        .or_insert_with(|| probe(url, default_port))
        .clone()
}

/// Connects to `url`'s host and port over TCP and closes again.
fn probe(url: &str, default_port: u16) -> Result<(), String> {
    let Some((host, port)) = tcp_address(url, default_port) else {
        return Ok(());
    };
    let addresses = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut last = format!("{host} resolves to no address");
    for address in addresses {
        match TcpStream::connect_timeout(&address, PROBE_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => {
                last = match e.kind() {
                    ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                    ErrorKind::TimedOut | ErrorKind::WouldBlock => {
                        format!("no answer within {PROBE_TIMEOUT:?}")
                    }
                    _ => e.to_string(),
                };
            }
        }
    }
    Err(last)
}

/// The host and port a `scheme://[user[:password]@]host[:port][/…]` URL
/// names (the first, if it lists several), or `None` where there is nothing
/// to probe over TCP: no `://`, a Unix socket, no host, a `host=` parameter.
fn tcp_address(url: &str, default_port: u16) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.contains("unix") {
        return None;
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    if tail.contains("host=") {
        return None;
    }
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let first = host_port.split(',').next()?;
    let (host, port) = if let Some(bracketed) = first.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => default_port,
    };
    Some((host.to_owned(), port))
}

/// `url` with the password of its user info replaced by `***`, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(url: &str) -> Option<(String, u16)> {
        tcp_address(url, 5432)
    }

    #[test]
    fn the_probed_address_is_the_urls_first_host_and_port() {
        let at = |host: &str, port| Some((host.to_owned(), port));
        assert_eq!(
            address("postgres://postgres@127.0.0.1:5432/test"),
            at("127.0.0.1", 5432)
        );
        assert_eq!(address("postgres://localhost/test"), at("localhost", 5432));
        assert_eq!(address("redis://127.0.0.1:6390"), at("127.0.0.1", 6390));
        assert_eq!(
            address("redis://:p%40ss:w@db.example:1/3?protocol=resp3"),
            at("db.example", 1)
        );
        assert_eq!(address("postgres://u:pw@[::1]:6000/db"), at("::1", 6000));
        assert_eq!(address("postgres://[::1]/db"), at("::1", 5432));
        assert_eq!(address("postgresql://h1:1,h2:2/db"), at("h1", 1));
        assert_eq!(address("host=127.0.0.1 user=postgres"), None);
        assert_eq!(address("postgres:///test?host=/var/run/postgresql"), None);
        assert_eq!(address("postgres://u@/test?host=/tmp"), None);
        assert_eq!(address("redis+unix:///tmp/redis.sock"), None);
        assert_eq!(address("unix:///tmp/redis.sock"), None);
        assert_eq!(address("redis://host:notaport"), None);
    }

    #[test]
    fn messages_do_not_show_passwords() {
        assert_eq!(redact("redis://:secret@host:1/0"), "redis://:***@host:1/0");
        assert_eq!(
            redact("postgres://me:secret@host/db?x=a@b"),
            "postgres://me:***@host/db?x=a@b"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn a_closed_port_is_unreachable_and_an_open_one_reachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        assert_eq!(probe(&format!("redis://127.0.0.1:{open}"), 1), Ok(()));
        drop(listener);
        assert_eq!(
            probe(&format!("redis://127.0.0.1:{open}"), 1),
            Err("connection refused".to_owned())
        );
    }

    #[test]
    fn unique_names_differ_and_are_identifiers() {
        let (a, b) = (unique_name("palisade_test"), unique_name("palisade_test"));
        assert_ne!(a, b);
        assert_eq!(a.len(), "palisade_test_".len() + 16);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        );
    }

    #[test]
    fn test_name_is_the_enclosing_function() {
        assert_eq!(
            test_name!(),
            "palisade_test_support::tests::test_name_is_the_enclosing_function"
        );
        let in_async = async { test_name!() };
        let name = std::pin::pin!(in_async);
        let waker = std::task::Waker::noop();
        let std::task::Poll::Ready(name) = name.poll(&mut std::task::Context::from_waker(waker))
        else {
            unreachable!("ready at once")
        };
        assert_eq!(
            name,
            "palisade_test_support::tests::test_name_is_the_enclosing_function"
        );
    }

    #[test]
    fn cleanup_runs_on_drop_even_when_the_test_panics() {
        let (ran, runs) = mpsc::channel();
        let unwound = std::panic::catch_unwind(move || {
            let _guard = Cleanup::new("test", move || ran.send(()));
            panic!("the test fails");
        });
        assert!(unwound.is_err());
        assert_eq!(runs.try_recv(), Ok(()));
    }
}
