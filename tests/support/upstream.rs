//! Mock upstreams that run in the test process, on 127.0.0.1.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::body::{empty, text, Generated, TestBody};

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
        let listener = canary_proxy::listen::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        MockUpstream::serve(listener, name)
    }

    /// Starts on `addr` (that of an upstream just dropped: a restart).
    pub async fn start_on(addr: SocketAddr, name: &'static str) -> MockUpstream {
        for _ in 0..100 {
            if let Ok(listener) = canary_proxy::listen::listen(addr) {
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

/// Records the request in `seen`, answers by its path (see [`MockUpstream`]) and
/// signs the answer with `x-served-by`.
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
    let mut response = match first {
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
        "upload" => upload(req).await,
        "download" => download(arg.parse().unwrap_or(0)),
        "trailers" => trailers(req).await,
        "ws" => websocket_echo(&mut req),
        "grpc" => grpc(arg),
        _ => {
            let every = seen.fail_every.load(Ordering::SeqCst);
            if every > 0 && nth.is_multiple_of(every) {
                text(StatusCode::INTERNAL_SERVER_ERROR, name)
            } else {
                text(StatusCode::OK, name)
            }
        }
    };
    response
        .headers_mut()
        .insert("x-served-by", name.parse().unwrap());
    response
}

/// `/upload`: reads the whole body frame by frame; answers the byte count.
async fn upload(req: Request<Incoming>) -> Response<TestBody> {
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

/// `/download/N`: `n` generated bytes with their `content-length`.
fn download(n: u64) -> Response<TestBody> {
    let mut response = Response::new(Generated::new(n).boxed());
    response
        .headers_mut()
        .insert("content-length", n.to_string().parse().unwrap());
    response
}

/// `/trailers`: counts the request's trailer fields; answers a body with trailers
/// `x-checksum: 42` and `x-request-trailers: COUNT`.
async fn trailers(req: Request<Incoming>) -> Response<TestBody> {
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
    let mut response =
        Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed());
    // hyper's HTTP/1.1 encoder only sends trailer fields declared here.
    response
        .headers_mut()
        .insert("trailer", "x-checksum, x-request-trailers".parse().unwrap());
    response
}

/// `/ws`: 101 to `websocket`, then echoes the upgraded connection's bytes.
fn websocket_echo(req: &mut Request<Incoming>) -> Response<TestBody> {
    let on_upgrade = hyper::upgrade::on(req);
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

/// `/grpc/N`: 200 `application/grpc`, an empty message and trailer `grpc-status: N`.
fn grpc(status: &str) -> Response<TestBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", status.parse().unwrap());
    let frames = vec![
        Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut response =
        Response::new(http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    response
}
