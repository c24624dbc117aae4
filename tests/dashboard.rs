//! The dashboard in a real browser: headless Chromium renders the page against a
//! running proxy; the DOM must show the route, its weights and the rollback event, and
//! a page opened after the fact must draw the history the proxy kept.
//! Screenshots are saved under target/ for people to look at.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canary_proxy::app::App;
use canary_proxy::config::parse_str;
use support::*;

const CHROMIUM: &str = "chromium";

fn chromium(args: &[String]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let mut all: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.push(format!("--user-data-dir={}", profile.path().display()));
    all.extend(args.iter().cloned());
    Command::new(CHROMIUM)
        .args(&all)
        .output()
        .expect("chromium not found: apt-get install chromium (CI's .ci/run does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_routes_weights_and_the_rollback() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let proxy = TestProxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nmin_requests = 5\n[route.shield]\nstatuses = [\"5xx\"]\nmin_retries_per_second = 100\n{}",
        route_toml("shop", stable.addr, canary.addr, 50.0, "sticky = [\"header:x-user-id\"]"),
        route_toml("search", stable.addr, stable.addr, 12.5, "path_prefix = \"/search\"")
    ))
    .await;
    let client = client();
    for i in 0..60 {
        get(&client, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
    }
    assert_eq!(proxy.route_status("shop").await["state"], "rolled_back");

    let url = proxy.admin_url("/");
    let dom = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            chromium(&[
                "--dump-dom".into(),
                "--virtual-time-budget=3000".into(),
                url,
            ])
        })
        .await
        .unwrap()
    };
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    assert!(
        html.contains(r#"data-route="shop" data-state="rolled_back""#),
        "{html}"
    );
    assert!(
        html.contains(r#"data-route="search" data-state="steady""#),
        "{html}"
    );
    assert!(
        html.contains(r#"<strong data-field="effective">0%</strong>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span data-field="configured">50%</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span data-field="configured">12.5%</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"<li data-kind="rollback">"#), "{html}");
    assert!(html.contains("error_rate"), "{html}");
    assert!(html.contains("config generation 1"), "{html}");
    // The verdict and its evidence.
    assert!(
        html.contains(r#"<strong class="failing" data-field="verdict">failing</strong>"#),
        "{html}"
    );
    assert!(html.contains("(sequential)"), "{html}");
    assert!(
        html.contains("stable baseline (smoothed, prior 1 % until stable traffic)"),
        "{html}"
    );

    // What users saw beside what the canary did: every failure shielded.
    let shielded = format!(
        r#"<strong data-field="shielded">{}</strong>"#,
        canary.requests()
    );
    assert!(html.contains(&shielded), "{shielded} in {html}");
    assert!(
        html.contains(r#"<strong data-field="user-error-rate">0.00%</strong>"#),
        "{html}"
    );

    // Screenshots, wide and narrow.
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    for (name, size) in [
        ("dashboard.png", "1280,900"),
        ("dashboard-narrow.png", "420,1400"),
    ] {
        let file = target.join(name);
        let _ = std::fs::remove_file(&file);
        let args = vec![
            format!("--screenshot={}", file.display()),
            format!("--window-size={size}"),
            "--virtual-time-budget=3000".to_string(),
            url.clone(),
        ];
        let out = tokio::task::spawn_blocking(move || chromium(&args))
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{} is {size} bytes", file.display());
    }
}

/// The page as Chromium leaves it after `budget_ms` of (virtual) time.
async fn dump_dom(url: &str, budget_ms: u32) -> String {
    let args = vec![
        "--dump-dom".to_string(),
        format!("--virtual-time-budget={budget_ms}"),
        url.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || chromium(&args))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Saves a screenshot of `url` as target/`name`; returns its path.
async fn screenshot(url: &str, name: &str, size: &str) -> PathBuf {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(name);
    let _ = std::fs::remove_file(&file);
    let args = vec![
        format!("--screenshot={}", file.display()),
        format!("--window-size={size}"),
        "--virtual-time-budget=3000".to_string(),
        url.to_string(),
    ];
    let out = tokio::task::spawn_blocking(move || chromium(&args))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    assert!(bytes > 10_000, "{} is {bytes} bytes", file.display());
    file
}

/// The `<article>` of route `name` in a dumped page.
fn article<'a>(html: &'a str, name: &str) -> &'a str {
    let start = html
        .find(&format!(r#"data-route="{name}""#))
        .unwrap_or_else(|| panic!("no route {name} in {html}"));
    let end = html[start..].find("</article>").unwrap() + start;
    &html[start..end]
}

/// The number in `attr="N"` (the first one) of `html`.
fn attr(html: &str, attr: &str) -> f64 {
    let key = format!(r#"{attr}=""#);
    let start = html
        .find(&key)
        .unwrap_or_else(|| panic!("no {attr} in {html}"))
        + key.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].parse().unwrap()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_opened_after_the_fact_draws_the_history_and_the_rollback() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let quiet = MockUpstream::start("quiet").await;
    // Stable fails now and then: the observed stable rate is not the smoothed baseline.
    stable.fail_every(40);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nmin_requests = 20\n[route.rollout]\nsteps = [25, 50, 75, 100]\nstep_interval = \"3s\"\n{}",
        route_toml("shop", stable.addr, canary.addr, 10.0, "sticky = [\"header:x-user-id\"]"),
        route_toml("search", quiet.addr, quiet.addr, 12.5, "path_prefix = \"/search\"")
    );
    let config = parse_str(&toml, Path::new("test.toml")).unwrap();
    // History every 200 ms instead of 5 s, so the test sees many points soon.
    let app = App::bind(config)
        .await
        .unwrap()
        .history_interval(Duration::from_millis(200));
    let proxy = TestProxy::serve(app);
    let admin = proxy.admin.unwrap();
    let url = format!("http://{admin}/");
    let route_status = || async {
        let (_, _, body) = get(&client(), &format!("http://{admin}/api/v1/routes"), &[]).await;
        let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
        routes["routes"][0].clone()
    };

    // Before anyone looks: a healthy canary earns a rollout step.
    let client = client();
    let mut user = 0;
    let start = tokio::time::Instant::now();
    while route_status().await["effective_weight"] == 10.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no step: {}",
            route_status().await
        );
        user = users(&client, &proxy, user, 50).await;
    }
    // Some history after the step too.
    user = users(&client, &proxy, user, 300).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let opened = unix_now();
    let html = dump_dom(&url, 3000).await;
    let shop = article(&html, "shop");
    assert!(shop.contains(r#"data-state="rolling_out""#), "{shop}");
    // The charts start before the page was opened, from the proxy's history.
    let from = attr(shop, "data-from");
    assert!(
        from < opened - 1.0,
        "history from {from}, page opened {opened}: {shop}"
    );
    let served = attr(shop, "data-server-points");
    assert!(
        served >= 5.0,
        "{served} points from /api/v1/history: {shop}"
    );
    assert!(attr(shop, "data-points") > served, "{shop}");
    assert!(
        shop.contains(r#"class="marker" data-kind="step""#),
        "{shop}"
    );
    // Buttons of a rolling-out route.
    for action in ["rollback", "pause", "promote"] {
        assert!(
            shop.contains(&format!(r#"data-action="{action}""#)),
            "{action}: {shop}"
        );
    }
    assert!(!shop.contains(r#"data-action="resume""#), "{shop}");
    // The smoothed baseline is named as such, the observed rate beside it.
    assert!(
        shop.contains(r#"<span data-field="baseline">stable baseline (smoothed, prior 1 % until stable traffic) "#),
        "{shop}"
    );
    assert!(
        shop.contains(r#"<span data-field="observed-stable">observed stable "#),
        "{shop}"
    );
    // A route nobody called: no stable traffic, and the 1 % is the prior's.
    let search = article(&html, "search");
    assert!(
        search.contains(r#"<span data-field="observed-stable">no stable traffic yet</span>"#),
        "{search}"
    );
    assert!(
        search.contains("stable baseline (smoothed, prior 1 % until stable traffic) 1.00%"),
        "{search}"
    );
    let before = screenshot(&url, "dashboard-before.png", "1280,1000").await;

    // The canary breaks: rolled back at once; the page shows it after the fact.
    canary.fail_every(1);
    let start = tokio::time::Instant::now();
    while route_status().await["state"] != "rolled_back" {
        assert!(start.elapsed() < Duration::from_secs(20), "no rollback");
        user = users(&client, &proxy, user, 20).await;
    }
    users(&client, &proxy, user, 200).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let html = dump_dom(&url, 3000).await;
    let shop = article(&html, "shop");
    assert!(shop.contains(r#"data-state="rolled_back""#), "{shop}");
    assert!(
        shop.contains(r#"class="marker" data-kind="rollback""#),
        "{shop}"
    );
    assert!(
        shop.contains(r#"class="marker" data-kind="step""#),
        "{shop}"
    );
    // A rolled-back route can be resumed or promoted; pausing it makes no sense.
    assert!(shop.contains(r#"data-action="resume""#), "{shop}");
    assert!(shop.contains(r#"data-action="promote""#), "{shop}");
    assert!(!shop.contains(r#"data-action="pause""#), "{shop}");
    assert!(!shop.contains(r#"data-action="rollback""#), "{shop}");
    assert!(shop.contains(">Resume</button>"), "{shop}");
    let after = screenshot(&url, "dashboard-after.png", "1280,1000").await;
    println!("screenshots: {} {}", before.display(), after.display());

    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .unwrap();
}

/// `n` requests from users `first + 1 ..= first + n` (sticky on x-user-id); the last
/// user's number.
async fn users(client: &Client, proxy: &TestProxy, first: u64, n: u64) -> u64 {
    for user in first + 1..=first + n {
        let id = format!("u{user}");
        get(client, &proxy.url("/"), &[("x-user-id", &id)]).await;
    }
    first + n
}
