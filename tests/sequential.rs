//! The sequential test end to end: no false rollback on equal error rates, a canary
//! that gets few requests is still judged (no blind spot), observe-only mode.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

fn proxy_config(stable: &MockUpstream, canary: &MockUpstream, weight: f64, budget: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\n{budget}\n",
        route_toml("shop", stable.addr, canary.addr, weight, "sticky = [\"header:x-user-id\"]")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_error_rates_never_roll_back() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    stable.fail_every(50);
    canary.fail_every(50);
    let proxy = TestProxy::start(&proxy_config(&stable, &canary, 50.0, "")).await;
    let client = client();
    for i in 0..3000 {
        get(&client, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
    }
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "steady", "{route}");
    let verdict = &route["verdict"];
    assert_eq!(verdict["mode"], "sequential");
    assert!(
        verdict["canary_requests"].as_u64().unwrap() > 1200,
        "{verdict}"
    );
    // Both at 2 %: the evidence says the canary is not worse.
    assert_eq!(verdict["verdict"], "healthy", "{verdict}");
    let stable_rate = verdict["errors"]["stable_rate"].as_f64().unwrap();
    assert!((0.01..0.03).contains(&stable_rate), "{stable_rate}");
}

/// A canary at 10 % errors that sees only ~25 requests per second, with a 1 s
/// window: the threshold rule (min 50 requests in the window) never gets a verdict,
/// the sequential test counts requests since the canary was armed and rolls it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_traffic_canary_is_still_judged() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    stable.fail_every(100);
    canary.fail_every(10);
    let blind_canary = MockUpstream::start("blind-canary").await;
    blind_canary.fail_every(10);
    let toml = format!(
        "{}{}[route.budget]\nmode = \"threshold\"\nwindow = \"1s\"\nmin_requests = 50\n",
        proxy_config(&stable, &canary, 10.0, "window = \"1s\"\nmin_requests = 20"),
        route_toml(
            "blind",
            stable.addr,
            blind_canary.addr,
            10.0,
            "path_prefix = \"/blind\"\nsticky = [\"header:x-user-id\"]"
        ),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    let mut rolled_back = false;
    // Bounded: at most 4 000 requests per route, ~4 ms apart.
    for i in 0..4000 {
        let user = format!("u{i}");
        get(&client, &proxy.url("/"), &[("x-user-id", &user)]).await;
        get(&client, &proxy.url("/blind"), &[("x-user-id", &user)]).await;
        if i % 50 == 0 && proxy.route_status("shop").await["state"] == "rolled_back" {
            rolled_back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    assert!(rolled_back, "the sequential test must roll the canary back");
    let events = proxy.admin_json("/api/v1/events").await;
    let rollback = &events["events"][0];
    assert_eq!(rollback["reason"], "sequential_error_rate", "{events}");
    let armed = rollback["armed_canary_requests"].as_u64().unwrap();
    assert!(armed < 400, "took {armed} canary requests");
    // The window never held 50 canary requests: the threshold rule stayed blind.
    assert_eq!(proxy.route_status("blind").await["state"], "steady");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_only_mode_counts_and_never_touches_the_weight() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let proxy = TestProxy::start(&proxy_config(&stable, &canary, 50.0, "enforce = false")).await;
    let client = client();
    for i in 0..400 {
        get(&client, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
    }
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "steady");
    assert_eq!(route["effective_weight"], 50.0);
    assert_eq!(route["verdict"]["verdict"], "failing");
    assert_eq!(route["verdict"]["enforce"], false);
    assert!(canary.requests() > 150, "the canary kept its traffic");
    assert_eq!(
        proxy
            .metric("canary_proxy_would_rollback_total{route=\"shop\"}")
            .await,
        1.0,
        "reported once while the breach lasts"
    );
    let events = proxy.admin_json("/api/v1/events").await;
    let kinds: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, ["would_rollback"], "{events}");
    assert_eq!(events["events"][0]["enforce"], false);
    let (status, _, _) = get(&client, &proxy.url("/"), &[("x-user-id", "anyone")]).await;
    assert!(status == StatusCode::OK || status == StatusCode::INTERNAL_SERVER_ERROR);
}
