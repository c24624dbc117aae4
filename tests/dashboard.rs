//! The dashboard in a real browser: headless Chromium renders the page against a
//! running proxy; the DOM must show the route, its weights and the rollback event.
//! Screenshots are saved under target/ for people to look at.

mod support;

use std::path::PathBuf;
use std::process::Command;

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
        html.contains("canary requests; stable error rate"),
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
