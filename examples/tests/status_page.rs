//! The status page, as a person sees it: rendered by a real headless
//! browser (Chromium), its script filling every card from `/status.json`.
//! Skipped, and said so, where no Chromium is installed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use palisade_examples::orders::client::HttpClient;
use palisade_examples::orders::provider::Faults;
use palisade_examples::orders::{Service, Settings};

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ]
    .iter()
    .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
    .find(|candidate| candidate.is_file())
}

/// The text of the element with `id` in `dom` (the first text after its tag).
fn text_of<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[at..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_live_state_of_every_part_in_a_real_browser() {
    let Some(browser) = chromium() else {
        palisade_test_support::skipped(
            "the_status_page_shows_the_live_state_of_every_part_in_a_real_browser",
            "no Chromium installed (apt-get install chromium)",
        );
        return;
    };
    let service = Service::start(Settings {
        faults: Faults {
            error_rate: 0.0,
            spike_rate: 0.0,
            spike: Duration::ZERO,
        },
        ..Settings::default()
    })
    .await
    .unwrap();
    let placed = HttpClient::new()
        .post_json(
            &format!("{}/orders", service.url()),
            &[("x-api-key", "pro-1")],
            br#"{"sku":"book","quantity":1}"#.to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(placed.status, 201);

    let url = format!("{}/status", service.url());
    let dom = tokio::task::spawn_blocking(move || {
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=3000",
                "--dump-dom",
            ])
            .arg(url)
            .output()
    })
    .await
    .unwrap()
    .expect("chromium runs");
    assert!(
        dom.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);

    assert!(
        dom.contains(r#"data-rendered="yes""#),
        "the script did not render: {dom}"
    );
    assert_eq!(text_of(&dom, "completed"), Some("1"));
    assert_eq!(text_of(&dom, "compensated"), Some("0"));
    assert_eq!(text_of(&dom, "breaker"), Some("closed"));
    assert_eq!(text_of(&dom, "provider"), Some("answering"));
    assert_eq!(text_of(&dom, "prov-requests"), Some("1"));
    assert_eq!(text_of(&dom, "attempts"), Some("1 · 1"));
    assert_eq!(text_of(&dom, "amplification"), Some("1.00×"));
    assert_eq!(text_of(&dom, "rl-backend"), Some("in-process"));
    assert_eq!(text_of(&dom, "rl-admitted"), Some("1"));
    assert_eq!(text_of(&dom, "bulkhead"), Some("0 of 64 (0 waiting)"));
    let meta = text_of(&dom, "meta").unwrap();
    assert!(
        meta.contains("SQLite") && meta.contains("standard stack around the provider"),
        "{meta}"
    );
}
