//! A PostgreSQL server that crashes mid-append (a server of the test's own,
//! killed with `pg_ctl stop -m immediate` and started again): every append
//! either succeeded, failed having written nothing, or says its outcome is
//! unknown; none fails having written its batch.
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::TryStreamExt;
use palisade_event_store::*;
use palisade_test_support::{OwnPostgres, test_name};
use uuid::Uuid;

/// What one append returned.
#[derive(Debug)]
enum Outcome {
    Written { found: bool },
    Refused(String),
    Unknown,
}

/// What the writers did, and what a subscription following the log through
/// the crashes delivered (id and version, in order).
struct Run {
    outcomes: Vec<(Vec<Uuid>, Outcome)>,
    delivered: Vec<(Uuid, String, u64)>,
}

async fn run(server: &OwnPostgres, resolve_attempts: u32) -> Run {
    let store = Arc::new(
        PostgresEventStore::builder(server.url())
            .schema("crash")
            .pool_size(8)
            .connect_timeout(Duration::from_secs(2))
            .pool_wait_timeout(Duration::from_secs(10))
            .resolve_unknown_outcomes(
                resolve_attempts,
                Backoff::exponential(Duration::from_millis(200)).max(Duration::from_secs(2)),
            )
            .connect()
            .await
            .expect("connect to the test's own server"),
    );
    let appended = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Follows the whole log through every crash: it retries by itself.
    let mut sub = Subscription::builder(
        store.clone(),
        Arc::new(InMemoryCheckpointStore::new()),
        "follower",
    )
    .retry_backoff(Backoff::exponential(Duration::from_millis(50)).max(Duration::from_millis(500)))
    .start()
    .await
    .unwrap();
    let following = tokio::spawn(async move {
        let mut delivered = Vec::new();
        loop {
            let e = sub
                .next()
                .await
                .expect("a subscription retries backend errors");
            delivered.push((e.id, e.stream.as_str().to_owned(), e.version));
            if e.event_type == "Last" {
                return delivered;
            }
        }
    });
    let mut writers = Vec::new();
    for w in 0..8 {
        let (store, appended, stop) = (store.clone(), appended.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let s = StreamName::new(format!("account-{w}")).unwrap();
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let events: Vec<NewEvent> =
                    (0..3).map(|i| NewEvent::new("Moved", vec![i])).collect();
                let ids = events.iter().map(|e| e.id).collect();
                let outcome = match store.append(&s, ExpectedVersion::Any, events).await {
                    Ok(r) => {
                        appended.fetch_add(1, Ordering::SeqCst);
                        // Fresh ids already there: an attempt cut off by the
                        // crash had committed, and sending it again found it.
                        Outcome::Written { found: !r.written }
                    }
                    Err(Error::OutcomeUnknown { .. }) => Outcome::Unknown,
                    Err(e) => {
                        // The server is down: give it a moment instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Outcome::Refused(e.to_string())
                    }
                };
                outcomes.push((ids, outcome));
            }
            outcomes
        }));
    }
    let wait_for = |n: u64| {
        let appended = appended.clone();
        async move {
            // A bound against a hang, not a timing rule: the writers are done in ~2 s here.
            let give_up = std::time::Instant::now() + Duration::from_secs(120);
            while appended.load(Ordering::SeqCst) < n {
                assert!(
                    std::time::Instant::now() < give_up,
                    "the writers stalled below {n}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    for round in 1..=3u64 {
        wait_for(round * 300).await;
        let server_ref: &OwnPostgres = server;
        // The crash blocks (pg_ctl waits); the writers go on meanwhile.
        tokio::task::block_in_place(|| server_ref.crash_and_restart());
    }
    wait_for(1_200).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for w in writers {
        outcomes.extend(w.await.unwrap());
    }
    let last = StreamName::new("end-1").unwrap();
    store
        .append(
            &last,
            ExpectedVersion::NoStream,
            vec![NewEvent::new("Last", vec![])],
        )
        .await
        .unwrap();
    let delivered = tokio::time::timeout(Duration::from_secs(60), following)
        .await
        .expect("the subscription caught up")
        .unwrap();
    Run {
        outcomes,
        delivered,
    }
}

async fn stored_ids(server: &OwnPostgres) -> HashMap<Uuid, usize> {
    let store = PostgresEventStore::builder(server.url())
        .schema("crash")
        .connect()
        .await
        .unwrap();
    let mut count = HashMap::new();
    let events: Vec<RecordedEvent> = store
        .read_all(ReadAll::after(Position::START))
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    for e in events {
        *count.entry(e.id).or_insert(0) += 1;
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_cut_off_by_a_crash_is_resolved_or_says_its_outcome_is_unknown() {
    let Some(server) = OwnPostgres::start(test_name!()) else {
        return;
    };
    let Run {
        outcomes,
        delivered,
    } = run(&server, 5).await;
    let stored = stored_ids(&server).await;
    let (mut written, mut found, mut refused, mut unknown) = (0, 0, 0, 0);
    for (ids, outcome) in &outcomes {
        let present: Vec<usize> = ids
            .iter()
            .map(|id| stored.get(id).copied().unwrap_or(0))
            .collect();
        match outcome {
            Outcome::Written { found: was_there } => {
                written += 1;
                found += usize::from(*was_there);
                assert_eq!(present, [1, 1, 1], "a written batch is there, once");
            }
            Outcome::Refused(why) => {
                refused += 1;
                assert_eq!(
                    present,
                    [0, 0, 0],
                    "a batch that failed with `{why}` was written"
                );
            }
            Outcome::Unknown => {
                unknown += 1;
                assert!(
                    present == [0, 0, 0] || present == [1, 1, 1],
                    "all or nothing: {present:?}"
                );
            }
        }
    }
    let report = format!(
        "{} appends: {written} written ({found} of them committed by an attempt the crash cut off, \
         found when sent again), {refused} refused, {unknown} unknown",
        outcomes.len()
    );
    std::io::Write::write_all(&mut std::io::stderr(), format!("{report}\n").as_bytes()).unwrap();
    assert!(written >= 1_200, "{report}");
    assert_eq!(
        unknown, 0,
        "every unknown outcome was resolved by sending it again: {report}"
    );

    // The subscription went on after each crash from where it was: every
    // stored event once, each stream in version order.
    let mut once = std::collections::HashSet::new();
    assert!(
        delivered.iter().all(|(id, _, _)| once.insert(*id)),
        "an event delivered twice"
    );
    assert_eq!(once.len(), stored.len(), "every stored event delivered");
    let mut last_version: HashMap<&str, u64> = HashMap::new();
    for (_, stream, version) in &delivered {
        let last = last_version.entry(stream.as_str()).or_insert(0);
        assert_eq!(*version, *last + 1, "{stream} in version order");
        *last = *version;
    }
}
