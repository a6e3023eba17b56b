//! The same sagas on each durable backend: completed, compensated, started
//! twice, crashed and resumed by several runners at once.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Kind, Participant, crash_after, step};
use palisade_saga::{EventStore, ManualClock, Outcome, Record, Saga};

const LEASE: Duration = Duration::from_secs(10);

fn saga(
    store: &Arc<dyn EventStore>,
    clock: &ManualClock,
    p: &Participant,
    owner: &str,
) -> Saga<Vec<usize>> {
    Saga::builder("order", Arc::clone(store))
        .owner(owner.to_owned())
        .clock(clock.shared())
        .lease(LEASE)
        .step(step(p, 0, Kind::Compensatable { compensation: true }, 1))
        .step(step(p, 1, Kind::Pivot, 1))
        .step(step(p, 2, Kind::Retriable, 1))
        .build()
        .unwrap()
}

async fn scenario(store: Arc<dyn EventStore>) {
    let clock = ManualClock::new();
    let p = Participant::new();
    let first = saga(&store, &clock, &p, "first");
    assert_eq!(
        first.start("ok", vec![]).await.unwrap(),
        Outcome::Completed {
            state: vec![0, 1, 2]
        }
    );
    assert_eq!(
        first.start("ok", vec![]).await.unwrap(),
        Outcome::Completed {
            state: vec![0, 1, 2]
        }
    );
    assert_eq!(p.calls_of("ok").len(), 3);

    p.fail(1, false, 1);
    assert_eq!(
        first.start("declined", vec![]).await.unwrap(),
        Outcome::Compensated {
            state: vec![0],
            error: "s1 action failed".into()
        }
    );
    assert_eq!(
        p.calls_of("declined"),
        [(0, false, 1), (1, false, 1), (0, true, 1)]
    );

    // Crash 20 sagas at different moments (the store's own awaits included), then
    // two runners recover them at once.
    let mut crashed = Vec::new();
    for i in 0..20 {
        let id = format!("c{i}");
        if crash_after(i, first.start(&id, vec![])).await.is_none() {
            crashed.push(id);
        }
    }
    clock.advance(LEASE);
    let (a, b) = (saga(&store, &clock, &p, "a"), saga(&store, &clock, &p, "b"));
    let (ra, rb) = tokio::join!(a.recover(), b.recover());
    let mut resumed: Vec<_> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
    resumed.sort_by(|x, y| x.id.cmp(&y.id));
    for r in &resumed {
        assert_eq!(
            r.result.as_ref().unwrap(),
            &Outcome::Completed {
                state: vec![0, 1, 2]
            },
            "{}",
            r.id
        );
    }
    let mut ids: Vec<_> = resumed.iter().map(|r| r.id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), resumed.len(), "each saga resumed by one runner");
    // The rest never wrote a record: their callers start them again.
    for id in &crashed {
        assert_eq!(
            a.start(id, vec![]).await.unwrap(),
            Outcome::Completed {
                state: vec![0, 1, 2]
            }
        );
        let log = a.log(id).await.unwrap();
        assert_eq!(log.iter().filter(|r| r.is_terminal()).count(), 1);
        assert!(matches!(log.last(), Some(Record::SagaCompleted { .. })));
        let effects = p
            .applied()
            .keys()
            .filter(|k| k.starts_with(&format!("{id}/")))
            .count();
        assert_eq!(effects, 3, "{id}");
    }
    assert!(a.unfinished().await.unwrap().is_empty());
    assert_eq!(p.max_in_flight(), 1);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_on_sqlite() {
    let dir = std::env::temp_dir().join(palisade_test_support::unique_name("palisade_saga"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("saga.db");
    let _cleanup = palisade_test_support::Cleanup::new(format!("remove {}", dir.display()), {
        let dir = dir.clone();
        move || std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
    });
    let store = palisade_saga::SqliteEventStore::open(&path).await.unwrap();
    scenario(Arc::new(store)).await;
    // The log survives the process: a new store on the same file reads it.
    let reopened: Arc<dyn EventStore> =
        Arc::new(palisade_saga::SqliteEventStore::open(&path).await.unwrap());
    let p = Participant::new();
    let log = saga(&reopened, &ManualClock::new(), &p, "reader")
        .log("declined")
        .await
        .unwrap();
    assert!(matches!(log.last(), Some(Record::SagaCompensated { .. })));
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_on_postgres() {
    let Some(url) = palisade_test_support::postgres_url(palisade_test_support::test_name!()) else {
        return;
    };
    let schema = palisade_test_support::unique_name("palisade_saga");
    let _cleanup = drop_schema_on_drop(url.clone(), schema.clone());
    let store = palisade_saga::PostgresEventStore::builder(&url)
        .schema(&schema)
        .pool_size(4)
        .connect()
        .await
        .unwrap();
    scenario(Arc::new(store)).await;
}

/// A guard that drops `schema` (if it was made) on `url` when dropped.
#[cfg(feature = "postgres")]
pub fn drop_schema_on_drop(url: String, schema: String) -> palisade_test_support::Cleanup {
    palisade_test_support::Cleanup::new(format!("drop schema {schema}"), move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime
            .block_on(async {
                let (client, connection) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '10s'; SET client_min_messages = warning; \
                         DROP SCHEMA IF EXISTS {schema} CASCADE"
                    ))
                    .await
            })
            .map_err(|e| e.to_string())
    })
}
