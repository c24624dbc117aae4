//! Why, since when and by whom: a route's status carries its last decision, events name
//! the actor, the instance and the canary version, and both survive a restart.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

fn config(dir: &Path, stable: SocketAddr, canary: SocketAddr) -> String {
    std::fs::write(
        dir.join("tokens"),
        "# one line per operator: NAME:TOKEN\nalice:tok-alice\nbob:tok-bob\n",
    )
    .unwrap();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[state]\ndir = \"{}\"\n{}[route.budget]\nmode = \"threshold\"\nmin_requests = 5\nmax_error_rate = 0.5\n",
        dir.join("tokens").display(),
        dir.join("state").display(),
        route_toml("shop", stable, canary, 100.0, "")
    )
}

/// POST a command with a token and a raw body; status and body text.
async fn post(proxy: &TestProxy, action: &str, token: &str, body: &str) -> (StatusCode, String) {
    let req = Request::post(proxy.admin_url(&format!("/api/v1/routes/shop/{action}")))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap();
    let response = client().request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_decision_says_who_why_and_when_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let toml = config(dir.path(), stable.addr, canary.addr);
    let proxy = TestProxy::start(&toml).await;

    let before = proxy.route_status("shop").await;
    assert!(
        before["reason"].is_null() && before["since"].is_null(),
        "{before}"
    );

    // Malformed bodies are refused and change nothing.
    for bad in ["{not json", r#"{"why": "x"}"#, r#"{"reason": 7}"#] {
        let (status, body) = post(&proxy, "rollback", "tok-bob", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(
        post(&proxy, "rollback", "tok-eve", "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(proxy.route_status("shop").await["state"], "steady");

    let (status, body) = post(
        &proxy,
        "rollback",
        "tok-bob",
        r#"{"reason": "checkout errors after deploy 4711"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "rolled_back");
    assert_eq!(route["reason"], "checkout errors after deploy 4711");
    assert!(route["since"].as_str().unwrap().ends_with('Z'), "{route}");
    assert_eq!(route["decision"]["kind"], "rollback");
    assert_eq!(route["decision"]["actor"], "bob");

    let events = proxy.admin_json("/api/v1/events").await;
    let rollback = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "rollback")
        .cloned()
        .expect("a rollback event");
    assert_eq!(rollback["actor"], "bob");
    assert_eq!(rollback["reason"], "checkout errors after deploy 4711");
    assert_eq!(rollback["canary_version"], "v2");
    assert!(
        rollback["instance"].as_str().is_some_and(|i| !i.is_empty()),
        "{rollback}"
    );

    // Alice resumes without a reason: the default one, her name.
    let (status, _) = post(&proxy, "resume", "tok-alice", "").await;
    assert_eq!(status, StatusCode::OK);
    let route = proxy.route_status("shop").await;
    assert_eq!(route["decision"]["actor"], "alice");
    assert_eq!(route["decision"]["kind"], "resume");
    let (status, _) = post(&proxy, "rollback", "tok-alice", r#"{"reason": "again"}"#).await;
    assert_eq!(status, StatusCode::OK);
    let since = proxy.route_status("shop").await["since"].clone();
    proxy.stop().await;

    // After a restart: the same state, reason, time and numbers, and the history.
    let proxy = TestProxy::start(&toml).await;
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "rolled_back");
    assert_eq!(route["reason"], "again");
    assert_eq!(route["since"], since);
    assert_eq!(route["decision"]["actor"], "alice");
    let events = proxy.admin_json("/api/v1/events").await;
    let kinds: Vec<_> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "rollback").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"resume".to_string()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rollback_says_which_rule_and_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let proxy = TestProxy::start(&config(dir.path(), stable.addr, canary.addr)).await;
    let client = client();
    for _ in 0..10 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    wait_for(
        "the rollback to be reported",
        Duration::from_secs(5),
        || async { proxy.route_status("shop").await["state"] == "rolled_back" },
    )
    .await;
    let route = proxy.route_status("shop").await;
    assert_eq!(route["reason"], "error_rate");
    assert_eq!(route["decision"]["kind"], "rollback");
    assert_eq!(route["decision"]["canary_requests"], 5);
    assert_eq!(route["decision"]["canary_errors"], 5);
    assert!(
        route["decision"]["actor"].is_null(),
        "the proxy decided: {route}"
    );
}

/// Grafana can show how close a canary is to the edge: the verdict and the sequential
/// evidence with its bounds are gauges, and /metrics lists each family in one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verdict_and_its_evidence_are_metrics() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let proxy = TestProxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nmin_requests = 5\n",
        route_toml("shop", stable.addr, canary.addr, 100.0, "")
    ))
    .await;
    let evidence = "canary_proxy_sequential_evidence{route=\"shop\",test=\"errors\"}";
    let upper = "canary_proxy_sequential_evidence_bound{route=\"shop\",bound=\"upper\"}";
    let undecided = "canary_proxy_canary_verdict{route=\"shop\",verdict=\"undecided\"}";
    let failing = "canary_proxy_canary_verdict{route=\"shop\",verdict=\"failing\"}";
    assert_eq!(proxy.metric(evidence).await, 0.0);
    assert_eq!(proxy.metric(undecided).await, 1.0);
    assert!(proxy.metric(upper).await > 1.0);
    let client = client();
    for _ in 0..3 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    let partway = proxy.metric(evidence).await;
    assert!(
        partway > 0.0 && partway < proxy.metric(upper).await,
        "{partway}"
    );
    for _ in 0..20 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    wait_for("the failing verdict", Duration::from_secs(5), || async {
        proxy.metric(failing).await == 1.0
    })
    .await;
    assert_eq!(proxy.metric(undecided).await, 0.0);
    assert!(proxy.metric(evidence).await >= proxy.metric(upper).await);

    // Two scrapes list the series in the same order, and the process is described.
    let scrape = || async { get(&client, &proxy.admin_url("/metrics"), &[]).await.2 };
    let (a, b) = (scrape().await, scrape().await);
    let order = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(order(&a), order(&b));
    assert!(a.contains("\nprocess_resident_memory_bytes "), "{a}");
    assert!(a.contains("\nprocess_open_fds "), "{a}");
}

/// A decision that cannot be written still holds in memory, and says so: an error in
/// the log and `canary_proxy_state_write_failures_total`.
#[tokio::test]
async fn a_decision_that_cannot_be_saved_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&config(dir.path(), stable.addr, canary.addr)).await;
    let failures = "canary_proxy_state_write_failures_total";
    assert_eq!(proxy.metric(failures).await, 0.0);
    // The state dir becomes a file: the next save cannot create its files.
    let state = dir.path().join("state");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::write(&state, "not a directory").unwrap();
    let (status, body) = post(&proxy, "rollback", "tok-bob", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(proxy.route_status("shop").await["state"], "rolled_back");
    assert_eq!(proxy.metric(failures).await, 1.0);
}
