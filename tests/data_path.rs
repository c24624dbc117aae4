//! The data path driven in process: `proxy::forward::proxy` called with a
//! `Request<RequestBody>`, no downstream connection. What needs an upstream gets a
//! one-shot hyper server on loopback, in the same process.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONNECTION, HOST};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use canary_proxy::events::Events;
use canary_proxy::proxy::body::ProxyBody;
use canary_proxy::proxy::forward::proxy;
use canary_proxy::proxy::ConnInfo;
use canary_proxy::rollout::Shared;
use canary_proxy::snapshot::Snapshot;
use canary_proxy::telemetry::Telemetry;
use canary_proxy::upstream::RequestBody;

/// A snapshot of one route, `r`, for host `a.example`, with both sides on `upstream`.
fn snapshot(upstream: SocketAddr) -> Arc<Snapshot> {
    snapshot_with(upstream, Telemetry::new())
}

fn snapshot_with(upstream: SocketAddr, telemetry: Arc<Telemetry>) -> Arc<Snapshot> {
    let toml = format!(
        r#"
[[route]]
name = "r"
host = "a.example"
stable = {{ endpoints = ["{upstream}"] }}
canary = {{ endpoints = ["{upstream}"] }}
canary_weight = 0
"#
    );
    let config = canary_proxy::config::parse_str(&toml, Path::new("t.toml")).unwrap();
    let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), telemetry);
    Arc::new(Snapshot::build(config, 1, None, &shared, Instant::now()))
}

fn client() -> ConnInfo {
    ConnInfo::new("192.0.2.7:40000".parse().unwrap(), false)
}

async fn text(response: Response<ProxyBody>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

/// An upstream that answers one request with what it received: the head's headers
/// as `name: value` lines, then the body.
async fn echo_once() -> (SocketAddr, oneshot::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (done, served) = oneshot::channel();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(|req: Request<Incoming>| async move {
            let mut out = String::new();
            for (name, value) in req.headers() {
                out.push_str(&format!("{name}: {}\n", value.to_str().unwrap()));
            }
            let body = req.into_body().collect().await.unwrap().to_bytes();
            out.push_str(std::str::from_utf8(&body).unwrap());
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(out))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        let _ = done.send(());
    });
    (addr, served)
}

#[tokio::test]
async fn a_request_is_forwarded_with_its_head_rewritten() {
    let (upstream, _served) = echo_once().await;
    let snapshot = snapshot(upstream);
    let req = Request::post("/echo")
        .header(HOST, "a.example")
        .header(CONNECTION, "x-secret")
        .header("x-secret", "1")
        .header("x-request-id", "id-1")
        .body(RequestBody::Full(Some(Bytes::from_static(b"hello"))))
        .unwrap();
    let response = proxy(snapshot, &client(), req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "id-1");
    let seen = text(response).await;
    assert!(seen.contains("host: a.example\n"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 192.0.2.7\n"), "{seen}");
    assert!(
        seen.contains("forwarded: for=192.0.2.7;proto=http\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-request-id: id-1\n"), "{seen}");
    assert!(
        !seen.contains("x-secret"),
        "hop-by-hop header forwarded: {seen}"
    );
    assert!(seen.ends_with("hello"), "{seen}");
}

#[tokio::test]
async fn an_unknown_host_is_answered_by_the_proxy() {
    let snapshot = snapshot("127.0.0.1:9".parse().unwrap());
    let req = Request::get("/")
        .header(HOST, "b.example")
        .body(RequestBody::Empty)
        .unwrap();
    let response = proxy(snapshot, &client(), req).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["x-request-id"].len(), 25);
    assert!(response.headers().get(CONNECTION).is_none());
}

#[tokio::test]
async fn a_malformed_head_closes_an_http1_connection_only() {
    let bad = |version| {
        Request::get("/")
            .version(version)
            .header(HOST, "a.example")
            .header(HOST, "b.example")
            .body(RequestBody::Empty)
            .unwrap()
    };
    let snapshot = snapshot("127.0.0.1:9".parse().unwrap());
    let h1 = proxy(Arc::clone(&snapshot), &client(), bad(Version::HTTP_11)).await;
    assert_eq!(h1.status(), StatusCode::BAD_REQUEST);
    assert_eq!(h1.headers()[CONNECTION], "close");
    let h2 = proxy(snapshot, &client(), bad(Version::HTTP_2)).await;
    assert_eq!(h2.status(), StatusCode::BAD_REQUEST);
    assert!(h2.headers().get(CONNECTION).is_none());
}

#[tokio::test]
async fn a_refused_upstream_is_a_502_that_counts_against_the_side() {
    // A port that was just free: nothing listens on it.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let telemetry = Telemetry::new();
    let snapshot = snapshot_with(refused, Arc::clone(&telemetry));
    let req = Request::get("/")
        .header(HOST, "a.example")
        .body(RequestBody::Empty)
        .unwrap();
    let response = proxy(Arc::clone(&snapshot), &client(), req).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = text(response).await;
    assert!(
        body.starts_with("502 Bad Gateway: upstream connect failed"),
        "{body}"
    );
    // Weight 0: stable was tried, and the failure counts against it as `connect`.
    let metrics = telemetry.render();
    let counted =
        "canary_proxy_upstream_errors_total{route=\"r\",upstream=\"stable\",kind=\"connect\"} 1";
    assert!(metrics.contains(counted), "{metrics}");
}
