//! The Redis limiter: several instances sharing one limit admit exactly the
//! quota, the script's answers, and what happens while Redis does not answer
//! (a server of the test's own, frozen and thawed).
#![cfg(feature = "redis")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_rate_limit::{
    EXHAUSTED, Error, Event, ManualClock, Quota, RedisLimitError, RedisRateLimiter, Rejected,
    UNAVAILABLE, Unavailable,
};
use palisade_test_support::{Cleanup, OwnRedis, redis_url, test_name, unique_name};

/// Deletes the test's keys when the test ends, passed or not.
fn cleanup(url: &str, prefix: &str) -> Cleanup {
    let (url, pattern) = (url.to_owned(), format!("{prefix}*"));
    Cleanup::new(format!("delete {pattern}"), move || {
        let mut c = redis::Client::open(url.as_str())?.get_connection()?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut c)?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query::<()>(&mut c)?;
        }
        Ok::<(), redis::RedisError>(())
    })
}

async fn limiter(url: &str, prefix: &str, quota: Quota) -> RedisRateLimiter {
    RedisRateLimiter::builder(prefix)
        .url(url)
        .quota(quota)
        .connect()
        .await
        .expect("connected")
}

/// The variable that makes [`second_process`] a second process's checks.
const CHILD: &str = "PALISADE_RL_CHILD";

/// Run by [`instances_sharing_a_limit_admit_exactly_the_quota`] as a second
/// process (this test binary again, with `CHILD` set to `url prefix`): 20
/// checks of the shared key, then `admitted=N` on stdout. Passes at once when
/// run on its own.
#[tokio::test]
async fn second_process() {
    let Ok(arg) = std::env::var(CHILD) else {
        return;
    };
    let (url, prefix) = arg.split_once(' ').expect("url prefix");
    let l = limiter(url, prefix, Quota::per_hour(10)).await;
    let mut admitted = 0;
    for _ in 0..20 {
        if l.check("tenant-7").await.is_ok() {
            admitted += 1;
        }
    }
    println!("admitted={admitted}");
}

/// Three instances, each with its own connection, and a second process, 80
/// checks of one key at once: exactly the burst of 10 is admitted in all,
/// and the refusals say when the next one is due on Redis's clock (6 minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_limit_admit_exactly_the_quota() {
    let Some(url) = redis_url(test_name!()) else {
        return;
    };
    let prefix = format!("{}:", unique_name("palisade_rl"));
    let _cleanup = cleanup(&url, &prefix);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "second_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, format!("{url} {prefix}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("a second process");
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(limiter(&url, &prefix, Quota::per_hour(10)).await);
    }
    let mut tasks = Vec::new();
    for t in 0..6 {
        let l = instances[t % 3].clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..10 {
                outcomes.push(l.check("tenant-7").await);
            }
            outcomes
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        for outcome in t.await.unwrap() {
            match outcome {
                Ok(_) => admitted += 1,
                Err(e) => {
                    let d = e.denied().expect("a refusal");
                    assert_eq!(d.rejected().reason(), EXHAUSTED);
                    let after = d.retry_after();
                    assert!(
                        after <= Duration::from_secs(360) && after > Duration::from_secs(350),
                        "{after:?}"
                    );
                }
            }
        }
    }
    let out = child.wait_with_output().expect("the second process ends");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The harness prints it after "test second_process ... ", on the same line.
    let theirs: u32 = stdout
        .split_once("admitted=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .expect("the second process's count")
        .parse()
        .unwrap();
    assert_eq!(
        admitted + theirs,
        10,
        "this process {admitted}, the other {theirs}"
    );
    // Another key has a limit of its own.
    assert_eq!(instances[0].check("tenant-8").await.unwrap().remaining(), 9);
}

#[tokio::test]
async fn the_script_is_the_gcra_on_redis_time() {
    let Some(url) = redis_url(test_name!()) else {
        return;
    };
    let prefix = format!("{}:", unique_name("palisade_rl"));
    let _cleanup = cleanup(&url, &prefix);
    let l = limiter(&url, &prefix, Quota::per_second(10).burst(3)).await;
    for left in [2, 1, 0] {
        assert_eq!(l.check("k").await.unwrap().remaining(), left);
    }
    let err = l.check("k").await.unwrap_err();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
    let r = Rejected::find(&*boxed).expect("found through the error");
    let after = r.retry_after().unwrap();
    assert!(
        after <= Duration::from_millis(100) && after > Duration::from_millis(50),
        "{after:?}"
    );
    assert!(matches!(
        l.check_n("k", 4).await,
        Err(RedisLimitError::Limit(Error::InsufficientCapacity {
            requested: 4,
            burst: 3
        }))
    ));
    // The key expires once its bucket has refilled: Redis holds only draining keys.
    let mut c = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}k"))
        .query(&mut c)
        .unwrap();
    assert!(ttl > 0 && ttl <= 301, "{ttl}");
}

/// A Redis of the test's own is frozen (connections open, no answers):
/// fail closed refuses, fail open admits, local falls back to the quota
/// divided by the instances; nobody asks Redis again during the back-off
/// (on the manual clock); once thawed and the back-off over, all use Redis
/// again, and the shared count went on from where it was.
#[tokio::test]
async fn while_redis_does_not_answer_each_mode_does_what_it_says_and_recovers() {
    let Some(server) = OwnRedis::start(test_name!()) else {
        return;
    };
    let url = server.url();
    let clock = ManualClock::new();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let make = |mode: Unavailable, prefix: &str| {
        let seen = Arc::clone(&failures);
        let refused = Arc::clone(&refusals);
        RedisRateLimiter::builder(prefix)
            .url(url.clone())
            .quota(Quota::per_hour(4))
            .on_unavailable(mode)
            .timeout(Duration::from_millis(200))
            .clock(clock.shared())
            .listener(move |e: &Event| match e {
                Event::BackendUnavailable { failures } => seen.lock().unwrap().push(*failures),
                Event::Rejected { reason, .. } => refused.lock().unwrap().push(*reason),
                _ => {}
            })
            .connect()
    };
    let closed = make(Unavailable::FailClosed, "closed:").await.unwrap();
    let open = make(Unavailable::FailOpen, "open:").await.unwrap();
    let local = make(Unavailable::Local { instances: 2 }, "local:")
        .await
        .unwrap();
    for l in [&closed, &open, &local] {
        l.check("k").await.unwrap();
    }

    server.freeze();
    assert!(matches!(
        closed.check("k").await,
        Err(RedisLimitError::TimedOut(d)) if d == Duration::from_millis(200)
    ));
    // Within the back-off Redis is not asked: at once, Unavailable.
    match closed.check("k").await {
        Err(RedisLimitError::Unavailable { retry_after }) => {
            assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(open.check("k").await.unwrap().remaining(), 4);
    assert_eq!(open.check("k").await.unwrap().remaining(), 4);
    // Local: 4 per hour over 2 instances is a burst of 2 here.
    assert_eq!(local.check("k").await.unwrap().remaining(), 1);
    assert_eq!(local.check("k").await.unwrap().remaining(), 0);
    let err = local.check("k").await.unwrap_err();
    assert_eq!(err.denied().unwrap().rejected().reason(), EXHAUSTED);
    assert_eq!(*failures.lock().unwrap(), [1, 1, 1]);
    // Every refusal reaches the listeners, a fail-closed one as `unavailable`.
    assert_eq!(
        *refusals.lock().unwrap(),
        [UNAVAILABLE, UNAVAILABLE, EXHAUSTED]
    );

    server.thaw();
    clock.advance(Duration::from_secs(10)); // past every back-off
    // Redis again. Each key had 1 of 4 taken before the freeze, and the
    // check that timed out reached the server, which ran it once thawed:
    // counted, though its caller was told otherwise (the limit errs
    // towards refusing). This one is the third: 1 left.
    for l in [&closed, &open, &local] {
        assert_eq!(l.check("k").await.unwrap().remaining(), 1);
    }
}

/// TLS to Redis (feature `redis-tls`), against a server of the test's own
/// that listens with TLS only, with certificates made for it.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_over_tls_verifies_the_server_and_shares_its_limit() {
    use palisade_rate_limit::RedisConnectError;

    fn client(url: &str, ca: &std::path::Path) -> redis::Client {
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(ca).expect("the CA's certificate")),
            },
        )
        .unwrap()
    }

    let dir = std::env::temp_dir().join(unique_name("palisade_rl_tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let Some((server, certs)) = OwnRedis::start_tls(test_name!(), &dir) else {
        return;
    };
    let mut limiters = Vec::new();
    for _ in 0..2 {
        limiters.push(
            RedisRateLimiter::builder("tls:")
                .client(client(&server.url(), &certs.ca))
                .quota(Quota::per_hour(3))
                .connect()
                .await
                .expect("a TLS connection to a server the limiter trusts"),
        );
    }
    assert_eq!(limiters[0].check("k").await.unwrap().remaining(), 2);
    assert_eq!(limiters[1].check_n("k", 2).await.unwrap().remaining(), 0);
    assert!(limiters[0].check("k").await.unwrap_err().denied().is_some());

    // Signed by another authority: refused.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let stranger = palisade_test_support::TestCerts::make(&other);
    let refused = RedisRateLimiter::builder("tls:")
        .client(client(&server.url(), &stranger.ca))
        .quota(Quota::per_hour(3))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(refused, RedisConnectError::Redis(_)), "{refused}");
    let chain = format!("{refused:?}");
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A redis-server of this test's own on a fixed port, killed when dropped.
struct Server(std::process::Child);

impl Server {
    fn start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self(child));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server on port {port} did not start");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis killed mid-test: fail closed refuses with the backend's error, then
/// without asking during the back-off; restarted on the same port (empty:
/// nothing was persisted), the limiter reconnects by itself once the
/// back-off is over, and limits again.
#[tokio::test]
async fn redis_killed_and_restarted_fails_closed_then_recovers() {
    // Skipped (visibly) where redis-server is missing, as OwnRedis does.
    let Some(probe) = OwnRedis::start(test_name!()) else {
        return;
    };
    drop(probe);
    let port = palisade_test_support::free_port();
    let server = Server::start(port).expect("redis-server starts");
    let clock = ManualClock::new();
    let l = RedisRateLimiter::builder("restart:")
        .url(format!("redis://127.0.0.1:{port}"))
        .quota(Quota::per_hour(2))
        .timeout(Duration::from_secs(2))
        .clock(clock.shared())
        .connect()
        .await
        .unwrap();
    assert_eq!(l.check("k").await.unwrap().remaining(), 1);

    drop(server); // killed
    match l.check("k").await {
        Err(RedisLimitError::Backend(_) | RedisLimitError::TimedOut(_)) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        l.check("k").await,
        Err(RedisLimitError::Unavailable { .. })
    ));

    let _server = Server::start(port).expect("redis-server starts again");
    clock.advance(Duration::from_secs(10));
    // A fresh server knows nothing of the key: a whole burst again.
    let mut recovered = None;
    for _ in 0..20 {
        match l.check("k").await {
            Ok(d) => {
                recovered = Some(d.remaining());
                break;
            }
            // The connection manager may still be reconnecting: back off, try again.
            Err(_) => clock.advance(Duration::from_secs(10)),
        }
    }
    assert_eq!(recovered, Some(1));
    assert_eq!(l.check("k").await.unwrap().remaining(), 0);
    assert!(l.check("k").await.unwrap_err().denied().is_some());
}

/// After the back-off, one check asks Redis again; the others keep the
/// failure mode until it has its answer, instead of every caller waiting out
/// a timeout against a server that is still down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_back_off_one_check_asks_redis() {
    let Some(server) = OwnRedis::start(test_name!()) else {
        return;
    };
    let clock = ManualClock::new();
    let failures = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&failures);
    let limiter = RedisRateLimiter::builder("herd:")
        .url(server.url())
        .quota(Quota::per_hour(10))
        .timeout(Duration::from_millis(200))
        .clock(clock.shared())
        .listener(move |e: &Event| {
            if let Event::BackendUnavailable { failures } = e {
                seen.lock().unwrap().push(*failures);
            }
        })
        .connect()
        .await
        .unwrap();
    limiter.check("k").await.unwrap();
    server.freeze();
    assert!(matches!(
        limiter.check("k").await,
        Err(RedisLimitError::TimedOut(_))
    ));
    clock.advance(Duration::from_secs(60)); // the back-off is over
    let checks: Vec<_> = (0..20)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move { limiter.check("k").await })
        })
        .collect();
    let (mut asked, mut unavailable) = (0, 0);
    for check in checks {
        match check.await.unwrap() {
            Err(RedisLimitError::TimedOut(_)) => asked += 1,
            Err(RedisLimitError::Unavailable { .. }) => unavailable += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((asked, unavailable), (1, 19));
    assert_eq!(*failures.lock().unwrap(), [1, 2]);
    server.thaw();
}

#[tokio::test]
async fn a_quota_finer_than_a_microsecond_is_refused() {
    let Some(url) = redis_url(test_name!()) else {
        return;
    };
    let prefix = unique_name("rl-sub-us");
    let _cleanup = cleanup(&url, &prefix);
    let limiter = limiter(&url, &prefix, Quota::per_second(10_000_000)).await;
    match limiter.check("k").await {
        Err(RedisLimitError::Limit(Error::InvalidQuota(e))) => assert_eq!(e.field(), "quota"),
        other => panic!("{other:?}"),
    }
}
