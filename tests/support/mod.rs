//! Shared end-to-end harness: mock upstreams and an in-process proxy, all on
//! 127.0.0.1:0.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use canary_proxy::app::App;
use canary_proxy::config::parse_str;

pub type TestBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

/// What a mock upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    /// Connections accepted so far, and those still open.
    pub connections: AtomicUsize,
    pub open_connections: AtomicUsize,
    /// 0: never fail; N: every Nth request to the default path answers 500.
    pub fail_every: AtomicUsize,
    pub heads: Mutex<Vec<(http::Method, http::Uri, HeaderMap)>>,
}

/// An upstream that runs in the test process. Paths:
/// - `/status/N`: answers N
/// - `/slow/MS`: waits MS milliseconds, then 200
/// - `/hang`: never answers
/// - `/upload`: reads the whole body in chunks, answers the byte count
/// - `/download/N`: streams N bytes
/// - `/trailers`: echoes request trailers' count and sends trailer `x-checksum: 42`
/// - `/ws`: `Upgrade` → 101, then echoes bytes
/// - `/grpc/N`: 200 `application/grpc` with trailer `grpc-status: N`
/// - `/close`: 200 with `Connection: close` (the upstream then closes the connection)
/// - anything else: 200 with body = the upstream's name, or 500 per `fail_every`
///
/// Every response carries `x-served-by: NAME`.
pub struct MockUpstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    task: JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start(name: &'static str) -> MockUpstream {
        let listener = canary_proxy::proxy::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        MockUpstream::serve(listener, name)
    }

    /// Starts on `addr` (that of an upstream just dropped: a restart).
    pub async fn start_on(addr: SocketAddr, name: &'static str) -> MockUpstream {
        for _ in 0..100 {
            if let Ok(listener) = canary_proxy::proxy::listen(addr) {
                return MockUpstream::serve(listener, name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{addr} stayed taken");
    }

    fn serve(listener: TcpListener, name: &'static str) -> MockUpstream {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let seen2 = Arc::clone(&seen);
        // Dropping the upstream closes its listener and every connection.
        let (closed_tx, closed) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            let _closed_tx = closed_tx;
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen2);
                seen.connections.fetch_add(1, Ordering::SeqCst);
                seen.open_connections.fetch_add(1, Ordering::SeqCst);
                let mut closed = closed.clone();
                tokio::spawn(async move {
                    let open = Arc::clone(&seen);
                    let svc = service_fn(move |req| {
                        let seen = Arc::clone(&seen);
                        async move { Ok::<_, Infallible>(mock_handle(name, seen, req).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = closed.changed() => {}
                    }
                    open.open_connections.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        MockUpstream {
            name,
            addr,
            seen,
            task,
        }
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.seen.connections.load(Ordering::SeqCst)
    }

    /// Connections open right now.
    pub fn open_connections(&self) -> usize {
        self.seen.open_connections.load(Ordering::SeqCst)
    }

    /// Every `n`th request to the default path fails with 500 (1: all, 0: none).
    pub fn fail_every(&self, n: usize) {
        self.seen.fail_every.store(n, Ordering::SeqCst);
    }

    pub fn last_headers(&self) -> HeaderMap {
        self.seen.heads.lock().unwrap().last().unwrap().2.clone()
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn mock_handle(
    name: &'static str,
    seen: Arc<Seen>,
    mut req: Request<Incoming>,
) -> Response<TestBody> {
    let nth = seen.requests.fetch_add(1, Ordering::SeqCst) + 1;
    {
        let mut heads = seen.heads.lock().unwrap();
        if heads.len() < 10_000 {
            heads.push((
                req.method().clone(),
                req.uri().clone(),
                req.headers().clone(),
            ));
        }
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let first = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    let response = match first {
        "status" => {
            let code = arg.parse().unwrap_or(500);
            text(StatusCode::from_u16(code).unwrap(), name)
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(arg.parse().unwrap_or(100))).await;
            text(StatusCode::OK, name)
        }
        "close" => {
            let mut response = text(StatusCode::OK, name);
            response
                .headers_mut()
                .insert("connection", "close".parse().unwrap());
            response
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            text(StatusCode::OK, name)
        }
        "upload" => {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Some(data) = frame.data_ref() {
                            total += data.len() as u64;
                        }
                    }
                    Err(_) => return text(StatusCode::BAD_REQUEST, "body error"),
                }
            }
            text(StatusCode::OK, total.to_string())
        }
        "download" => {
            let n: u64 = arg.parse().unwrap_or(0);
            let mut response = Response::new(Generated::new(n).boxed());
            response
                .headers_mut()
                .insert("content-length", n.to_string().parse().unwrap());
            response
        }
        "trailers" => {
            let mut body = req.into_body();
            let mut request_trailers = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(t) = frame.trailers_ref() {
                    request_trailers += t.len();
                }
            }
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", "42".parse().unwrap());
            trailers.insert(
                "x-request-trailers",
                request_trailers.to_string().parse().unwrap(),
            );
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"hello "))),
                Ok(Frame::data(Bytes::from_static(b"trailers"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response = Response::new(
                http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            );
            // hyper's HTTP/1.1 encoder only sends trailer fields declared here.
            response
                .headers_mut()
                .insert("trailer", "x-checksum, x-request-trailers".parse().unwrap());
            response
        }
        "ws" => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            let mut response = Response::new(empty());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            response
                .headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            response
                .headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            response
        }
        "grpc" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", arg.parse().unwrap());
            let frames = vec![
                Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let mut response = Response::new(
                http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed(),
            );
            response
                .headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            response
        }
        _ => {
            let every = seen.fail_every.load(Ordering::SeqCst);
            if every > 0 && nth % every == 0 {
                text(StatusCode::INTERNAL_SERVER_ERROR, name)
            } else {
                text(StatusCode::OK, name)
            }
        }
    };
    let mut response = response;
    response
        .headers_mut()
        .insert("x-served-by", name.parse().unwrap());
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut response = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
}

pub fn empty() -> TestBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A body of `remaining` bytes produced in 64 KiB chunks, never held whole.
pub struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    pub fn new(n: u64) -> Generated {
        Generated {
            remaining: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

/// Polls `check` every 10 ms until it holds; panics after `timeout`. Returns how long
/// it took.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A free ephemeral port, released for the caller to listen on.
pub async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A port nobody listens on, for the rest of the test process: a socket bound to it
/// (without SO_REUSEADDR) and never listening, so connections are refused and no other
/// test's listener can take the port (a released port could be, by a test running in
/// parallel, and answer).
pub async fn refused_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Held until the test process exits.
    std::mem::forget(socket);
    addr
}

/// A proxy serving in this process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: Option<SocketAddr>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestProxy {
    /// Starts a proxy from a TOML config; its `[server] listen` is forced to
    /// 127.0.0.1:0 when absent.
    pub async fn start(toml: &str) -> TestProxy {
        let toml = if toml.contains("[server]") {
            toml.to_string()
        } else {
            format!("[server]\nlisten = \"127.0.0.1:0\"\n{toml}")
        };
        let config = match parse_str(&toml, Path::new("test.toml")) {
            Ok(config) => config,
            Err(errors) => panic!("invalid test config: {errors:#?}\n{toml}"),
        };
        TestProxy::serve(App::bind(config).await.unwrap())
    }

    /// Starts a proxy from a config file that it watches for changes (hot reload).
    pub async fn start_watching(path: &Path) -> TestProxy {
        let config = canary_proxy::config::Config::load(path).unwrap();
        let app = App::bind(config).await.unwrap();
        TestProxy::serve(app.reload_from(path.to_path_buf()))
    }

    /// Serves `app` (bound and configured by the caller, e.g. with a shorter history
    /// interval) on a task until `stop` (or drop).
    pub fn serve(app: App) -> TestProxy {
        let addr = app.local_addr().unwrap();
        let admin = app.admin_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(async move {
            let _ = rx.await;
        }));
        TestProxy {
            addr,
            admin,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The value of a metric line `NAME{LABELS} VALUE` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = get(&client(), &self.admin_url("/metrics"), &[]).await.2;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{}",
            self.admin.expect("no [admin] in this config"),
            path
        )
    }

    /// GET an admin JSON endpoint.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = get(&client(), &self.admin_url(path), &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The `/api/v1/routes` entry of `name`.
    pub async fn route_status(&self, name: &str) -> serde_json::Value {
        let routes = self.admin_json("/api/v1/routes").await;
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no route {name} in {routes}"))
    }

    /// POST an admin command with an optional bearer token.
    pub async fn command(
        &self,
        route: &str,
        action: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        let mut req = Request::post(self.admin_url(&format!("/api/v1/routes/{route}/{action}")));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = client().request(req.body(empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Signals shutdown and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// A route config with the two mock upstreams.
pub fn route_toml(
    name: &str,
    stable: SocketAddr,
    canary: SocketAddr,
    weight: f64,
    extra: &str,
) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nstable = {{ endpoints = [\"{stable}\"] }}\ncanary = {{ endpoints = [\"{canary}\"], version = \"v2\" }}\ncanary_weight = {weight}\n{extra}\n"
    )
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    TestBody,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// GET `url` with extra headers; returns status, headers and the body as a string.
pub async fn get(
    client: &Client,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = client.request(req.body(empty()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Writes raw bytes on a fresh connection and reads until the peer closes or goes
/// quiet for `idle`.
pub async fn raw(addr: SocketAddr, request: &[u8], idle: Duration) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A child process killed (and reaped) when dropped, also when an assertion fails.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
