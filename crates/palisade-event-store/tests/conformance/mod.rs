//! The contract of `EventStore`, written once and run against every backend.
//!
//! A backend's test file calls `conformance_tests!(factory)`, where
//! `factory(test)` is an async fn returning an `Option` of a [`Store`] or of a
//! `(Store, Cleanup)` (see [`Fixture`]); `None`: the backend's server cannot
//! be reached, and the factory has said that `test` was skipped.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use palisade_event_store::*;
use uuid::Uuid;

pub(crate) type Store = Arc<dyn EventStore>;

/// What a conformance test runs on: the store, and what removes the data it
/// made on a shared server (a schema) when the test ends, passed or failed.
pub(crate) struct Fixture {
    pub(crate) store: Store,
    /// Dropped after `store`, so the store's connections close first.
    pub(crate) cleanup: Option<palisade_test_support::Cleanup>,
}

impl From<Store> for Fixture {
    fn from(store: Store) -> Self {
        Self {
            store,
            cleanup: None,
        }
    }
}

impl From<(Store, palisade_test_support::Cleanup)> for Fixture {
    fn from((store, cleanup): (Store, palisade_test_support::Cleanup)) -> Self {
        Self {
            store,
            cleanup: Some(cleanup),
        }
    }
}

pub(crate) fn name(s: &str) -> StreamName {
    StreamName::new(s).unwrap()
}

pub(crate) fn ev(kind: &str, n: u32) -> NewEvent {
    NewEvent::json(kind, &n).unwrap()
}

pub(crate) async fn read(
    store: &Store,
    stream: &StreamName,
    opts: ReadStream,
) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

pub(crate) async fn all(store: &Store, opts: ReadAll) -> Vec<RecordedEvent> {
    store
        .read_all(opts)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

fn numbers(events: &[RecordedEvent]) -> Vec<u32> {
    events.iter().map(|e| e.decode::<u32>().unwrap()).collect()
}

/// Generates one `#[tokio::test]` per conformance test for a backend factory.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@each $factory,
            append_then_read_forward_and_backward,
            expected_version_rules,
            a_failed_batch_writes_nothing,
            retrying_an_append_is_idempotent,
            read_all_in_global_order_with_filters,
            reading_after_the_end_finds_nothing,
            deleted_streams_say_so_and_can_be_recreated,
            snapshots_keep_the_latest,
            limits_are_clear_errors,
            numbers_no_backend_stores_exactly_are_refused,
            metadata_round_trips,
            subscription_catches_up_then_goes_live_and_resumes,
            concurrent_writers_on_one_stream_never_share_a_version,
            a_subscriber_sees_every_event_of_many_writers_once_in_order,
            many_writers_on_one_stream_keep_its_order_in_the_global_log,
            upcasters_apply_on_read,
        );
    };
    (@each $factory:path, $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let test = concat!(module_path!(), "::", stringify!($test));
                // None: skipped, and the factory has said so where it shows.
                if let Some(made) = $factory(test).await {
                    let fixture = $crate::conformance::Fixture::from(made);
                    $crate::conformance::$test(fixture.store.clone()).await;
                }
            }
        )*
    };
}

pub(crate) async fn append_then_read_forward_and_backward(store: Store) {
    assert_eq!(store.head().await.unwrap(), Position::START);
    let s = name("order-1");
    let r = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            (1..=5).map(|n| ev("E", n)).collect(),
        )
        .await
        .unwrap();
    assert_eq!((r.version, r.written), (5, true));
    let events = read(&store, &s, ReadStream::forward()).await;
    assert_eq!(numbers(&events), [1, 2, 3, 4, 5]);
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(events[4].position, r.position);
    assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(
        numbers(&read(&store, &s, ReadStream::forward().from(2).limit(2)).await),
        [2, 3]
    );
    assert_eq!(
        numbers(&read(&store, &s, ReadStream::backward()).await),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        numbers(&read(&store, &s, ReadStream::backward().from(3).limit(2)).await),
        [3, 2]
    );
    assert!(
        read(&store, &name("order-none"), ReadStream::forward())
            .await
            .is_empty()
    );
    assert_eq!(
        store.stream_state(&s).await.unwrap(),
        StreamState::Active { version: 5 }
    );
    assert_eq!(
        store.stream_state(&name("order-none")).await.unwrap(),
        StreamState::NoStream
    );
}

pub(crate) async fn expected_version_rules(store: Store) {
    let s = name("acct-1");
    let conflict = |r: Result<AppendResult>, actual: StreamState| match r {
        Err(Error::Conflict { actual: a, .. }) => assert_eq!(a, actual),
        other => panic!("expected a conflict, got {other:?}"),
    };
    conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, vec![ev("E", 0)])
            .await,
        StreamState::NoStream,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), vec![ev("E", 0)])
            .await,
        StreamState::NoStream,
    );
    store
        .append(&s, ExpectedVersion::Exact(0), vec![ev("E", 1)])
        .await
        .unwrap();
    let active = StreamState::Active { version: 1 };
    conflict(
        store
            .append(&s, ExpectedVersion::NoStream, vec![ev("E", 0)])
            .await,
        active,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), vec![ev("E", 0)])
            .await,
        active,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(2), vec![ev("E", 0)])
            .await,
        active,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Recreate, vec![ev("E", 0)])
            .await,
        active,
    );
    store
        .append(&s, ExpectedVersion::StreamExists, vec![ev("E", 2)])
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Exact(2), vec![ev("E", 3), ev("E", 4)])
        .await
        .unwrap();
    let r = store
        .append(&s, ExpectedVersion::Any, vec![ev("E", 5)])
        .await
        .unwrap();
    assert_eq!(r.version, 5);
    assert_eq!(
        numbers(&read(&store, &s, ReadStream::forward()).await),
        [1, 2, 3, 4, 5]
    );
}

pub(crate) async fn a_failed_batch_writes_nothing(store: Store) {
    let s = name("batch-1");
    store
        .append(&s, ExpectedVersion::NoStream, vec![ev("E", 1)])
        .await
        .unwrap();
    let before = all(&store, ReadAll::after(Position::START)).await.len();
    // a conflict
    assert!(
        store
            .append(&s, ExpectedVersion::Exact(0), vec![ev("E", 2), ev("E", 3)])
            .await
            .is_err()
    );
    // an oversized event in the middle of a batch
    let big = NewEvent::new("Big", vec![b'x'; 2 * 1024 * 1024]);
    let err = store
        .append(
            &s,
            ExpectedVersion::Exact(1),
            vec![ev("E", 2), big, ev("E", 4)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::EventTooLarge { .. }), "{err}");
    // an id that is used twice within the batch
    let dup = ev("E", 5);
    let err = store
        .append(&s, ExpectedVersion::Exact(1), vec![dup.clone(), dup])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err}");
    assert_eq!(
        all(&store, ReadAll::after(Position::START)).await.len(),
        before
    );
    assert_eq!(
        store.stream_state(&s).await.unwrap(),
        StreamState::Active { version: 1 }
    );
}

pub(crate) async fn retrying_an_append_is_idempotent(store: Store) {
    let s = name("pay-1");
    let batch = vec![ev("Paid", 1), ev("Receipted", 2)];
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .unwrap();
    assert!(first.written && !again.written);
    assert_eq!(
        (again.version, again.position),
        (first.version, first.position)
    );
    let again_any = store
        .append(&s, ExpectedVersion::Any, batch.clone())
        .await
        .unwrap();
    assert!(!again_any.written);
    assert_eq!(read(&store, &s, ReadStream::forward()).await.len(), 2);

    // the same id with other content
    let mut changed = batch[0].clone();
    changed.payload = b"99".to_vec();
    let err = store
        .append(&s, ExpectedVersion::Any, vec![changed])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::DuplicateEventId { id } if id == batch[0].id),
        "{err}"
    );
    // the same id in another stream
    let err = store
        .append(&name("pay-2"), ExpectedVersion::Any, vec![batch[1].clone()])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err}");
    // the same ids at another place in the stream
    let err = store
        .append(&s, ExpectedVersion::Exact(2), batch.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err}");
    // part of the batch stored, part new
    let err = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![batch[0].clone(), ev("New", 3)],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateEventId { .. }), "{err}");
    assert_eq!(read(&store, &s, ReadStream::forward()).await.len(), 2);
    assert!(
        read(&store, &name("pay-2"), ReadStream::forward())
            .await
            .is_empty()
    );
}

pub(crate) async fn read_all_in_global_order_with_filters(store: Store) {
    let (a, b, c) = (name("user-1"), name("user-2"), name("invoice-1"));
    store
        .append(&a, ExpectedVersion::Any, vec![ev("Registered", 1)])
        .await
        .unwrap();
    store
        .append(
            &c,
            ExpectedVersion::Any,
            vec![ev("Issued", 2), ev("Paid", 3)],
        )
        .await
        .unwrap();
    store
        .append(&b, ExpectedVersion::Any, vec![ev("Registered", 4)])
        .await
        .unwrap();
    store
        .append(&a, ExpectedVersion::Any, vec![ev("Renamed", 5)])
        .await
        .unwrap();

    let every = all(&store, ReadAll::after(Position::START)).await;
    assert_eq!(numbers(&every), [1, 2, 3, 4, 5]);
    assert_eq!(store.head().await.unwrap(), every[4].position);
    assert!(every.windows(2).all(|w| w[0].position < w[1].position));
    let after = all(&store, ReadAll::after(every[1].position)).await;
    assert_eq!(numbers(&after), [3, 4, 5]);
    assert_eq!(
        numbers(&all(&store, ReadAll::after(Position::START).limit(2)).await),
        [1, 2]
    );
    let users = all(
        &store,
        ReadAll::after(Position::START).filter(Filter::category("user")),
    )
    .await;
    assert_eq!(numbers(&users), [1, 4, 5]);
    let registered = all(
        &store,
        ReadAll::after(Position::START).filter(Filter::all().event_types(["Registered", "Paid"])),
    )
    .await;
    assert_eq!(numbers(&registered), [1, 3, 4]);
    let one = all(
        &store,
        ReadAll::after(Position::START).filter(Filter::stream(&a)),
    )
    .await;
    assert_eq!(numbers(&one), [1, 5]);
    let prefix = all(
        &store,
        ReadAll::after(every[0].position)
            .filter(Filter::stream_prefix("user-"))
            .limit(1),
    )
    .await;
    assert_eq!(numbers(&prefix), [4]);
}

/// A position past the newest event, however it is made, has nothing after
/// it; one before the first has everything: the same on every backend.
pub(crate) async fn reading_after_the_end_finds_nothing(store: Store) {
    let s = name("order-1");
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![ev("Placed", 1), ev("Paid", 2)],
        )
        .await
        .unwrap();
    store
        .append(&s, ExpectedVersion::Any, vec![ev("Shipped", 3)])
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    for past in [
        Position {
            commit: u64::MAX,
            sequence: u64::MAX,
        },
        Position {
            commit: head.commit + 1,
            sequence: 0,
        },
        Position {
            commit: head.commit,
            sequence: u64::MAX,
        },
        head,
    ] {
        let found = all(&store, ReadAll::after(past)).await;
        assert!(found.is_empty(), "after {past}: {:?}", numbers(&found));
    }
    let every = all(&store, ReadAll::after(Position::START)).await;
    assert_eq!(numbers(&every), [1, 2, 3]);
    let before_the_last_commit = Position {
        commit: every[2].position.commit,
        sequence: 0,
    };
    assert_eq!(
        numbers(&all(&store, ReadAll::after(before_the_last_commit)).await),
        [3],
        "a made-up position inside the log counts by (commit, sequence)"
    );
}

pub(crate) async fn deleted_streams_say_so_and_can_be_recreated(store: Store) {
    let s = name("session-1");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![ev("Opened", 1), ev("Touched", 2)],
        )
        .await
        .unwrap();
    assert!(
        store
            .delete_stream(&s, ExpectedVersion::Exact(1))
            .await
            .unwrap_err()
            .is_conflict()
    );
    store
        .delete_stream(&s, ExpectedVersion::Exact(2))
        .await
        .unwrap();
    assert_eq!(
        store.stream_state(&s).await.unwrap(),
        StreamState::Deleted { version: 2 }
    );
    assert!(matches!(
        store.read_stream(&s, ReadStream::forward()).await,
        Err(Error::StreamDeleted { .. })
    ));
    for expected in [
        ExpectedVersion::Any,
        ExpectedVersion::Exact(2),
        ExpectedVersion::NoStream,
    ] {
        let err = store
            .append(&s, expected, vec![ev("Touched", 3)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::StreamDeleted { .. }),
            "{expected:?}: {err}"
        );
    }
    let r = store
        .append(&s, ExpectedVersion::Recreate, vec![ev("Opened", 3)])
        .await
        .unwrap();
    assert_eq!(r.version, 3, "versions go on");
    assert_eq!(
        store.stream_state(&s).await.unwrap(),
        StreamState::Active { version: 3 }
    );
    let events = read(&store, &s, ReadStream::forward()).await;
    assert_eq!(numbers(&events), [3], "only the new life is read");
    // the global log keeps everything
    let global = all(
        &store,
        ReadAll::after(Position::START).filter(Filter::stream(&s)),
    )
    .await;
    assert_eq!(numbers(&global), [1, 2, 3]);
}

pub(crate) async fn snapshots_keep_the_latest(store: Store) {
    let s = name("cart-9");
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    let snap = |version, payload: &[u8]| Snapshot {
        stream: s.clone(),
        version,
        schema_version: 2,
        payload: payload.to_vec(),
    };
    store.save_snapshot(snap(10, b"ten")).await.unwrap();
    store.save_snapshot(snap(20, b"twenty")).await.unwrap();
    assert_eq!(
        store.load_snapshot(&s).await.unwrap(),
        Some(snap(20, b"twenty"))
    );
    assert_eq!(store.load_snapshot(&name("cart-10")).await.unwrap(), None);
}

pub(crate) async fn limits_are_clear_errors(store: Store) {
    let s = name("limits-1");
    assert!(matches!(
        store.append(&s, ExpectedVersion::Any, vec![]).await,
        Err(Error::EmptyBatch)
    ));
    let err = store
        .append(&s, ExpectedVersion::Any, vec![NewEvent::new("", vec![])])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEventType { .. }), "{err}");
    let err = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("T".repeat(256), vec![])],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidEventType { .. }), "{err}");
    let big = NewEvent::new("Big", vec![0; 1024 * 1024 + 1]);
    let err = store
        .append(&s, ExpectedVersion::Any, vec![big])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::EventTooLarge { size, max, .. } if size > max && max == 1024 * 1024),
        "{err}"
    );
    for bad in ["", "has space", "ünï", &"x".repeat(256)] {
        assert!(
            matches!(StreamName::new(bad), Err(Error::InvalidStreamName { .. })),
            "{bad:?}"
        );
    }
    assert_eq!(store.stream_state(&s).await.unwrap(), StreamState::NoStream);
}

/// A schema version or a snapshot version that some backend would narrow is
/// refused on every backend, and nothing is written; the largest allowed
/// reads back exactly, so an identical retry is recognised.
pub(crate) async fn numbers_no_backend_stores_exactly_are_refused(store: Store) {
    let s = name("order-1");
    let too_new = ev("Placed", 1).with_schema_version(MAX_SCHEMA_VERSION + 1);
    let err = store
        .append(&s, ExpectedVersion::NoStream, vec![too_new])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSchemaVersion { schema_version, .. } if schema_version == MAX_SCHEMA_VERSION + 1),
        "{err}"
    );
    assert_eq!(store.stream_state(&s).await.unwrap(), StreamState::NoStream);

    let newest = ev("Placed", 1).with_schema_version(MAX_SCHEMA_VERSION);
    let first = store
        .append(&s, ExpectedVersion::NoStream, vec![newest.clone()])
        .await
        .unwrap();
    let again = store
        .append(&s, ExpectedVersion::NoStream, vec![newest])
        .await
        .unwrap();
    assert!(first.written && !again.written, "the retry is recognised");
    let read = read(&store, &s, ReadStream::forward()).await;
    assert_eq!(read[0].schema_version, MAX_SCHEMA_VERSION);

    for (version, schema_version) in [
        (MAX_SNAPSHOT_VERSION + 1, 1),
        (u64::MAX, 1),
        (1, MAX_SCHEMA_VERSION + 1),
    ] {
        let err = store
            .save_snapshot(Snapshot {
                stream: s.clone(),
                version,
                schema_version,
                payload: vec![1],
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidSnapshot { .. }), "{err}");
    }
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    assert!(
        matches!(
            Upcasters::new().register("Placed", MAX_SCHEMA_VERSION, Ok),
            Err(e) if e.field() == "register"
        ),
        "no version comes after the largest"
    );
}

pub(crate) async fn metadata_round_trips(store: Store) {
    let s = name("meta-1");
    let mut meta = Metadata {
        correlation_id: Some("corr-1".into()),
        causation_id: Some("cause-1".into()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        ..Metadata::default()
    };
    meta.fields.insert("tenant".into(), "acme".into());
    let id = Uuid::new_v4();
    let event = NewEvent::new("Tagged", vec![0, 159, 146, 150])
        .with_id(id)
        .with_schema_version(3)
        .with_metadata(meta.clone());
    let before = std::time::SystemTime::now() - Duration::from_secs(60);
    store
        .append(&s, ExpectedVersion::Any, vec![event])
        .await
        .unwrap();
    let got = read(&store, &s, ReadStream::forward()).await.remove(0);
    assert_eq!(got.id, id);
    assert_eq!(got.stream, s);
    assert_eq!(got.event_type, "Tagged");
    assert_eq!(got.schema_version, 3);
    assert_eq!(
        got.payload,
        [0, 159, 146, 150],
        "payloads are bytes, not text"
    );
    assert_eq!(got.metadata, meta);
    assert!(got.recorded_at > before);
}

pub(crate) async fn subscription_catches_up_then_goes_live_and_resumes(store: Store) {
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let (o1, o2, u) = (name("order-1"), name("order-2"), name("user-1"));
    store
        .append(&o1, ExpectedVersion::Any, vec![ev("Placed", 1)])
        .await
        .unwrap();
    store
        .append(&u, ExpectedVersion::Any, vec![ev("Registered", 100)])
        .await
        .unwrap();
    store
        .append(&o2, ExpectedVersion::Any, vec![ev("Placed", 2)])
        .await
        .unwrap();

    let mut sub = Subscription::start(
        store.clone(),
        checkpoints.clone(),
        "mailer",
        Filter::category("order"),
    )
    .await
    .unwrap();
    assert_eq!(sub.next().await.unwrap().decode::<u32>().unwrap(), 1);
    sub.checkpoint().await.unwrap();
    assert_eq!(sub.next().await.unwrap().decode::<u32>().unwrap(), 2);

    // live: the next event arrives after the subscriber started waiting
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(&o1, ExpectedVersion::Any, vec![ev("Shipped", 3)])
                .await
                .unwrap();
        })
    };
    let live = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("live event")
        .unwrap();
    assert_eq!(live.decode::<u32>().unwrap(), 3);
    writer.await.unwrap();

    // a restart resumes after the checkpoint: event 2 comes again (at least once)
    drop(sub);
    let mut again = Subscription::start(
        store.clone(),
        checkpoints,
        "mailer",
        Filter::category("order"),
    )
    .await
    .unwrap();
    let e = again.next().await.unwrap();
    assert_eq!(e.decode::<u32>().unwrap(), 2);
    assert_eq!(again.position(), e.position);
}

pub(crate) async fn concurrent_writers_on_one_stream_never_share_a_version(store: Store) {
    let s = name("counter-1");
    let writers = 8;
    let rounds = 10u64;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut wins = 0u32;
            let mut version = 0u64;
            while version < rounds * 2 {
                match store
                    .append(&s, ExpectedVersion::Exact(version), vec![ev("Tick", w)])
                    .await
                {
                    Ok(r) => {
                        wins += 1;
                        version = r.version;
                    }
                    Err(Error::Conflict { actual, .. }) => version = actual.version(),
                    Err(e) => panic!("{e}"),
                }
                if version >= rounds * 2 {
                    break;
                }
            }
            wins
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap();
    }
    let events = read(&store, &s, ReadStream::forward()).await;
    assert_eq!(
        u64::from(wins),
        events.len() as u64,
        "every win is one event"
    );
    assert!(events.len() as u64 >= rounds * 2);
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(
        versions,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
}

pub(crate) async fn a_subscriber_sees_every_event_of_many_writers_once_in_order(store: Store) {
    let writers = 8u32;
    let per_writer = 25u32;
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let mut sub = Subscription::start(
        store.clone(),
        checkpoints,
        "audit",
        Filter::category("load"),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = name(&format!("load-{w}"));
            for i in 0..per_writer {
                let batch = vec![
                    ev("Step", w * 1000 + i * 2),
                    ev("Step", w * 1000 + i * 2 + 1),
                ];
                store.append(&s, ExpectedVersion::Any, batch).await.unwrap();
            }
        }));
    }
    let total = (writers * per_writer * 2) as usize;
    let mut seen = Vec::with_capacity(total);
    let deadline = Duration::from_secs(60);
    while seen.len() < total {
        let e = tokio::time::timeout(deadline, sub.next())
            .await
            .expect("all events arrive")
            .unwrap();
        seen.push(e);
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(
        seen.windows(2).all(|w| w[0].position < w[1].position),
        "strictly in global order"
    );
    let ids: HashSet<_> = seen.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), total, "each exactly once");
    // per stream, the versions arrive in order
    for w in 0..writers {
        let s = name(&format!("load-{w}"));
        let versions: Vec<u64> = seen
            .iter()
            .filter(|e| e.stream == s)
            .map(|e| e.version)
            .collect();
        assert_eq!(
            versions,
            (1..=u64::from(per_writer * 2)).collect::<Vec<_>>()
        );
    }
    // and they match what read_all says now
    let stored = all(
        &store,
        ReadAll::after(Position::START).filter(Filter::category("load")),
    )
    .await;
    assert_eq!(
        stored.iter().map(|e| e.id).collect::<Vec<_>>(),
        seen.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

/// Sixteen writers appending to one stream with `ExpectedVersion::Any`: the
/// global log, and a subscription following it, hold the stream's events in
/// version order (a projection never sees version N+k before N), and every
/// event exactly once.
pub(crate) async fn many_writers_on_one_stream_keep_its_order_in_the_global_log(store: Store) {
    let (writers, rounds) = (16u32, 12u32);
    let s = name("account-1");
    let checkpoints: Arc<dyn CheckpointStore> = Arc::new(InMemoryCheckpointStore::new());
    let mut sub = Subscription::start(store.clone(), checkpoints, "ledger", Filter::stream(&s))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            for r in 0..rounds {
                let n = (w * rounds + r) * 2;
                store
                    .append(
                        &s,
                        ExpectedVersion::Any,
                        vec![ev("Moved", n), ev("Moved", n + 1)],
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let total = u64::from(writers * rounds * 2);
    let mut seen = Vec::new();
    while (seen.len() as u64) < total {
        seen.push(sub.next().await.unwrap().version);
    }
    for t in tasks {
        t.await.unwrap();
    }
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        seen, expected,
        "the subscription saw the stream in version order"
    );
    let logged: Vec<u64> = all(&store, ReadAll::after(Position::START))
        .await
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(
        logged, expected,
        "the global log holds the stream in version order"
    );
}

pub(crate) async fn upcasters_apply_on_read(store: Store) {
    let s = name("legacy-1");
    store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![
                ev("Renamed", 5),
                ev("Renamed", 6).with_schema_version(2),
                ev("Other", 7),
            ],
        )
        .await
        .unwrap();
    let upcasters = Upcasters::new()
        .register("Renamed", 1, |mut e: RecordedEvent| {
            let n: u32 = serde_json::from_slice(&e.payload).map_err(|e| e.to_string())?;
            e.payload = serde_json::to_vec(&(n * 10)).map_err(|e| e.to_string())?;
            Ok(e)
        })
        .unwrap()
        .register("Renamed", 2, |mut e: RecordedEvent| {
            let n: u32 = serde_json::from_slice(&e.payload).map_err(|e| e.to_string())?;
            e.payload = serde_json::to_vec(&(n + 1)).map_err(|e| e.to_string())?;
            Ok(e)
        })
        .unwrap();
    let upcasting: Store = Arc::new(Upcasting::new(store.clone(), upcasters));
    let events = read(&upcasting, &s, ReadStream::forward()).await;
    assert_eq!(numbers(&events), [51, 7, 7]);
    assert_eq!(
        events.iter().map(|e| e.schema_version).collect::<Vec<_>>(),
        [3, 3, 1]
    );
    let global = all(
        &upcasting,
        ReadAll::after(Position::START).filter(Filter::stream(&s)),
    )
    .await;
    assert_eq!(numbers(&global), [51, 7, 7]);

    // a schema with no step is a clear error, not a silent pass-through
    let gap = Upcasters::new().register("Renamed", 2, Ok).unwrap();
    let broken: Store = Arc::new(Upcasting::new(store.clone(), gap));
    let err = broken
        .read_stream(&s, ReadStream::forward())
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownSchema { ref event_type, schema_version: 1, latest: 3 } if event_type == "Renamed"),
        "{err}"
    );
}
