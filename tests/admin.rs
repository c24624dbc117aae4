//! Admin API: auth, commands, persistence by canary identity, events, webhook.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::sync::mpsc;

const TOKEN: &str = "s3cret-token";

fn config(
    dir: &Path,
    stable: SocketAddr,
    canary: SocketAddr,
    version: &str,
    extra: &str,
) -> String {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[state]\ndir = \"{}\"\n{extra}\n[[route]]\nname = \"shop\"\nstable = {{ endpoints = [\"{stable}\"] }}\ncanary = {{ endpoints = [\"{canary}\"], version = \"{version}\" }}\ncanary_weight = 50\n",
        dir.join("token").display(),
        dir.join("state").display()
    )
}

#[tokio::test]
async fn mutations_need_the_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let up = MockUpstream::start("up").await;
    let proxy = TestProxy::start(&config(dir.path(), up.addr, up.addr, "v1", "")).await;

    let (status, body) = proxy.command("shop", "rollback", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = proxy.command("shop", "rollback", Some("wrong")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(proxy.route_status("shop").await["state"], "steady");
    let (status, body) = proxy.command("shop", "rollback", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["state"], "rolled_back");
    assert_eq!(state["effective_weight"], 0.0);

    // Unknown route and action, wrong method, conflicts.
    assert_eq!(
        proxy.command("nope", "rollback", Some(TOKEN)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        proxy.command("shop", "explode", Some(TOKEN)).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, body) = proxy.command("shop", "pause", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, _) = get(
        &client(),
        &proxy.admin_url("/api/v1/routes/shop/resume"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _, _) = get(&client(), &proxy.admin_url("/nope"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// RFC 9110 §11.1: the auth scheme is case-insensitive, and one or more spaces
/// separate it from the token. Pause and resume alternate so every accepted call is a
/// state change (200); a refused one leaves the state as it was.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let up = MockUpstream::start("up").await;
    let extra = "[route.rollout]\nsteps = [50, 100]\nstep_interval = \"1h\"\n";
    let toml = config(dir.path(), up.addr, up.addr, "v1", "").replace(
        "canary_weight = 50\n",
        &format!("canary_weight = 50\n{extra}"),
    );
    let proxy = TestProxy::start(&toml).await;
    let admin = proxy.admin.unwrap();
    let post = |action: &str, auth: &str| {
        format!(
            "POST /api/v1/routes/shop/{action} HTTP/1.1\r\nHost: admin\r\nAuthorization: {auth}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    let accepted = [
        format!("BEARER {TOKEN}"),
        format!("bearer {TOKEN}"),
        format!("bEaReR   {TOKEN}"),
        format!("Bearer {TOKEN}  "),
    ];
    for (i, auth) in accepted.iter().enumerate() {
        let action = if i % 2 == 0 { "pause" } else { "resume" };
        let response = raw(admin, post(action, auth).as_bytes(), Duration::from_secs(2)).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{auth:?}: {response}");
    }
    for auth in [
        format!("Basic {TOKEN}"),
        format!("Bearer{TOKEN}"),
        "Bearer ".to_string(),
        format!("Bearer x{TOKEN}"),
    ] {
        let response = raw(
            admin,
            post("pause", &auth).as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 401") || response.starts_with("HTTP/1.1 403"),
            "{auth:?}: {response}"
        );
    }
    assert_eq!(proxy.route_status("shop").await["state"], "rolling_out");
}

#[tokio::test]
async fn without_a_token_file_mutations_are_off() {
    let up = MockUpstream::start("up").await;
    let proxy = TestProxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        route_toml("shop", up.addr, up.addr, 10.0, "")
    ))
    .await;
    let (status, body) = proxy.command("shop", "rollback", Some("anything")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("disabled"), "{body}");
    // Read-only endpoints work.
    let (status, _, body) = get(&client(), &proxy.admin_url("/healthz"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
    let (status, _, _) = get(&client(), &proxy.admin_url("/readyz"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let routes = proxy.admin_json("/api/v1/routes").await;
    assert_eq!(routes["generation"], 1);
    assert_eq!(routes["routes"][0]["configured_weight"], 10.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_re_arms_and_a_new_version_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let client = client();
    let v1 = config(dir.path(), stable.addr, canary.addr, "v1", "");

    let proxy = TestProxy::start(&v1).await;
    assert_eq!(
        proxy.command("shop", "rollback", Some(TOKEN)).await.0,
        StatusCode::OK
    );
    proxy.stop().await;

    // Same canary after a restart: still rolled back.
    let proxy = TestProxy::start(&v1).await;
    assert_eq!(proxy.route_status("shop").await["state"], "rolled_back");
    for i in 0..50 {
        let (_, h, _) = get(
            &client,
            &proxy.url("/"),
            &[("x-canary", "always"), ("x-u", &i.to_string())],
        )
        .await;
        assert_eq!(h["x-served-by"], "stable");
    }
    assert_eq!(canary.requests(), 0);
    // Resume: the canary gets traffic again, and that survives a restart too.
    let (status, body) = proxy.command("shop", "resume", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    proxy.stop().await;
    let proxy = TestProxy::start(&v1).await;
    assert_eq!(proxy.route_status("shop").await["state"], "steady");
    for i in 0..200 {
        get(&client, &proxy.url(&format!("/?i={i}")), &[]).await;
    }
    // Sticky on client_ip: all requests share one key, so all land on one side;
    // check the effective weight instead.
    assert_eq!(proxy.route_status("shop").await["effective_weight"], 50.0);
    assert_eq!(
        proxy.command("shop", "rollback", Some(TOKEN)).await.0,
        StatusCode::OK
    );
    proxy.stop().await;

    // A new canary version is a new canary: fresh state despite the saved rollback.
    let v2 = config(dir.path(), stable.addr, canary.addr, "v2", "");
    let proxy = TestProxy::start(&v2).await;
    let route = proxy.route_status("shop").await;
    assert_eq!(route["state"], "steady", "{route}");
    assert_eq!(route["canary_version"], "v2");
}

/// A webhook receiver that forwards each POSTed body to a channel.
async fn receiver() -> (SocketAddr, mpsc::UnboundedReceiver<serde_json::Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let _ = tx.send(serde_json::from_slice(&body).unwrap());
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_receives_the_rollback_event() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(1);
    let (hook, mut received) = receiver().await;
    let toml = config(
        dir.path(),
        stable.addr,
        canary.addr,
        "v1",
        &format!("[notify]\nwebhook = \"http://{hook}/hook\"\n"),
    )
    .replace(
        "canary_weight = 50",
        "canary_weight = 100\n[route.budget]\nmin_requests = 5",
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    for _ in 0..10 {
        get(&client, &proxy.url("/"), &[]).await;
    }
    let event = tokio::time::timeout(Duration::from_secs(5), received.recv())
        .await
        .expect("no webhook call")
        .unwrap();
    // The default sequential test: with no stable traffic its baseline is the 1 %
    // prior, each error weighs ln 3, and the 7th crosses ln(0.95 / 0.001).
    assert_eq!(event["kind"], "rollback");
    assert_eq!(event["route"], "shop");
    assert_eq!(event["reason"], "sequential_error_rate");
    assert_eq!(event["canary_errors"], 7);
    assert_eq!(event["armed_canary_requests"], 7);
    assert!(event["observed"].as_f64().unwrap() >= event["threshold"].as_f64().unwrap());
    assert_eq!(event["p0"], 0.01);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_webhook_does_not_slow_requests() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    // Accepts connections and never answers.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = hanging.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream);
        }
    });
    let toml = config(
        dir.path(),
        stable.addr,
        stable.addr,
        "v1",
        &format!("[notify]\nwebhook = \"http://{hook}/hook\"\n"),
    );
    let proxy = TestProxy::start(&toml).await;
    // Ten decisions queue ten events behind a webhook that never answers.
    for _ in 0..5 {
        assert_eq!(
            proxy.command("shop", "rollback", Some(TOKEN)).await.0,
            StatusCode::OK
        );
        assert_eq!(
            proxy.command("shop", "resume", Some(TOKEN)).await.0,
            StatusCode::OK
        );
    }
    let client = client();
    let started = tokio::time::Instant::now();
    for _ in 0..100 {
        let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    // The notifier needs > 6 s per event to give up; requests are not waiting on it.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        proxy.admin_json("/api/v1/events").await["events"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
}
