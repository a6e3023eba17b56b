//! The orders service: every Palisade crate in one HTTP service, with a
//! flaky payment provider and a load driver.
//!
//! ```text
//! cargo run -p palisade-examples --bin orders                 # 20 s of load on embedded defaults, then a report
//! cargo run -p palisade-examples --bin orders -- serve        # the service on 127.0.0.1:3000 until Ctrl-C
//! cargo run -p palisade-examples --bin orders -- load URL     # the driver against a running service
//! cargo run -p palisade-examples --bin orders -- compare      # with and without the stack, as a table
//! ```
//!
//! Options: `--seconds N` (default 20), `--orders N` and `--reads N` (a
//! second; default 40 and 120), `--no-stack`, `--port N` (serve; default
//! 3000), `--data DIR` (keep the SQLite files there, across runs; default:
//! a temporary directory removed at the end), `--schema NAME` (PostgreSQL:
//! the events' schema, the read model's is `NAME_views`; default
//! `palisade_orders`), `--redis-prefix P` (Redis keys; default
//! `palisade-orders:`). `DATABASE_URL` (PostgreSQL) and `REDIS_URL` switch the stores;
//! with the `otlp` feature, `OTEL_EXPORTER_OTLP_ENDPOINT` exports traces.
//! See `docs/orders.md`.

use std::net::SocketAddr;
use std::time::Duration;

use palisade::cqrs::BoxError;
use palisade_examples::orders::load::{self, LoadSettings, Report};
use palisade_examples::orders::{Service, Settings};

struct Args {
    command: String,
    url: Option<String>,
    seconds: u64,
    orders: f64,
    reads: f64,
    with_stack: bool,
    port: u16,
    data: Option<std::path::PathBuf>,
    schema: Option<String>,
    redis_prefix: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        command: "demo".into(),
        url: None,
        seconds: 20,
        orders: 40.0,
        reads: 120.0,
        with_stack: true,
        port: 3000,
        data: None,
        schema: None,
        redis_prefix: None,
    };
    let mut it = std::env::args().skip(1);
    let mut first = true;
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "demo" | "serve" | "load" | "compare" if first => args.command = arg,
            "--seconds" => args.seconds = number(&value("--seconds")?, 1, 3_600)?,
            "--orders" => args.orders = number(&value("--orders")?, 0, 10_000)? as f64,
            "--reads" => args.reads = number(&value("--reads")?, 0, 100_000)? as f64,
            "--port" => args.port = number(&value("--port")?, 0, 65_535)? as u16,
            "--no-stack" => args.with_stack = false,
            "--data" => args.data = Some(value("--data")?.into()),
            "--schema" => args.schema = Some(value("--schema")?),
            "--redis-prefix" => args.redis_prefix = Some(value("--redis-prefix")?),
            url if args.command == "load" && args.url.is_none() && !url.starts_with("--") => {
                args.url = Some(url.to_owned());
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; see the header of src/bin/orders.rs"
                ));
            }
        }
        first = false;
    }
    if args.command == "load" && args.url.is_none() {
        return Err("load needs the service's URL: orders load http://127.0.0.1:3000".into());
    }
    Ok(args)
}

fn number(text: &str, min: u64, max: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a number from {min} to {max}")),
    }
}

/// The service's settings from the environment and `args`' store names.
fn settings(args: &Args) -> Settings {
    let mut settings = Settings::from_env();
    settings.data_dir.clone_from(&args.data);
    if let Some(schema) = &args.schema {
        settings.schema.clone_from(schema);
    }
    if let Some(prefix) = &args.redis_prefix {
        settings.redis_prefix.clone_from(prefix);
    }
    settings
}

fn load_settings(args: &Args) -> LoadSettings {
    LoadSettings {
        orders_per_second: args.orders,
        reads_per_second: args.reads,
        ..LoadSettings::demo(Duration::from_secs(args.seconds))
    }
}

fn describe(settings: &Settings) -> String {
    format!(
        "event store {}, cache and rate limits {}, {}",
        if settings.database_url.is_some() {
            "PostgreSQL"
        } else {
            "SQLite (embedded)"
        },
        if settings.redis_url.is_some() {
            "in process + Redis"
        } else {
            "in process"
        },
        if settings.with_stack {
            "the standard stack around the payment provider"
        } else {
            "NO stack around the payment provider"
        },
    )
}

async fn demo(args: &Args, with_stack: bool) -> Result<(Report, Settled), BoxError> {
    let settings = Settings {
        with_stack,
        ..settings(args)
    };
    let service = Service::start(settings.clone()).await?;
    let load = load_settings(args);
    println!(
        "orders service on {} — {}",
        service.url(),
        describe(&settings)
    );
    if let Some((at, length)) = load.outage {
        println!(
            "{} s of load: {:.0} orders and {:.0} reads a second; the provider fails 8 % of requests, answers 3 % late, and is out from {} s to {} s",
            args.seconds,
            load.orders_per_second,
            load.reads_per_second,
            at.as_secs(),
            (at + length).as_secs(),
        );
    }
    let report = load::run(&service.url(), &load).await;
    println!("\n{}", report.summary());
    let settled = check(&service, &report, with_stack).await?;
    Ok((report, settled))
}

/// What must hold after every run, outage or not: every saga ends, every
/// completed order was paid exactly once and every undone one refunded or
/// never charged, and, with the stack, no request failed.
async fn check(service: &Service, report: &Report, with_stack: bool) -> Result<Settled, BoxError> {
    let began = std::time::Instant::now();
    let status = service.settle(Duration::from_secs(120)).await?;
    let settled = began.elapsed();
    let (charges, refunds) = (status.provider.charges, status.provider.refunds);
    let completed = status.sagas.completed;
    if charges - refunds != completed {
        return Err(format!(
            "money: {charges} charges − {refunds} refunds ≠ {completed} completed orders"
        )
        .into());
    }
    if with_stack && report.errors != 0 {
        return Err(format!("{} requests failed with the stack", report.errors).into());
    }
    println!(
        "checks        every saga ended ({completed} completed, {} compensated, {} failed; the last {:.1} s after the load stopped); {charges} charges − {refunds} refunds = {completed} completed orders, each paid once; projection caught up{}",
        status.sagas.compensated,
        status.sagas.failed,
        settled.as_secs_f64(),
        if with_stack {
            "; no request failed"
        } else {
            ""
        },
    );
    Ok(Settled {
        after: settled,
        status: serde_json::to_value(&status)?,
    })
}

/// When every saga had ended after the load, and the status then.
struct Settled {
    after: Duration,
    status: serde_json::Value,
}

async fn serve(args: &Args) -> Result<(), BoxError> {
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], args.port)),
        with_stack: args.with_stack,
        data_dir: args.data.clone(),
        ..settings(args)
    };
    let service = Service::start(settings.clone()).await?;
    let url = service.url();
    println!("orders service on {url} — {}", describe(&settings));
    println!("  status page:  {url}/status");
    println!(
        "  place:        curl -si -X POST {url}/orders -H 'x-api-key: pro-1' -H 'content-type: application/json' -d '{{\"sku\":\"book\",\"quantity\":2}}'"
    );
    println!("  read:         curl -si {url}/orders/ID -H 'x-api-key: pro-1'");
    println!("  outage:       curl -si -X POST '{url}/provider/outage?ms=10000'");
    println!("  load:         cargo run -p palisade-examples --bin orders -- load {url}");
    println!("Ctrl-C stops it.");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

fn table(with: &(Report, Settled), without: &(Report, Settled)) -> String {
    let row = |name: &str, (r, settled): &(Report, Settled)| {
        // Sagas and the provider after the last saga ended.
        let s = &settled.status;
        let get = |path: &str| {
            s.pointer(path)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        let ms = |path: &str| {
            s.pointer(path)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(0.0)
        };
        let provider = get("/provider/requests");
        format!(
            "| {name} | {provider} ({:.0}/s) | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {} ({:.1} %) | {} | {} | {:.2} % | {:.1} s |",
            provider as f64 / r.elapsed.as_secs_f64(),
            r.posts.quantile(0.5).as_secs_f64() * 1e3,
            r.posts.quantile(0.99).as_secs_f64() * 1e3,
            ms("/sagas/p50_ms"),
            ms("/sagas/p99_ms"),
            get("/sagas/completed"),
            get("/sagas/completed") as f64 * 100.0 / r.orders_sent.max(1) as f64,
            get("/sagas/compensated"),
            r.shed,
            r.error_rate() * 100.0,
            settled.after.as_secs_f64(),
        )
    };
    format!(
        "| provider calls through | provider requests received | POST /orders p50 / p99 (the answer: 202 after 1 s) | outcome p50 / p99 (saga start to end) | orders completed | orders compensated | shed (fast 503) | requests failed (5xx, timeouts) | last saga ended, after the load |\n|---|---|---|---|---|---|---|---|---|\n{}\n{}\n",
        row("the standard stack", with),
        row("no stack", without),
    )
}

async fn run(args: Args) -> Result<(), BoxError> {
    match args.command.as_str() {
        "serve" => serve(&args).await,
        "load" => {
            let url = args.url.clone().unwrap_or_default();
            let report = load::run(&url, &load_settings(&args)).await;
            println!("\n{}", report.summary());
            Ok(())
        }
        _ => demo(&args, args.with_stack).await.map(drop),
    }
}

/// Runs `work` on a runtime of its own, dropped after it with every task
/// it left (sagas still retrying, the projection): one run of `compare`
/// does not load the next.
fn on_own_runtime<T>(work: impl Future<Output = Result<T, BoxError>>) -> Result<T, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(feature = "otlp")]
        let _otlp = match std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(_) => Some(palisade::otlp::init()?),
            None => None,
        };
        work.await
    })
}

fn main() -> Result<(), BoxError> {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("orders: {e}");
            std::process::exit(2);
        }
    };
    if args.command == "compare" {
        let with = on_own_runtime(demo(&args, true))?;
        println!();
        let without = on_own_runtime(demo(&args, false))?;
        println!("\n{}", table(&with, &without));
        return Ok(());
    }
    on_own_runtime(run(args))
}
