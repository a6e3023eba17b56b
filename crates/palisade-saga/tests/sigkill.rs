//! Crash recovery for real, on SQLite: a child process running sagas is
//! killed with SIGKILL at 50 random moments and started again; then one runs
//! to the end. Every saga ends completed or fully compensated, and with a
//! participant that deduplicates by the idempotency key (in a file that
//! outlives the processes) every effect happened exactly once. On SQLite,
//! and on PostgreSQL when it can be reached.
#![cfg(all(feature = "sqlite", feature = "postgres", unix))]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use palisade_saga::{
    EventStore, Outcome, PostgresEventStore, Saga, SqliteEventStore, Step, StepContext,
};

const SAGAS: usize = 300;
const CHILD_ENV: &str = "PALISADE_SAGA_CHILD_DIR";
/// `{url} {schema}` when the child's store is PostgreSQL.
const CHILD_PG_ENV: &str = "PALISADE_SAGA_CHILD_PG";

async fn open(dir: &Path, pg: Option<&str>) -> Arc<dyn EventStore> {
    match pg {
        Some(pg) => {
            let (url, schema) = pg.split_once(' ').unwrap();
            Arc::new(
                PostgresEventStore::builder(url)
                    .schema(schema)
                    .pool_size(2)
                    .connect()
                    .await
                    .unwrap(),
            )
        }
        None => Arc::new(SqliteEventStore::open(dir.join("sagas.db")).await.unwrap()),
    }
}

type E = std::io::Error;

/// The participant: applies an effect once per key, in `effects` (one key a line, flushed).
fn apply(dir: &Path, ctx: &StepContext) -> std::io::Result<()> {
    let path = dir.join("effects");
    let done: BTreeSet<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    if !done.contains(&ctx.key()) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        // One write of the whole line: `writeln!` writes the key and the
        // newline in two calls, and a kill between them left a torn line
        // that the next process's key was appended to.
        f.write_all(format!("{}\n", ctx.key()).as_bytes())?;
        f.sync_data()?;
    }
    Ok(())
}

fn saga(dir: &Path, store: Arc<dyn EventStore>) -> Saga<u32> {
    let step = |name: &'static str, fails: bool| {
        let (a, c) = (dir.to_owned(), dir.to_owned());
        Step::new(name, move |n: u32, ctx: StepContext| {
            let a = a.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                // Every third order's charge is declined, for good.
                if fails
                    && ctx
                        .saga_id()
                        .trim_start_matches('o')
                        .parse::<usize>()
                        .unwrap()
                        % 3
                        == 0
                {
                    return Err(E::other("declined"));
                }
                apply(&a, &ctx)?;
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, E>(n + 1)
            }
        })
        .compensate(move |_n: u32, ctx: StepContext| {
            let c = c.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                apply(&c, &ctx)
            }
        })
    };
    Saga::builder("order", store)
        .owner(format!("pid-{}", std::process::id()))
        .lease(Duration::from_millis(200))
        .step(step("reserve", false))
        .step(step("charge", true))
        .step(Step::new("ship", |n: u32, _| async move { Ok::<_, E>(n + 1) }).pivot())
        .build()
        .unwrap()
}

/// The child: resumes what it finds, then starts (or finds) every order.
#[test]
fn child_process() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // run by the parent only
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = std::env::var(CHILD_PG_ENV).ok();
    rt.block_on(async {
        let saga = saga(&dir, open(&dir, pg.as_deref()).await);
        loop {
            for r in saga.recover().await.unwrap() {
                r.result.unwrap();
            }
            let mut waiting = false;
            for i in 0..SAGAS {
                match saga.start(&format!("o{i}"), 0).await {
                    Ok(_) => {}
                    Err(palisade_saga::Error::Claimed { .. }) => waiting = true, // a dead process's lease
                    Err(e) => panic!("{e}"),
                }
            }
            if !waiting {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[test]
fn sagas_on_sqlite_survive_sigkill_at_50_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    kill_50_times(None);
}

#[test]
fn sagas_on_postgres_survive_sigkill_at_50_random_moments() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(url) = palisade_test_support::postgres_url(palisade_test_support::test_name!()) else {
        return;
    };
    let schema = palisade_test_support::unique_name("palisade_saga_kill");
    let _drop = palisade_test_support::Cleanup::new(format!("drop schema {schema}"), {
        let (url, schema) = (url.clone(), schema.clone());
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "SET client_min_messages = warning; DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .await
            })
            .map_err(|e| e.to_string())
        }
    });
    kill_50_times(Some(&format!("{url} {schema}")));
}

fn kill_50_times(pg: Option<&str>) {
    let dir = std::env::temp_dir().join(palisade_test_support::unique_name("palisade_saga_kill"));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = palisade_test_support::Cleanup::new(format!("remove {}", dir.display()), {
        let dir = dir.clone();
        move || std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
    });
    let child = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_process", "--test-threads", "1", "--quiet"])
            .env(CHILD_ENV, &dir)
            .envs(pg.map(|pg| (CHILD_PG_ENV, pg)))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut killed_running = 0;
    for _ in 0..50 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut process = child();
        // A random moment in the first 200 ms of the process (crash injection, not a timing rule).
        std::thread::sleep(Duration::from_millis(20 + seed % 180));
        if process.try_wait().unwrap().is_some() {
            break; // it finished every saga: no work left to interrupt
        }
        killed_running += 1;
        process.kill().unwrap(); // SIGKILL
        process.wait().unwrap();
    }
    let status = child().wait().unwrap();
    assert!(status.success(), "the last run finishes: {status}");
    assert_eq!(
        killed_running, 50,
        "every kill landed while the child had work"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let effects: Vec<String> = std::fs::read_to_string(dir.join("effects"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let unique: BTreeSet<_> = effects.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        effects.len(),
        "an effect happened twice: {effects:?}"
    );
    let mut expected = BTreeSet::new();
    rt.block_on(async {
        let saga = saga(&dir, open(&dir, pg).await);
        assert!(saga.unfinished().await.unwrap().is_empty());
        for i in 0..SAGAS {
            let id = format!("o{i}");
            let log = saga.log(&id).await.unwrap();
            assert_eq!(log.iter().filter(|r| r.is_terminal()).count(), 1, "{id}");
            let outcome = saga.start(&id, 0).await.unwrap();
            if i % 3 == 0 {
                assert_eq!(
                    outcome,
                    Outcome::Compensated {
                        state: 1,
                        error: "declined".into()
                    },
                    "{id}"
                );
                expected.insert(format!("{id}/0/action"));
                expected.insert(format!("{id}/0/compensation"));
            } else {
                assert_eq!(outcome, Outcome::Completed { state: 3 }, "{id}");
                expected.insert(format!("{id}/0/action"));
                expected.insert(format!("{id}/1/action"));
            }
        }
    });
    assert_eq!(unique, expected);
}
