//! Webhooks that reach real receivers (SPEC §9): https with a verified certificate,
//! custom headers, the HMAC signature, the event filter, retries with backoff and the
//! counted drops, the Slack `text` line. Receivers run in the test process.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::sync::mpsc;

const TOKEN: &str = "s3cret-token";
const SUCCESS: &str = "canary_proxy_webhook_deliveries_total{result=\"success\"}";
const FAILURE: &str = "canary_proxy_webhook_deliveries_total{result=\"failure\"}";
const EXHAUSTED: &str = "canary_proxy_webhook_dropped_total{reason=\"retries_exhausted\"}";
const QUEUE_FULL: &str = "canary_proxy_webhook_dropped_total{reason=\"queue_full\"}";

/// One POST as the receiver saw it.
#[derive(Debug)]
struct Post {
    headers: HeaderMap,
    body: Bytes,
}

/// A webhook receiver on 127.0.0.1:0 (plain or TLS) that answers 500 to its first
/// `fail_first` requests and 200 after, and forwards each request to a channel.
struct Hook {
    addr: SocketAddr,
    posts: mpsc::UnboundedReceiver<Post>,
    requests: Arc<AtomicUsize>,
}

impl Hook {
    async fn start(tls: Option<rustls::ServerConfig>, fail_first: usize) -> Hook {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, posts) = mpsc::unbounded_channel();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        let acceptor = tls.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (tx, count, acceptor) = (tx.clone(), Arc::clone(&count), acceptor.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (tx, count) = (tx.clone(), Arc::clone(&count));
                        async move {
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            let (head, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let _ = tx.send(Post {
                                headers: head.headers,
                                body: body.unwrap_or_default(),
                            });
                            let status = if n < fail_first {
                                StatusCode::INTERNAL_SERVER_ERROR
                            } else {
                                StatusCode::OK
                            };
                            let mut response = http::Response::new(Full::new(Bytes::from("ok")));
                            *response.status_mut() = status;
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(acceptor) => {
                            // A client that does not trust us fails the handshake here.
                            if let Ok(tls) = acceptor.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Hook {
            addr,
            posts,
            requests,
        }
    }

    async fn next(&mut self) -> Post {
        tokio::time::timeout(Duration::from_secs(10), self.posts.recv())
            .await
            .expect("no webhook call")
            .expect("receiver stopped")
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Post {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A private CA and a server config for `127.0.0.1` / `localhost` it signed: (CA PEM,
/// server config).
fn private_ca() -> (String, rustls::ServerConfig) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "webhook test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(canary_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    (ca.pem(), config)
}

/// A proxy config with an admin token, a `shop` route on `upstream` and `notify`.
fn config(dir: &Path, upstream: SocketAddr, notify: &str) -> String {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n[notify]\n{notify}\n[[route]]\nname = \"shop\"\nstable = {{ endpoints = [\"{upstream}\"] }}\ncanary = {{ endpoints = [\"{upstream}\"], version = \"v7\" }}\ncanary_weight = 50\n",
        dir.join("token").display(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The receiver's check: HMAC-SHA256 of the raw body under `secret`, in constant time.
fn signed_with(post: &Post, secret: &str) -> bool {
    let Some(hex) = post.headers["x-canary-proxy-signature"]
        .to_str()
        .unwrap()
        .strip_prefix("sha256=")
    else {
        return false;
    };
    let tag: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::verify(&key, &post.body, &tag).is_ok()
}

async fn rollback(proxy: &TestProxy) {
    let (status, body) = proxy.command("shop", "rollback", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_webhook_is_verified_signed_and_carries_the_headers() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let (ca, server) = private_ca();
    let mut hook = Hook::start(Some(server), 0).await;
    let ca = write(dir.path(), "hook-ca.pem", &ca);
    let secret = write(dir.path(), "hook-secret", "  shared-secret\n");
    let notify = format!(
        "webhook = \"https://{}/canary\"\nca_file = \"{}\"\nsecret_file = \"{}\"\nheaders = {{ Authorization = \"Bearer hook-token\", \"X-Team\" = \"payments\" }}",
        hook.addr,
        ca.display(),
        secret.display()
    );
    let proxy = TestProxy::start(&config(dir.path(), upstream.addr, &notify)).await;
    rollback(&proxy).await;

    let post = hook.next().await;
    assert_eq!(post.headers["authorization"], "Bearer hook-token");
    assert_eq!(post.headers["x-team"], "payments");
    assert_eq!(post.headers["content-type"], "application/json");
    // Trimmed like the admin token: the key is the file's text without whitespace.
    assert!(signed_with(&post, "shared-secret"), "{:?}", post.headers);
    assert!(!signed_with(&post, "  shared-secret\n"));
    let event = post.json();
    assert_eq!(event["kind"], "rollback");
    assert_eq!(event["route"], "shop");
    assert_eq!(event["reason"], "manual");
    assert_eq!(event["canary_version"], "v7");
    assert_eq!(
        event["text"],
        "canary-proxy: rollback of route shop (canary v7): manual — by an operator"
    );
    wait_for("the success counter", Duration::from_secs(2), || async {
        proxy.metric(SUCCESS).await == 1.0
    })
    .await;
    assert_eq!(proxy.metric(FAILURE).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_receiver_the_proxy_cannot_verify_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    // Signed by a CA the proxy is not told about: the webpki roots do not have it.
    let (_, server) = private_ca();
    let hook = Hook::start(Some(server), 0).await;
    let notify = format!(
        "webhook = \"https://{}/canary\"\nmax_attempts = 2\nbackoff = \"10ms\"",
        hook.addr
    );
    let proxy = TestProxy::start(&config(dir.path(), upstream.addr, &notify)).await;
    rollback(&proxy).await;
    wait_for("the drop", Duration::from_secs(5), || async {
        proxy.metric(EXHAUSTED).await == 1.0
    })
    .await;
    assert_eq!(proxy.metric(FAILURE).await, 2.0);
    assert_eq!(proxy.metric(SUCCESS).await, 0.0);
    // Both handshakes failed: no request reached the receiver.
    assert_eq!(hook.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_not_sent_by_default_decisions_are() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let mut hook = Hook::start(None, 0).await;
    let path = dir.path().join("proxy.toml");
    let text = config(
        dir.path(),
        upstream.addr,
        &format!("webhook = \"http://{}/hook\"", hook.addr),
    );
    std::fs::write(&path, &text).unwrap();
    let proxy = TestProxy::start_watching(&path).await;
    // Saved the way editors and ConfigMaps do: a new file renamed over the old.
    let tmp = dir.path().join("proxy.toml.tmp~");
    std::fs::write(
        &tmp,
        text.replace("canary_weight = 50", "canary_weight = 40"),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_for("the reload", Duration::from_secs(5), || async {
        proxy.admin_json("/api/v1/routes").await["generation"] == 2
    })
    .await;
    let kinds = |events: serde_json::Value| -> Vec<String> {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(kinds(proxy.admin_json("/api/v1/events").await).contains(&"reload".to_string()));
    rollback(&proxy).await;
    // The first (and only) POST is the rollback: the reload event was filtered out.
    assert_eq!(hook.next().await.json()["kind"], "rollback");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(hook.posts.try_recv().is_err());
    assert_eq!(hook.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_kinds_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let mut hook = Hook::start(None, 0).await;
    let notify = format!(
        "webhook = \"http://{}/hook\"\nevents = [\"resume\"]",
        hook.addr
    );
    let proxy = TestProxy::start(&config(dir.path(), upstream.addr, &notify)).await;
    rollback(&proxy).await;
    let (status, _) = proxy.command("shop", "resume", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let post = hook.next().await;
    assert_eq!(post.json()["kind"], "resume");
    assert_eq!(
        post.json()["text"],
        "canary-proxy: route shop (canary v7) resumed at 50% by operator"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_try() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let mut hook = Hook::start(None, 2).await;
    let secret = write(dir.path(), "hook-secret", "k");
    let notify = format!(
        "webhook = \"http://{}/hook\"\nsecret_file = \"{}\"\nbackoff = \"20ms\"",
        hook.addr,
        secret.display()
    );
    let proxy = TestProxy::start(&config(dir.path(), upstream.addr, &notify)).await;
    let started = tokio::time::Instant::now();
    rollback(&proxy).await;
    let posts = [hook.next().await, hook.next().await, hook.next().await];
    // Two waits: 20 ms, then 40 ms.
    assert!(started.elapsed() >= Duration::from_millis(60));
    // The same event each time, the same signed bytes.
    for post in &posts {
        assert_eq!(post.body, posts[0].body);
        assert!(signed_with(post, "k"));
    }
    assert_eq!(posts[0].json()["kind"], "rollback");
    wait_for("the success counter", Duration::from_secs(2), || async {
        proxy.metric(SUCCESS).await == 1.0
    })
    .await;
    assert_eq!(proxy.metric(FAILURE).await, 2.0);
    assert_eq!(proxy.metric(EXHAUSTED).await, 0.0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hook.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_always_fails_costs_a_counted_drop() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let hook = Hook::start(None, usize::MAX).await;
    let notify = format!(
        "webhook = \"http://{}/hook\"\nmax_attempts = 3\nbackoff = \"10ms\"",
        hook.addr
    );
    let proxy = TestProxy::start(&config(dir.path(), upstream.addr, &notify)).await;
    rollback(&proxy).await;
    wait_for("the drop", Duration::from_secs(5), || async {
        proxy.metric(EXHAUSTED).await == 1.0
    })
    .await;
    assert_eq!(proxy.metric(FAILURE).await, 3.0);
    assert_eq!(proxy.metric(SUCCESS).await, 0.0);
    assert_eq!(proxy.metric(QUEUE_FULL).await, 0.0);
    assert_eq!(hook.requests(), 3);
    // Requests were never held up.
    let (status, _, _) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_secret_on_disk_signs_the_next_event() {
    let dir = tempfile::tempdir().unwrap();
    let upstream = MockUpstream::start("app").await;
    let mut hook = Hook::start(None, 0).await;
    let secret = write(dir.path(), "hook-secret", "first");
    let path = dir.path().join("proxy.toml");
    let notify = format!(
        "webhook = \"http://{}/hook\"\nsecret_file = \"{}\"",
        hook.addr,
        secret.display()
    );
    std::fs::write(&path, config(dir.path(), upstream.addr, &notify)).unwrap();
    let proxy = TestProxy::start_watching(&path).await;
    rollback(&proxy).await;
    assert!(signed_with(&hook.next().await, "first"));

    // Only the secret file changes: the watch follows it, like the admin token.
    let tmp = dir.path().join("hook-secret.tmp");
    std::fs::write(&tmp, "second\n").unwrap();
    std::fs::rename(&tmp, &secret).unwrap();
    wait_for("the reload", Duration::from_secs(5), || async {
        proxy.admin_json("/api/v1/routes").await["generation"] == 2
    })
    .await;
    let (status, _) = proxy.command("shop", "resume", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let post = hook.next().await;
    assert_eq!(post.json()["kind"], "resume");
    assert!(signed_with(&post, "second"));
    assert!(!signed_with(&post, "first"));
}
