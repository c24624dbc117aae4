//! The error budget judged inline: rollback at the breaching request, gRPC, the
//! relative criterion, progressive rollout, metrics.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

fn config(stable: &MockUpstream, canary: &MockUpstream, weight: f64, budget: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{ADMIN}{}[route.budget]\nmode = \"threshold\"\n{budget}\n",
        route_toml(
            "shop",
            stable.addr,
            canary.addr,
            weight,
            "sticky = [\"header:x-user-id\"]"
        )
    )
}

/// Sends one request as `user` and returns (side, status).
async fn send(client: &Client, proxy: &TestProxy, user: &str) -> (String, StatusCode) {
    let (status, headers, _) = get(client, &proxy.url("/"), &[("x-user-id", user)]).await;
    let side = headers
        .get("x-served-by")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (side, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_serves_not_one_request_after_the_breach() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&config(
        &stable,
        &canary,
        50.0,
        "window = \"60s\"\nmin_requests = 20\nmax_error_rate = 0.2",
    ))
    .await;
    let client = client();

    // Healthy phase.
    let (mut canary_requests, mut canary_errors) = (0u64, 0u64);
    let mut user = 0;
    for _ in 0..100 {
        user += 1;
        let (side, status) = send(&client, &proxy, &format!("u{user}")).await;
        assert_eq!(status, StatusCode::OK);
        if side == "canary" {
            canary_requests += 1;
        }
    }
    assert!(canary_requests > 20, "{canary_requests}");

    // The canary starts failing every request. Find, from our own counts, the request
    // at which the window's canary error rate first exceeds 20 %.
    canary.fail_every(1);
    let mut breach_at = None;
    for _ in 0..2000 {
        user += 1;
        let (side, status) = send(&client, &proxy, &format!("u{user}")).await;
        if side == "canary" {
            assert!(
                breach_at.is_none(),
                "canary served a request after the breach"
            );
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            canary_requests += 1;
            canary_errors += 1;
            if canary_requests >= 20 && canary_errors as f64 / canary_requests as f64 > 0.2 {
                breach_at = Some(canary.requests());
            }
        }
        if breach_at.is_some() && user > 100 + 1000 {
            break;
        }
    }
    let breach_at = breach_at.expect("the budget was never breached");
    // Checked at the upstream: not one more request reached the canary.
    assert_eq!(canary.requests(), breach_at);

    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "rolled_back");
    assert_eq!(route["effective_weight"], 0.0);
    assert_eq!(route["configured_weight"], 50.0);
    let metrics = get(&client, &proxy.admin_url("/metrics"), &[]).await.2;
    assert!(
        metrics.contains("canary_proxy_canary_weight_ratio{route=\"shop\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("canary_proxy_rollbacks_total{route=\"shop\",reason=\"error_rate\"} 1")
    );
    assert!(metrics.contains("canary_proxy_canary_state{route=\"shop\",state=\"rolled_back\"} 1"));

    // The event carries the numbers behind the decision.
    let events = proxy.admin_json("/api/v1/events").await;
    let rollback = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollback")
        .cloned()
        .expect("rollback event");
    assert_eq!(rollback["route"], "shop");
    assert_eq!(rollback["reason"], "error_rate");
    assert_eq!(rollback["canary_requests"], canary_requests);
    assert_eq!(rollback["canary_errors"], canary_errors);
    assert_eq!(rollback["threshold"], 0.2);

    // Every later request goes to stable, override header or not.
    for i in 0..200 {
        let (side, status) = send(&client, &proxy, &format!("later{i}")).await;
        assert_eq!((side.as_str(), status), ("stable", StatusCode::OK));
    }
    assert_eq!(canary.requests(), breach_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_in_trailers_trips_the_budget() {
    let upstream = MockUpstream::start("grpc").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{ADMIN}[[route]]\nname = \"rpc\"\nstable = {{ endpoints = [\"{0}\"], protocol = \"h2\" }}\ncanary = {{ endpoints = [\"{0}\"], protocol = \"h2\" }}\ncanary_weight = 100\n[route.budget]\nmode = \"threshold\"\nmin_requests = 5\nmax_error_rate = 0.5\n",
        upstream.addr
    );
    let proxy = TestProxy::start(&toml).await;
    let client = h2_client();
    // OK statuses do not count.
    for _ in 0..10 {
        let (status, _, _) = get(&client, &proxy.url("/grpc/0"), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(proxy.route_status("rpc").await["state"], "steady");
    // UNAVAILABLE (14) in trailers, with HTTP 200, is an error.
    for _ in 0..20 {
        get(&client, &proxy.url("/grpc/14"), &[]).await;
        if proxy.route_status("rpc").await["state"] == "rolled_back" {
            break;
        }
    }
    let route = proxy.route_status("rpc").await;
    assert_eq!(route["state"], "rolled_back", "{route}");
    let metrics = get(&client, &proxy.admin_url("/metrics"), &[]).await.2;
    assert!(
        metrics.contains(
            "canary_proxy_upstream_errors_total{route=\"rpc\",upstream=\"canary\",kind=\"grpc\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_criterion_compares_with_stable() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    stable.fail_every(50);
    canary.fail_every(50);
    let proxy = TestProxy::start(&config(
        &stable,
        &canary,
        50.0,
        "min_requests = 50\nmax_error_rate = 0.5\nmax_error_rate_vs_stable = 3.0",
    ))
    .await;
    let client = client();
    for i in 0..800 {
        send(&client, &proxy, &format!("a{i}")).await;
    }
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "steady", "both sides at 2 %: {route}");
    assert!(
        route["window"]["canary"]["errors"].as_u64().unwrap() >= 5,
        "{route}"
    );

    canary.fail_every(10);
    let mut rolled_back = false;
    for i in 0..4000 {
        send(&client, &proxy, &format!("b{i}")).await;
        if i % 50 == 0 && proxy.route_status("shop").await["state"] == "rolled_back" {
            rolled_back = true;
            break;
        }
    }
    assert!(
        rolled_back,
        "canary at 10 % vs stable at 2 % must roll back"
    );
    let events = proxy.admin_json("/api/v1/events").await;
    assert_eq!(
        events["events"][0]["reason"], "error_rate_vs_stable",
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_walks_its_steps_on_a_live_proxy() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let toml = format!(
        "{}[route.rollout]\nsteps = [10, 50, 100]\nstep_interval = \"300ms\"\n",
        config(&stable, &canary, 0.0, "min_requests = 5")
    );
    let proxy = TestProxy::start(&toml).await;
    assert_eq!(proxy.route_status("shop").await["state"], "rolling_out");
    let client = client();
    let mut state = String::new();
    for i in 0..100 {
        send(&client, &proxy, &format!("u{i}")).await;
        state = proxy.route_status("shop").await["state"]
            .as_str()
            .unwrap()
            .to_string();
        if state == "promoted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "promoted");
    let events = proxy.admin_json("/api/v1/events").await;
    let kinds: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["step", "step", "promote"]);
    assert_eq!(events["events"][1]["to_weight"], 50.0);
    // At 100 % everyone is on the canary.
    for i in 0..20 {
        assert_eq!(send(&client, &proxy, &format!("p{i}")).await.0, "canary");
    }
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let proxy = TestProxy::start(&config(&stable, &canary, 50.0, "min_requests = 3")).await;
    let client = client();
    for i in 0..40 {
        send(&client, &proxy, &format!("u{i}")).await;
    }
    let response = client
        .request(
            http::Request::get(proxy.admin_url("/metrics"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    for name in [
        "canary_proxy_requests_total",
        "canary_proxy_request_duration_seconds_bucket",
        "canary_proxy_upstream_errors_total",
        "canary_proxy_canary_weight_ratio",
        "canary_proxy_canary_configured_weight_ratio",
        "canary_proxy_rollbacks_total",
        "canary_proxy_canary_state",
        "canary_proxy_config_reloads_total",
        "canary_proxy_open_connections",
        "canary_proxy_build_info",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install prometheus (CI's .ci/run does)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
