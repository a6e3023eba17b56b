//! Many threads on one breaker, with exact counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

use palisade_circuit_breaker::{CircuitBreaker, Event, Outcome, SlidingWindow, State};
use palisade_core::ManualClock;

const THREADS: u64 = 8;

fn on_threads(work: impl Fn(u64) + Send + Sync + 'static) {
    let work = Arc::new(work);
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let work = Arc::clone(&work);
            let start = Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                work(t);
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
}

#[test]
fn no_outcome_is_lost_in_either_window() {
    for window in [
        SlidingWindow::count(100_000),
        SlidingWindow::time(Duration::from_secs(60)),
    ] {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::builder()
            .clock(clock.shared())
            .sliding_window(window)
            .minimum_calls(1_000_000)
            .slow_call_duration(Duration::from_secs(3600))
            .build()
            .unwrap();
        let shared = breaker.clone();
        on_threads(move |t| {
            for i in 0..10_000u64 {
                let permit = shared.try_acquire().expect("closed");
                permit.record(if (i + t) % 10 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                });
            }
        });
        let snap = breaker.snapshot();
        assert_eq!(snap.calls, THREADS * 10_000, "{window:?}");
        assert_eq!(snap.failed_calls, THREADS * 1_000, "{window:?}");
        assert_eq!(snap.state, State::Closed);
    }
}

#[test]
fn half_open_admits_exactly_n_probes_across_threads() {
    let clock = ManualClock::new();
    let closings = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&closings);
    let breaker = CircuitBreaker::builder()
        .clock(clock.shared())
        .half_open_probes(5)
        .listener(move |e: &Event| {
            if *e
                == (Event::StateTransition {
                    from: State::HalfOpen,
                    to: State::Closed,
                })
            {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    breaker.transition_to(State::HalfOpen);
    for _round in 0..3 {
        let admitted = Arc::new(AtomicU64::new(0));
        let held = Arc::new(Mutex::new(0u64));
        let (b, a, h) = (breaker.clone(), Arc::clone(&admitted), Arc::clone(&held));
        // Each thread keeps its permits until every thread has tried 1,000 times.
        let all_tried = Arc::new(Barrier::new(THREADS as usize));
        on_threads(move |_| {
            let mut mine = Vec::new();
            for _ in 0..1_000 {
                if let Ok(p) = b.try_acquire() {
                    a.fetch_add(1, Ordering::SeqCst);
                    mine.push(p);
                }
            }
            *h.lock().unwrap() += mine.len() as u64;
            all_tried.wait();
            drop(mine); // unrecorded: each gives its place back
        });
        assert_eq!(admitted.load(Ordering::SeqCst), 5);
        assert_eq!(*held.lock().unwrap(), 5);
        assert_eq!(breaker.state(), State::HalfOpen);
    }
    // Now the probes succeed: the breaker closes exactly once.
    let b = breaker.clone();
    on_threads(move |_| {
        for _ in 0..1_000 {
            if let Ok(p) = b.try_acquire() {
                p.success();
            }
        }
    });
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(closings.load(Ordering::SeqCst), 1);
}

#[test]
fn hammering_through_every_state_keeps_the_rules() {
    let clock = ManualClock::new();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let probes_finished = Arc::new(AtomicU64::new(0));
    let (sink, probes) = (Arc::clone(&transitions), Arc::clone(&probes_finished));
    let breaker = CircuitBreaker::builder()
        .clock(clock.shared())
        .sliding_window(SlidingWindow::count(50))
        .minimum_calls(20)
        .failure_rate_threshold(0.3)
        .half_open_probes(3)
        .open_duration(Duration::from_millis(10))
        .listener(move |e: &Event| match *e {
            Event::StateTransition { from, to } => sink.lock().unwrap().push((from, to)),
            Event::CallFinished {
                state: State::HalfOpen,
                outcome: Outcome::Success | Outcome::Failure,
                ..
            } => {
                probes.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        })
        .build()
        .unwrap();
    let b = breaker.clone();
    let ticking = clock.clone();
    on_threads(move |t| {
        let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for i in 0..20_000u64 {
            if t == 0 && i % 50 == 0 {
                ticking.advance(Duration::from_millis(1));
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if let Ok(permit) = b.try_acquire() {
                match x % 8 {
                    0..=2 => permit.failure(),
                    3 => drop(permit),
                    _ => permit.success(),
                }
            }
        }
    });

    let transitions = transitions.lock().unwrap();
    assert!(
        transitions.len() > 10,
        "the run should cycle: {}",
        transitions.len()
    );
    let mut state = State::Closed;
    for &(from, to) in transitions.iter() {
        assert_eq!(from, state, "transitions chain");
        let allowed = matches!(
            (from, to),
            (State::Closed, State::Open)
                | (State::Open, State::HalfOpen)
                | (State::HalfOpen, State::Closed | State::Open)
        );
        assert!(allowed, "{from:?} -> {to:?}");
        state = to;
    }
    assert_eq!(breaker.state(), state);
    let half_open_periods = transitions
        .iter()
        .filter(|t| t.1 == State::HalfOpen)
        .count() as u64;
    assert!(
        probes_finished.load(Ordering::SeqCst) <= 3 * half_open_periods,
        "{} probes finished in {half_open_periods} half-open periods",
        probes_finished.load(Ordering::SeqCst)
    );
}
