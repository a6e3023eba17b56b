//! Draws the limit over time of the bulkhead's adaptive limiters (AIMD in
//! blue, Gradient2 in orange, Vegas in green) in the simulated service of
//! `crates/palisade-bulkhead/tests/adaptive.rs`, whose knee (grey) is at 20
//! calls, and writes it to `docs/img/bulkhead-adaptive-limit.png`:
//!
//! ```text
//! cargo bench -p palisade-benches --bench bulkhead_adaptive_plot
//! ```
//!
//! The model and the limiters' settings are the test's (the test asserts
//! what the plot shows: both settle near the knee). The PNG is written with
//! `flate2` and nothing else: 800 × 400 pixels, 0 to 20 s across, limits 0
//! to 40 up, grid lines every 5 calls and every 2 s.

use std::io::Write as _;
use std::time::Duration;

use palisade::bulkhead::adaptive::{AdaptiveLimiter, AdaptivePermit, Aimd, Gradient2, Vegas};
use palisade::bulkhead::{Bulkhead, ManualClock, Outcome};

// ---- the simulated service: as in tests/adaptive.rs ----------------------------

const KNEE: f64 = 20.0;
const WORK_MS: f64 = 10.0;
const THRASH: f64 = 0.01;
const CLIENTS: usize = 100;
const TICK_MS: f64 = 0.25;
const SECONDS: u32 = 20;
/// The limit is sampled this often, in ticks (50 ms).
const SAMPLE_EVERY: u64 = 200;

fn speed(n: usize) -> f64 {
    let n = n as f64;
    if n <= KNEE {
        n
    } else {
        KNEE * (1.0 - THRASH * (n - KNEE)).max(0.1)
    }
}

/// The limit every 50 ms over the run.
fn limits(bulkhead: &Bulkhead, limiter: &AdaptiveLimiter, clock: &ManualClock) -> Vec<u32> {
    let ticks = (f64::from(SECONDS) * 1000.0 / TICK_MS) as u64;
    let mut in_flight: Vec<(AdaptivePermit<'_>, f64)> = Vec::new();
    let mut out = Vec::new();
    for tick in 0..ticks {
        while in_flight.len() < CLIENTS {
            match limiter.try_acquire() {
                Ok(p) => in_flight.push((p, WORK_MS)),
                Err(_) => break,
            }
        }
        let share = speed(in_flight.len()) / in_flight.len().max(1) as f64 * TICK_MS;
        clock.advance(Duration::from_micros((TICK_MS * 1000.0) as u64));
        let mut i = 0;
        while i < in_flight.len() {
            in_flight[i].1 -= share;
            if in_flight[i].1 <= 1e-9 {
                in_flight.swap_remove(i).0.record(Outcome::Success);
            } else {
                i += 1;
            }
        }
        if tick % SAMPLE_EVERY == 0 {
            out.push(bulkhead.snapshot().limit);
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Algorithm {
    Aimd,
    Gradient2,
    Vegas,
}

fn run(algorithm: Algorithm) -> Vec<u32> {
    let clock = ManualClock::new();
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(5)
        .build()
        .expect("valid bulkhead");
    let builder = AdaptiveLimiter::builder(bulkhead.clone())
        .max_limit(200)
        .clock(clock.shared());
    let builder = match algorithm {
        Algorithm::Aimd => builder.aimd(Aimd::new().timeout(Duration::from_millis(12))),
        Algorithm::Gradient2 => builder.gradient2(Gradient2::new().tolerance(1.2).queue_size(2.0)),
        Algorithm::Vegas => builder.vegas(Vegas::new()),
    };
    let limiter = builder.build().expect("valid limiter");
    limits(&bulkhead, &limiter, &clock)
}

// ---- a bitmap and a PNG writer ---------------------------------------------------

const W: usize = 800;
const H: usize = 400;
const MAX_LIMIT: f64 = 40.0;

struct Canvas(Vec<[u8; 3]>);

impl Canvas {
    fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            self.0[y as usize * W + x as usize] = rgb;
        }
    }

    /// A line 2 pixels thick from (x0, y0) to (x1, y1).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), rgb: [u8; 3]) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as i64).max(1);
        for s in 0..=steps {
            let t = s as f64 / steps as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                self.set(x as i64 + dx, y as i64 + dy, rgb);
            }
        }
    }

    fn png(&self) -> Vec<u8> {
        let mut raw = Vec::with_capacity(H * (1 + 3 * W));
        for row in self.0.chunks(W) {
            raw.push(0); // no filter
            raw.extend(row.iter().flatten());
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&raw).expect("in memory");
        let idat = z.finish().expect("in memory");
        let mut ihdr = Vec::new();
        ihdr.extend((W as u32).to_be_bytes());
        ihdr.extend((H as u32).to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [(b"IHDR", &ihdr), (b"IDAT", &idat), (b"IEND", &Vec::new())] {
            png.extend((data.len() as u32).to_be_bytes());
            let start = png.len();
            png.extend(kind);
            png.extend(data);
            let crc = crc32(&png[start..]);
            png.extend(crc.to_be_bytes());
        }
        png
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFF_u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn main() {
    // `cargo bench` passes `--bench`; `--list` asks for benchmark names: none here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let aimd = run(Algorithm::Aimd);
    let gradient = run(Algorithm::Gradient2);
    let vegas = run(Algorithm::Vegas);
    let mut c = Canvas(vec![[255, 255, 255]; W * H]);
    let x_of = |i: usize, n: usize| i as f64 / (n - 1) as f64 * (W - 1) as f64;
    let y_of = |limit: f64| (H - 1) as f64 - limit / MAX_LIMIT * (H - 1) as f64;
    for l in (5..40).step_by(5) {
        c.line(
            (0.0, y_of(f64::from(l))),
            ((W - 1) as f64, y_of(f64::from(l))),
            [230, 230, 230],
        );
    }
    for s in (2..SECONDS).step_by(2) {
        let x = f64::from(s) / f64::from(SECONDS) * (W - 1) as f64;
        c.line((x, 0.0), (x, (H - 1) as f64), [230, 230, 230]);
    }
    // The knee, dashed.
    for x in (0..W).step_by(16) {
        c.line(
            (x as f64, y_of(KNEE)),
            ((x + 8) as f64, y_of(KNEE)),
            [120, 120, 120],
        );
    }
    for (series, rgb) in [
        (&aimd, [31, 119, 180]),
        (&gradient, [255, 127, 14]),
        (&vegas, [44, 160, 44]),
    ] {
        for i in 1..series.len() {
            c.line(
                (x_of(i - 1, series.len()), y_of(f64::from(series[i - 1]))),
                (x_of(i, series.len()), y_of(f64::from(series[i]))),
                rgb,
            );
        }
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/img/bulkhead-adaptive-limit.png"
    );
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/img")).expect("docs/img");
    std::fs::write(path, c.png()).expect("write the PNG");
    println!(
        "wrote {path}: limit every 50 ms, AIMD ends at {}, Gradient2 at {}, Vegas at {}",
        aimd.last().expect("samples"),
        gradient.last().expect("samples"),
        vegas.last().expect("samples")
    );
}
