//! Client-side adaptive throttling, from Google's *Site Reliability
//! Engineering* (chapter 21, "Handling Overload"): a client that sees its
//! backend refuse requests starts refusing some itself, before they leave,
//! so an overloaded backend does not spend its capacity on saying no.
//!
//! Over a sliding window (two minutes by default) the throttle counts
//! `requests`, every request the caller asked to send (those it refused
//! itself included), and `accepts`, those the backend accepted. Each new
//! request is refused locally with probability
//!
//! ```text
//! max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! While the backend accepts everything, `requests = accepts` and nothing is
//! refused. When it can take only C requests a second of an offered R, the
//! client settles where `requests = K × accepts`: it sends about `K × C` a
//! second and refuses the rest itself, so the backend sees K times what it
//! can serve instead of all of R. K = 2 (the book's choice) spends half the
//! backend's rejections on staying informed; K nearer 1 throttles harder.
//!
//! ```
//! use palisade_bulkhead::throttle::AdaptiveThrottle;
//! use palisade_bulkhead::ManualClock;
//!
//! let clock = ManualClock::new();
//! let throttle = AdaptiveThrottle::builder().k(2.0).clock(clock.shared()).seed(7).build()?;
//! // Ten requests asked for; the backend accepted the first three, refused the rest.
//! for i in 0..10 {
//!     // Refused locally or not, each counts as a request.
//!     if let Ok(permit) = throttle.try_acquire() {
//!         if i < 3 {
//!             permit.accepted();
//!         }
//!     }
//! }
//! assert_eq!((throttle.counts().requests, throttle.counts().accepts), (10, 3));
//! let p = throttle.probability();
//! assert!((p - (10.0 - 2.0 * 3.0) / 11.0).abs() < 1e-12, "{p}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{
    Classifier, ConfigError, DefaultClassifier, Outcome, Pattern, Rejected, SharedClock,
    SystemClock,
};
use parking_lot::Mutex;

use crate::CallError;

/// The reason word of a throttle's rejection.
pub const THROTTLED: &str = "throttled";

/// Builds an [`AdaptiveThrottle`].
#[must_use]
pub struct AdaptiveThrottleBuilder {
    k: f64,
    window: Duration,
    buckets: u32,
    clock: Option<SharedClock>,
    seed: Option<u64>,
}

impl fmt::Debug for AdaptiveThrottleBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleBuilder")
            .field("k", &self.k)
            .field("window", &self.window)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

impl AdaptiveThrottleBuilder {
    /// The multiplier K, at least 1 (default 2): the client keeps sending
    /// until its requests are K times the backend's accepts.
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// How far back requests and accepts are counted (default 2 minutes).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How many buckets the window is cut into, from 1 to 10,000 (default
    /// 120: the window moves a second at a time with the default window).
    pub fn buckets(mut self, buckets: u32) -> Self {
        self.buckets = buckets;
        self
    }

    /// The clock the window follows (default: the system clock). Tests pass a `ManualClock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds the random draws, so a test sees the same refusals every run (default: a random seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the settings and builds the throttle.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: a K below 1 or NaN (`k`), a zero
    /// window (`window`), zero buckets or more than one per nanosecond of the
    /// window (`buckets`).
    pub fn build(self) -> Result<AdaptiveThrottle, ConfigError> {
        if !(self.k >= 1.0 && self.k.is_finite()) {
            return Err(ConfigError::new(
                "k",
                format!("must be at least 1, got {}", self.k),
            ));
        }
        palisade_core::config::check_positive_duration("window", self.window)?;
        palisade_core::config::check_nonzero("buckets", u64::from(self.buckets))?;
        // Every check sums the buckets: a bound keeps it cheap.
        if self.buckets > 10_000 {
            return Err(ConfigError::new(
                "buckets",
                format!("must be at most 10,000, got {}", self.buckets),
            ));
        }
        let window = palisade_core::duration_to_nanos(self.window);
        if window < u64::from(self.buckets) {
            return Err(ConfigError::new(
                "buckets",
                format!(
                    "the window {:?} is shorter than one nanosecond per bucket",
                    self.window
                ),
            ));
        }
        let rng = self
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Ok(AdaptiveThrottle {
            inner: Arc::new(Inner {
                k: self.k,
                bucket_nanos: window / u64::from(self.buckets),
                clock: self.clock.unwrap_or_else(SystemClock::shared),
                state: Mutex::new(State {
                    buckets: vec![Bucket::default(); self.buckets as usize],
                    rng,
                }),
            }),
        })
    }
}

/// Refuses requests locally as a backend refuses them; see the [module docs](self).
/// Cheap to clone; clones share the counts.
#[derive(Clone)]
pub struct AdaptiveThrottle {
    inner: Arc<Inner>,
}

struct Inner {
    k: f64,
    bucket_nanos: u64,
    clock: SharedClock,
    state: Mutex<State>,
}

struct State {
    buckets: Vec<Bucket>,
    rng: fastrand::Rng,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket period this is (clock nanoseconds / bucket length).
    epoch: u64,
    requests: u64,
    accepts: u64,
}

impl fmt::Debug for AdaptiveThrottle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("k", &self.inner.k)
            .field("probability", &self.probability())
            .finish_non_exhaustive()
    }
}

/// What the window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleCounts {
    /// Requests asked for in the window, those refused locally included.
    pub requests: u64,
    /// Requests the backend accepted in the window.
    pub accepts: u64,
}

impl State {
    /// The bucket of `epoch`, emptied if it held an older period.
    fn bucket(&mut self, epoch: u64) -> &mut Bucket {
        let len = self.buckets.len() as u64;
        let b = &mut self.buckets[(epoch % len) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        b
    }

    fn counts(&self, epoch: u64) -> ThrottleCounts {
        let len = self.buckets.len() as u64;
        let (requests, accepts) = self
            .buckets
            .iter()
            .filter(|b| b.epoch + len > epoch && b.epoch <= epoch)
            .fold((0, 0), |(r, a), b| (r + b.requests, a + b.accepts));
        ThrottleCounts { requests, accepts }
    }
}

impl AdaptiveThrottle {
    /// A builder with K = 2 over two minutes in 120 buckets.
    pub fn builder() -> AdaptiveThrottleBuilder {
        AdaptiveThrottleBuilder {
            k: 2.0,
            window: Duration::from_secs(120),
            buckets: 120,
            clock: None,
            seed: None,
        }
    }

    fn epoch(&self) -> u64 {
        self.inner.clock.now_nanos() / self.inner.bucket_nanos
    }

    fn probability_of(&self, counts: ThrottleCounts) -> f64 {
        let requests = counts.requests as f64;
        ((requests - self.inner.k * counts.accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// The probability that the next request is refused locally, now.
    pub fn probability(&self) -> f64 {
        let epoch = self.epoch();
        let counts = self.inner.state.lock().counts(epoch);
        self.probability_of(counts)
    }

    /// Requests and accepts in the window, now.
    pub fn counts(&self) -> ThrottleCounts {
        let epoch = self.epoch();
        self.inner.state.lock().counts(epoch)
    }

    /// Counts a request and lets it go with probability `1 − p`; record on
    /// the permit whether the backend accepted it.
    ///
    /// # Errors
    /// [`Rejected`] with [`Pattern::Throttle`] and reason `throttled` when it
    /// is refused locally (it still counts as a request).
    pub fn try_acquire(&self) -> Result<ThrottlePermit<'_>, Rejected> {
        let epoch = self.epoch();
        let mut state = self.inner.state.lock();
        let p = self.probability_of(state.counts(epoch));
        state.bucket(epoch).requests += 1;
        if p > 0.0 && state.rng.f64() < p {
            return Err(Rejected::new(Pattern::Throttle, THROTTLED, None));
        }
        Ok(ThrottlePermit { throttle: self })
    }

    /// Runs `call` unless refused locally, and counts it accepted unless it
    /// returned `Err` (with the default classifier: an `Err` is the backend
    /// refusing; use [`call_with`](Self::call_with) to say which errors are).
    ///
    /// # Errors
    /// [`CallError::Rejected`] when refused locally, [`CallError::Inner`] with the call's error.
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(&DefaultClassifier, call).await
    }

    /// As [`call`](Self::call), with `classifier` deciding: a
    /// [`Outcome::Failure`] is the backend refusing, anything else an accept.
    ///
    /// # Errors
    /// As [`call`](Self::call).
    pub async fn call_with<T, E, C, F, Fut>(
        &self,
        classifier: &C,
        call: F,
    ) -> Result<T, CallError<E>>
    where
        C: Classifier<T, E>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = call().await;
        if classifier.classify(&result) != Outcome::Failure {
            permit.accepted();
        }
        result.map_err(CallError::Inner)
    }

    fn accept(&self) {
        let epoch = self.epoch();
        self.inner.state.lock().bucket(epoch).accepts += 1;
    }
}

/// A request the throttle let go. Call [`accepted`](Self::accepted) if the
/// backend accepted it; dropped without, it counts as refused by the backend.
#[derive(Debug)]
#[must_use = "say whether the backend accepted the request"]
pub struct ThrottlePermit<'a> {
    throttle: &'a AdaptiveThrottle,
}

impl ThrottlePermit<'_> {
    /// The backend accepted the request (any answer but "overloaded").
    pub fn accepted(self) {
        self.throttle.accept();
    }
}
