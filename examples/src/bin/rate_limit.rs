//! An HTTP-style API with plan tiers, limited per API key, printing what each
//! client got and the headers the server would send.
//!
//! Plans: `free` keys get 2 requests per second (a burst of 2), `pro` keys 10
//! per second (a burst of 5). Three clients send requests at their own pace
//! for 3 simulated seconds; the server answers 200 with the `RateLimit-*`
//! headers, or 429 with `Retry-After` as well. After 2 s the free client
//! upgrades to pro. A global limit of 20 per second (a burst of 2) in front,
//! shared by every connection, is a tower layer that holds requests in
//! `poll_ready` until their slot instead of rejecting them: the clients ask
//! for about 19 a second, and three at once now and then, so some requests
//! wait a little, and the output says how long.
//!
//! Run with `cargo run -p palisade-examples --bin rate_limit`.
//! It runs on a manual clock, so the 3 s take no real time and the output is
//! the same on every run.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::rate_limit::{
    Clock, Event, KeyedRateLimiter, ManualClock, Quota, RateLimitLayer, RateLimiter,
};
use tower::{BoxError, Layer, Service, service_fn};

/// A request to the API: who sends it and what for.
struct Request {
    api_key: String,
    path: &'static str,
}

/// What the server answers.
struct Response {
    status: u16,
    headers: Vec<(&'static str, u64)>,
}

/// The plans, by the prefix of the key; the account table decides the upgrade.
fn plan_of(accounts: &Mutex<HashMap<String, &'static str>>, key: &str) -> Quota {
    match accounts.lock().unwrap().get(key).copied().unwrap_or("free") {
        "pro" => Quota::per_second(10).burst(5),
        _ => Quota::per_second(2),
    }
}

/// The handler: the per-key limit decides, and its decision becomes headers.
fn handle(limiter: &KeyedRateLimiter<String>, request: &Request) -> Response {
    match limiter.check(&request.api_key) {
        Ok(decision) => Response {
            status: 200,
            headers: decision.headers().to_vec(),
        },
        Err(error) => match error.denied() {
            Some(denied) => Response {
                status: 429,
                headers: denied.headers().to_vec(),
            },
            None => Response {
                status: 500,
                headers: Vec::new(),
            },
        },
    }
}

/// Waits for `svc` to be ready, moving the manual clock on 1 ms at a time
/// while it is not (as real time would pass); returns the milliseconds waited.
fn ready_on<S: Service<Request>>(svc: &mut S, clock: &ManualClock) -> Result<u64, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut waited = 0;
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(ready) => return ready.map(|()| waited),
            Poll::Pending => {
                clock.advance(Duration::from_millis(1));
                waited += 1;
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let clock = ManualClock::new();
    let accounts = Arc::new(Mutex::new(HashMap::from([
        ("key-ada".to_owned(), "pro"),
        ("key-bob".to_owned(), "free"),
        ("key-cy".to_owned(), "free"),
    ])));
    let plans = Arc::clone(&accounts);
    let evictions = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&evictions);
    let per_key = KeyedRateLimiter::<String>::builder()
        .name("api-keys")
        .quota_fn(move |key| plan_of(&plans, key))
        .max_keys(10_000)
        .clock(clock.shared())
        .listener(move |e: &Event| {
            if let Event::KeysEvicted { count } = e {
                *counted.lock().unwrap() += count;
            }
        })
        .build()?;

    // The global limit: 20 per second for the whole API, shared by every
    // clone of the service (one per connection), waiting up to 1 s for a slot.
    let global = RateLimiter::builder()
        .name("api")
        .quota(Quota::per_second(20).burst(2))
        .clock(clock.shared())
        .sleeper(clock.sleeper())
        .max_wait(Duration::from_secs(1))
        .build()?;
    let handler = {
        let per_key = per_key.clone();
        service_fn(move |request: Request| {
            let response = handle(&per_key, &request);
            async move { Ok::<_, std::convert::Infallible>((request, response)) }
        })
    };
    let mut api = RateLimitLayer::new(global.clone()).waiting().layer(handler);

    // (client, its key, milliseconds between its requests)
    let clients = [
        ("ada", "key-ada", 100),
        ("bob", "key-bob", 150),
        ("cy", "key-cy", 400),
    ];
    let mut tally: BTreeMap<&str, (u32, u32, u64)> = BTreeMap::new();
    let mut upgraded = false;
    println!("  ms  client  request         status  waited  headers");
    for tick in 0..=3_000u64 / 50 {
        let due = tick * 50;
        clock.set_nanos(due * 1_000_000); // a wait may have moved it past already
        if due >= 2_000 && !upgraded {
            upgraded = true;
            accounts.lock().unwrap().insert("key-bob".to_owned(), "pro");
            per_key.refresh_quota(&"key-bob".to_owned())?;
            println!("{due:>4}  bob upgrades to pro: 10/s, burst 5");
        }
        for (client, key, every) in clients {
            if due % every != 0 {
                continue;
            }
            let request = Request {
                api_key: key.to_owned(),
                path: if client == "cy" {
                    "/reports"
                } else {
                    "/search?q=rust"
                },
            };
            let waited = ready_on(&mut api, &clock)?;
            let (request, response) = api.call(request).await?;
            let at = clock.now_nanos() / 1_000_000;
            let counts = tally.entry(client).or_default();
            if response.status == 200 {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
            counts.2 += waited;
            // Print the first half second in full, then only the refusals and waits.
            if at < 500 || response.status != 200 || waited > 0 {
                let headers: Vec<String> = response
                    .headers
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect();
                println!(
                    "{at:>4}  {client:<6}  {:<14}  {}     {:>3} ms  {}",
                    request.path,
                    response.status,
                    waited,
                    headers.join(", ")
                );
            }
        }
    }

    println!(
        "\nWhat each client got over 3 s (at {} ms on the clock):",
        clock.now_nanos() / 1_000_000
    );
    for (client, (ok, limited, waited)) in &tally {
        println!(
            "  {client:<4} {ok:>3} answered, {limited:>3} limited (429), {waited:>4} ms waiting for the global limit"
        );
    }
    println!(
        "Keys held: {} of at most {}; refilled keys dropped: {}; global limit left now: {}",
        per_key.len(),
        per_key.max_keys(),
        evictions.lock().unwrap(),
        global.snapshot().remaining()
    );
    Ok(())
}
