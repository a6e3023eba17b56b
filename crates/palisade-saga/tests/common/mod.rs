//! A participant that records every invocation, fails on a script, and
//! deduplicates its effects by the idempotency key; a store that yields around
//! every append, so a dropped future can stop a run on either side of a write.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use palisade_event_store::{
    AppendResult, EventStore, EventStream, ExpectedVersion, NewEvent, Position, ReadAll,
    ReadStream, Result, Snapshot, StreamName, StreamState,
};
use palisade_saga::{Backoff, Retry, Step, StepContext};
use parking_lot::Mutex;

/// One invocation of an action or a compensation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub saga: String,
    pub step: usize,
    pub compensation: bool,
    pub attempt: u32,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// Failures left, by (step, compensation).
    failures: BTreeMap<(usize, bool), u32>,
    /// Steps whose action never returns.
    hang: BTreeSet<usize>,
    /// Effects applied, by idempotency key.
    applied: BTreeMap<String, u32>,
    in_flight: BTreeMap<String, u32>,
    max_in_flight: u32,
}

/// The other services a saga calls.
#[derive(Clone, Default)]
pub struct Participant {
    state: Arc<Mutex<State>>,
}

impl Participant {
    pub fn new() -> Self {
        Self::default()
    }

    /// The action (or compensation) of `step` fails its next `times` invocations.
    pub fn fail(&self, step: usize, compensation: bool, times: u32) {
        self.state
            .lock()
            .failures
            .insert((step, compensation), times);
    }

    /// The action of `step` never returns.
    pub fn hang(&self, step: usize) {
        self.state.lock().hang.insert(step);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().calls.clone()
    }

    pub fn calls_of(&self, saga: &str) -> Vec<(usize, bool, u32)> {
        self.calls()
            .into_iter()
            .filter(|c| c.saga == saga)
            .map(|c| (c.step, c.compensation, c.attempt))
            .collect()
    }

    /// How many times each key's effect was applied (never more than once: deduplicated).
    pub fn applied(&self) -> BTreeMap<String, u32> {
        self.state.lock().applied.clone()
    }

    /// The most invocations of one saga that were running at once.
    pub fn max_in_flight(&self) -> u32 {
        self.state.lock().max_in_flight
    }

    pub async fn invoke(&self, ctx: &StepContext) -> std::io::Result<()> {
        {
            let mut s = self.state.lock();
            s.calls.push(Call {
                saga: ctx.saga_id().to_owned(),
                step: ctx.index(),
                compensation: ctx.is_compensation(),
                attempt: ctx.attempt(),
            });
            let n = s.in_flight.entry(ctx.saga_id().to_owned()).or_insert(0);
            *n += 1;
            let n = *n;
            s.max_in_flight = s.max_in_flight.max(n);
        }
        let _leave = Leave(self.clone(), ctx.saga_id().to_owned());
        tokio::task::yield_now().await;
        if !ctx.is_compensation() && self.state.lock().hang.contains(&ctx.index()) {
            std::future::pending::<()>().await;
        }
        let fail = {
            let mut s = self.state.lock();
            match s.failures.get_mut(&(ctx.index(), ctx.is_compensation())) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            }
        };
        if fail {
            return Err(std::io::Error::other(format!(
                "{} {} failed",
                ctx.step(),
                if ctx.is_compensation() {
                    "compensation"
                } else {
                    "action"
                }
            )));
        }
        // The deduplicated effect: applied once per key however often it is asked.
        self.state.lock().applied.entry(ctx.key()).or_insert(1);
        tokio::task::yield_now().await;
        Ok(())
    }
}

struct Leave(Participant, String);

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(n) = self.0.state.lock().in_flight.get_mut(&self.1) {
            *n -= 1;
        }
    }
}

/// The kinds of step a generated definition has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Compensatable { compensation: bool },
    Pivot,
    Retriable,
}

/// A step over the state `Vec<usize>` (the steps completed so far) that calls `participant`.
pub fn step(
    participant: &Participant,
    index: usize,
    kind: Kind,
    attempts: u32,
) -> Step<Vec<usize>> {
    let p = participant.clone();
    let mut step = Step::new(
        format!("s{index}"),
        move |mut s: Vec<usize>, ctx: StepContext| {
            let p = p.clone();
            async move {
                p.invoke(&ctx).await?;
                s.push(ctx.index());
                Ok::<_, std::io::Error>(s)
            }
        },
    );
    if attempts > 1 {
        step = step.retry(
            Retry::builder()
                .max_attempts(attempts)
                .backoff(Backoff::fixed(Duration::from_millis(1)))
                .no_budget()
                .build()
                .unwrap(),
        );
    }
    match kind {
        Kind::Compensatable { compensation: true } => {
            let p = participant.clone();
            step.compensate(move |_s: Vec<usize>, ctx: StepContext| {
                let p = p.clone();
                async move { p.invoke(&ctx).await }
            })
        }
        Kind::Compensatable {
            compensation: false,
        } => step,
        Kind::Pivot => step.pivot(),
        Kind::Retriable => step.retriable(),
    }
}

/// A store that yields before and after each append, so a run can be
/// dropped with an append not yet sent, or written but not yet acknowledged.
pub struct Yielding<S>(pub S);

#[async_trait]
impl<S: EventStore> EventStore for Yielding<S> {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        tokio::task::yield_now().await;
        let r = self.0.append(stream, expected, events).await;
        tokio::task::yield_now().await;
        r
    }
    async fn read_stream(&self, stream: &StreamName, options: ReadStream) -> Result<EventStream> {
        self.0.read_stream(stream, options).await
    }
    async fn read_all(&self, options: ReadAll) -> Result<EventStream> {
        self.0.read_all(options).await
    }
    async fn stream_state(&self, stream: &StreamName) -> Result<StreamState> {
        self.0.stream_state(stream).await
    }
    async fn delete_stream(&self, stream: &StreamName, expected: ExpectedVersion) -> Result<()> {
        self.0.delete_stream(stream, expected).await
    }
    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        self.0.save_snapshot(snapshot).await
    }
    async fn load_snapshot(&self, stream: &StreamName) -> Result<Option<Snapshot>> {
        self.0.load_snapshot(stream).await
    }
    fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.changes()
    }
    async fn head(&self) -> Result<Position> {
        self.0.head().await
    }
    fn system_name(&self) -> &'static str {
        self.0.system_name()
    }
}

/// Polls `fut` at most `polls` times; `None` if it had not finished (it is dropped: a crash).
pub async fn crash_after<F: std::future::Future>(polls: usize, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = polls;
    std::future::poll_fn(move |cx| {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        left -= 1;
        // Polled again at once, so a run stuck on a clock nobody advances still crashes.
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}
