//! The conformance suite on SQLite, plus restarts and crashes.
#![cfg(feature = "sqlite")]

mod conformance;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use palisade_event_store::*;

/// A fresh database file under the system's temporary folder.
fn fresh_path(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "palisade-{test}-{}.db",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Removes the database file and its WAL companions when the test ends.
fn remove_when_done(path: &std::path::Path) -> palisade_test_support::Cleanup {
    let path = path.to_owned();
    palisade_test_support::Cleanup::new(format!("remove {}", path.display()), move || {
        for suffix in ["", "-wal", "-shm"] {
            match std::fs::remove_file(format!("{}{suffix}", path.display())) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    })
}

async fn sqlite(test: &str) -> Option<(conformance::Store, palisade_test_support::Cleanup)> {
    let path = fresh_path(test);
    let cleanup = remove_when_done(&path);
    let store: conformance::Store = Arc::new(SqliteEventStore::open(&path).await.unwrap());
    Some((store, cleanup))
}

conformance_tests!(sqlite);

fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

#[tokio::test]
async fn events_snapshots_and_checkpoints_survive_a_restart() {
    let path = fresh_path("restart");
    let s = name("account-1");
    {
        let store = SqliteEventStore::open(&path).await.unwrap();
        store
            .append(
                &s,
                ExpectedVersion::NoStream,
                vec![NewEvent::json("Opened", &1).unwrap()],
            )
            .await
            .unwrap();
        store
            .append(
                &s,
                ExpectedVersion::Exact(1),
                vec![NewEvent::json("Deposited", &50).unwrap()],
            )
            .await
            .unwrap();
        store
            .save_snapshot(Snapshot {
                stream: s.clone(),
                version: 2,
                schema_version: 1,
                payload: b"50".to_vec(),
            })
            .await
            .unwrap();
        store
            .save(
                "ledger",
                Position {
                    commit: 2,
                    sequence: 2,
                },
            )
            .await
            .unwrap();
    }
    let store = SqliteEventStore::open(&path).await.unwrap();
    let events: Vec<_> = store
        .read_stream(&s, ReadStream::forward())
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["Opened", "Deposited"]
    );
    assert_eq!(
        events[1].position,
        Position {
            commit: 2,
            sequence: 2
        }
    );
    assert_eq!(
        store.load_snapshot(&s).await.unwrap().map(|s| s.version),
        Some(2)
    );
    assert_eq!(
        CheckpointStore::load(&store, "ledger").await.unwrap(),
        Some(Position {
            commit: 2,
            sequence: 2
        })
    );
    let r = store
        .append(
            &s,
            ExpectedVersion::Exact(2),
            vec![NewEvent::json("Withdrawn", &20).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(
        (r.version, r.position),
        (
            3,
            Position {
                commit: 3,
                sequence: 3
            }
        )
    );
    drop(store);
    let _ = std::fs::remove_file(&path);
}

const CRASH_WRITER: &str = "PALISADE_SQLITE_CRASH_WRITER";
const BATCH: u32 = 10;

/// Run as a child process by `a_crash_mid_append_leaves_only_whole_batches`:
/// appends batches of 10 to a few streams until it is killed.
async fn write_until_killed(path: &str) {
    let store = SqliteEventStore::open(path).await.unwrap();
    for round in 0u32.. {
        let s = name(&format!("crash-{}", round % 3));
        let batch = (0..BATCH)
            .map(|i| NewEvent::json("Step", &(round * BATCH + i)).unwrap())
            .collect();
        store.append(&s, ExpectedVersion::Any, batch).await.unwrap();
    }
}

#[tokio::test]
async fn a_crash_mid_append_leaves_only_whole_batches() {
    if let Ok(path) = std::env::var(CRASH_WRITER) {
        return write_until_killed(&path).await;
    }
    let path = fresh_path("crash");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_crash_mid_append_leaves_only_whole_batches",
            "--nocapture",
        ])
        .env(CRASH_WRITER, &path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Let it write for a while, then kill it with SIGKILL, wherever it is.
    let mut seen = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        if let Ok(store) = SqliteEventStore::open(&path).await {
            let all: Vec<_> = store
                .read_all(ReadAll::after(Position::START))
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            seen = all.len();
            if seen >= 300 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen >= 300, "the writer made progress: {seen}");

    let store = SqliteEventStore::open(&path).await.unwrap();
    let all: Vec<_> = store
        .read_all(ReadAll::after(Position::START))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        all.len() % BATCH as usize,
        0,
        "{} events is not whole batches",
        all.len()
    );
    // Every commit holds exactly one batch of consecutive payloads.
    for batch in all.chunks(BATCH as usize) {
        assert!(
            batch
                .iter()
                .all(|e| e.position.commit == batch[0].position.commit)
        );
        let first: u32 = batch[0].decode().unwrap();
        assert_eq!(first % BATCH, 0);
        for (i, e) in batch.iter().enumerate() {
            assert_eq!(e.decode::<u32>().unwrap(), first + i as u32);
        }
    }
    // And each stream's version matches what it holds.
    for k in 0..3 {
        let s = name(&format!("crash-{k}"));
        let events: Vec<_> = store
            .read_stream(&s, ReadStream::forward())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(
            store.stream_state(&s).await.unwrap().version(),
            events.len() as u64
        );
    }
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}
