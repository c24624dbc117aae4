use std::path::Path;

use super::*;
use crate::telemetry::Telemetry;

fn target(notify: &str) -> Arc<Target> {
    let src = format!(
        "[notify]\n{notify}\n[[route]]\nname = \"checkout\"\nstable = {{ endpoints = [\"127.0.0.1:9001\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:9002\"], version = \"v2\" }}\n"
    );
    let config = crate::config::parse_str(&src, Path::new("/tmp/notify-test.toml"))
        .unwrap_or_else(|errors| panic!("{errors:#?}"));
    Target::from_config(&config).expect("[notify]")
}

fn rollback() -> Event {
    Event::new("rollback", Some("checkout"), "sequential_error_rate")
        .with("observed", 7.69)
        .with("threshold", 6.86)
        .with("window_seconds", 30.0)
        .with("canary_requests", 18)
        .with("canary_errors", 7)
        .with("stable_requests", 0)
}

#[test]
fn signature_is_hmac_sha256_in_hex() {
    // RFC 4231, test case 2.
    assert_eq!(
        signature(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn text_says_what_happened_in_one_line() {
    let line = |event: &Event| text::line(event, Some("v2"));
    assert_eq!(
        line(&rollback()),
        "canary-proxy: rollback of route checkout (canary v2): sequential_error_rate — 7 of the last 18 canary requests failed"
    );
    let threshold = Event::new("rollback", Some("checkout"), "error_rate")
        .with("observed", 0.125)
        .with("threshold", 0.05)
        .with("canary_requests", 80)
        .with("canary_errors", 10);
    assert_eq!(
        line(&threshold),
        "canary-proxy: rollback of route checkout (canary v2): error_rate — 10 of the last 80 canary requests failed (12.5% > 5.0%)"
    );
    let manual = Event::new("rollback", Some("checkout"), "manual");
    assert_eq!(
        text::line(&manual, None),
        "canary-proxy: rollback of route checkout: manual — by an operator"
    );
    let slow = Event::new("would_rollback", Some("checkout"), "p99_latency")
        .with("canary_requests", 200)
        .with("canary_slow", 9);
    assert_eq!(
        line(&slow),
        "canary-proxy: would roll back route checkout (canary v2) (observe only, enforce = false): p99_latency — 9 of the last 200 canary requests were slower than max_p99_latency"
    );
    let step = Event::new("step", Some("checkout"), "step held within budget")
        .with("from_weight", 5.0)
        .with("to_weight", 25.0);
    assert_eq!(
        line(&step),
        "canary-proxy: route checkout (canary v2) stepped from 5% to 25%"
    );
    let promote = Event::new("promote", Some("checkout"), "promoted").with("from_weight", 50.0);
    assert_eq!(
        line(&promote),
        "canary-proxy: route checkout (canary v2) promoted to 100% (from 50%)"
    );
    let pause = Event::new("pause", Some("checkout"), "operator").with("weight", 0.5);
    assert_eq!(
        line(&pause),
        "canary-proxy: route checkout (canary v2) paused at 0.5% by operator"
    );
    let reload = Event::new("reload", None, "config reloaded").with("generation", 3);
    assert_eq!(
        line(&reload),
        "canary-proxy: config reloaded (generation 3)"
    );
    let failed = Event::new("reload_failed", None, "proxy.toml:3:1: route: bad");
    assert_eq!(
        line(&failed),
        "canary-proxy: config reload rejected, the previous config keeps serving: proxy.toml:3:1: route: bad"
    );
    // Numbers missing: the reason alone, nothing made up.
    let bare = Event::new("rollback", Some("checkout"), "sequential_error_rate");
    assert_eq!(
        line(&bare),
        "canary-proxy: rollback of route checkout (canary v2): sequential_error_rate"
    );
}

#[test]
fn the_body_keeps_the_event_and_adds_text_and_version() {
    let target = target("webhook = \"http://127.0.0.1:1/hook\"");
    let body = target.render(&rollback()).unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    let event = serde_json::to_value(rollback()).unwrap();
    for (key, value) in event.as_object().unwrap() {
        if key != "time" {
            assert_eq!(&json[key], value, "{key}");
        }
    }
    assert_eq!(json["canary_version"], "v2");
    assert!(json["text"]
        .as_str()
        .unwrap()
        .starts_with("canary-proxy: rollback of route checkout (canary v2)"));
}

#[test]
fn the_request_carries_headers_and_signature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), " s3cret\n").unwrap();
    let target = target(&format!(
        "webhook = \"http://127.0.0.1:1/hook\"\nsecret_file = \"{}\"\nheaders = {{ Authorization = \"Bearer x\", \"User-Agent\" = \"mine\" }}",
        dir.path().join("secret").display()
    ));
    let body = Bytes::from_static(b"{\"kind\":\"rollback\"}");
    let request = target.request(&body).unwrap();
    let headers = request.headers();
    assert_eq!(headers["authorization"], "Bearer x");
    assert!(headers["authorization"].is_sensitive());
    assert_eq!(headers["user-agent"], "mine");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        headers[SIGNATURE_HEADER],
        signature(b"s3cret", &body).as_str()
    );
    assert_eq!(request.uri(), "http://127.0.0.1:1/hook");
}

/// The value of `series` in the exposition (0 when absent).
fn metric(telemetry: &Telemetry, series: &str) -> f64 {
    telemetry
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_blocking() {
    // A receiver that accepts and never answers: the first event stays in flight.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
            let _ = accepted_tx.send(());
        }
    });
    let target = target(&format!(
        "webhook = \"http://{addr}/hook\"\ntimeout = \"60s\""
    ));
    let telemetry = Telemetry::new();
    let tx = spawn_with(
        Arc::new(ArcSwapOption::from(Some(target))),
        telemetry.webhook_meters(),
        2,
    );
    tx.send(rollback()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), accepted.recv())
        .await
        .expect("first event in flight");
    // Two fit in the queue behind it; three more are dropped.
    for _ in 0..5 {
        tx.send(rollback()).unwrap();
    }
    let dropped = "canary_proxy_webhook_dropped_total{reason=\"queue_full\"}";
    for _ in 0..500 {
        if metric(&telemetry, dropped) >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&telemetry, dropped), 3.0);
    assert_eq!(
        metric(
            &telemetry,
            "canary_proxy_webhook_dropped_total{reason=\"retries_exhausted\"}"
        ),
        0.0
    );
}
