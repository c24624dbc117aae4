//! The training run of a profile-guided build (`benches/pgo.sh`): starts two upstreams
//! in this process, runs the instrumented canary-proxy named on the command line
//! against them, sends it a fixed mix of requests, and stops it with SIGTERM so that it
//! writes its profile (to `LLVM_PROFILE_FILE`, which the child inherits).
//!
//! `cargo run --release --example pgo_train -- PATH/TO/INSTRUMENTED/canary-proxy`
//! (the proxy logs at `RUST_LOG`, default `error`, to this run's stderr)
//!
//! The mix is what the proxy spends its time on in production, by weight: HTTP/1.1
//! keep-alive GETs with a sticky key (both sides), then POSTs with a body, HTTP/2
//! (h2c) streams, upstream error statuses and requests no route takes. Every loop is
//! bounded by count, and every wait by time; any failure exits non-zero, so a broken
//! build never yields a profile.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// Keep-alive connections for the GET phase, and requests on each.
const GET_CONNECTIONS: usize = 64;
const GETS_PER_CONNECTION: usize = 1_500;
/// POSTs with a 2 KiB body, on a few connections.
const POST_CONNECTIONS: usize = 8;
const POSTS_PER_CONNECTION: usize = 250;
/// HTTP/2 prior-knowledge connections, concurrent streams on each, rounds of streams.
const H2_CONNECTIONS: usize = 4;
const H2_STREAMS: usize = 8;
const H2_ROUNDS: usize = 250;
/// Requests answered 503 by the upstream, and requests for a host no route serves.
const ERRORS: usize = 500;
/// The longest any one step may take before the run gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

type Body = Full<Bytes>;
type Failure = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let Some(binary) = std::env::args().nth(1) else {
        eprintln!("usage: pgo_train PATH/TO/INSTRUMENTED/canary-proxy");
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgo_train: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(train(&binary)) {
        Ok(requests) => {
            eprintln!("pgo_train: {requests} requests answered; the proxy exited cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgo_train: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn train(binary: &str) -> Result<usize, Failure> {
    let stable = upstream("stable").await?;
    let canary = upstream("canary").await?;
    let listen = free_addr().await?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("train.toml");
    std::fs::write(&config, config_toml(listen, stable, canary))?;
    let mut proxy = Proxy(
        Command::new(binary)
            .args(["run", "-c"])
            .arg(&config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_for_port(listen, &mut proxy).await?;

    let mut answered = 0;
    answered += step("GET", gets(listen)).await?;
    answered += step("POST", posts(listen)).await?;
    answered += step("h2c", h2(listen)).await?;
    answered += step("errors", errors(listen)).await?;

    let status = proxy.stop().await?;
    if !status.success() {
        return Err(format!("the proxy exited with {status}").into());
    }
    Ok(answered)
}

/// The proxy under training; killed if the run fails before it is stopped.
struct Proxy(Child);

impl Proxy {
    /// SIGTERM (a drain and a clean exit, which writes the profile), then waits.
    async fn stop(&mut self) -> Result<std::process::ExitStatus, Failure> {
        let pid = self.0.id().to_string();
        let kill = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !kill.success() {
            return Err("kill -TERM failed".into());
        }
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the proxy did not exit within 30 s of SIGTERM".into())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn config_toml(listen: SocketAddr, stable: SocketAddr, canary: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "{listen}"

[[route]]
name = "train"
host = "train.local"
stable = {{ endpoints = ["{stable}"] }}
canary = {{ endpoints = ["{canary}"] }}
canary_weight = 10
sticky = ["header:x-user-id"]

[route.budget]
max_error_rate = 0.9
"#
    )
}

async fn step(
    name: &str,
    work: impl std::future::Future<Output = Result<usize, Failure>>,
) -> Result<usize, Failure> {
    match tokio::time::timeout(STEP_TIMEOUT, work).await {
        Ok(Ok(n)) => {
            eprintln!("pgo_train: {name}: {n} requests");
            Ok(n)
        }
        Ok(Err(e)) => Err(format!("{name}: {e}").into()),
        Err(_) => Err(format!("{name}: not done within {STEP_TIMEOUT:?}").into()),
    }
}

/// Keep-alive GETs, each connection a different set of users (both sides answer).
async fn gets(proxy: SocketAddr) -> Result<usize, Failure> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..GET_CONNECTIONS {
        tasks.spawn(async move {
            let mut send = h1(proxy).await?;
            for i in 0..GETS_PER_CONNECTION {
                let user = format!("user-{}", c * 31 + i % 97);
                let req = request("GET", "/", Some(&user), Bytes::new())?;
                send.ready().await?;
                expect(send.send_request(req).await?, StatusCode::OK).await?;
            }
            Ok::<_, Failure>(GETS_PER_CONNECTION)
        });
    }
    join(tasks).await
}

async fn posts(proxy: SocketAddr) -> Result<usize, Failure> {
    let body = Bytes::from(vec![b'x'; 2048]);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..POST_CONNECTIONS {
        let body = body.clone();
        tasks.spawn(async move {
            let mut send = h1(proxy).await?;
            for i in 0..POSTS_PER_CONNECTION {
                let user = format!("user-{}", c * 31 + i % 97);
                let req = request("POST", "/orders", Some(&user), body.clone())?;
                send.ready().await?;
                expect(send.send_request(req).await?, StatusCode::OK).await?;
            }
            Ok::<_, Failure>(POSTS_PER_CONNECTION)
        });
    }
    join(tasks).await
}

/// HTTP/2 prior knowledge: several concurrent streams per connection.
async fn h2(proxy: SocketAddr) -> Result<usize, Failure> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..H2_CONNECTIONS {
        tasks.spawn(async move {
            let io = TokioIo::new(TcpStream::connect(proxy).await?);
            let (send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            for round in 0..H2_ROUNDS {
                let mut streams = tokio::task::JoinSet::new();
                for s in 0..H2_STREAMS {
                    let mut send = send.clone();
                    let user = format!("user-{}", c * 31 + (round * H2_STREAMS + s) % 97);
                    let req = Request::get("http://train.local/")
                        .header("x-user-id", user)
                        .body(Full::new(Bytes::new()))?;
                    streams.spawn(async move {
                        send.ready().await?;
                        expect(send.send_request(req).await?, StatusCode::OK).await?;
                        Ok::<_, Failure>(1)
                    });
                }
                join(streams).await?;
            }
            Ok::<_, Failure>(H2_ROUNDS * H2_STREAMS)
        });
    }
    join(tasks).await
}

/// Upstream 503s (counted against the side), and a host no route serves (404).
async fn errors(proxy: SocketAddr) -> Result<usize, Failure> {
    let mut send = h1(proxy).await?;
    for i in 0..ERRORS {
        let user = format!("user-{}", i % 97);
        let req = request("GET", "/unavailable", Some(&user), Bytes::new())?;
        send.ready().await?;
        expect(
            send.send_request(req).await?,
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await?;
        let mut req = request("GET", "/", None, Bytes::new())?;
        req.headers_mut()
            .insert(http::header::HOST, "elsewhere.local".parse()?);
        send.ready().await?;
        expect(send.send_request(req).await?, StatusCode::NOT_FOUND).await?;
    }
    Ok(2 * ERRORS)
}

async fn h1(proxy: SocketAddr) -> Result<hyper::client::conn::http1::SendRequest<Body>, Failure> {
    let stream = TcpStream::connect(proxy).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn request(
    method: &str,
    path: &str,
    user: Option<&str>,
    body: Bytes,
) -> Result<Request<Body>, Failure> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "train.local")
        .header(http::header::USER_AGENT, "pgo_train")
        .header(http::header::ACCEPT, "*/*");
    if let Some(user) = user {
        req = req.header("x-user-id", user);
    }
    Ok(req.body(Full::new(body))?)
}

/// Reads the whole response, and fails unless it has `status`.
async fn expect(response: Response<Incoming>, status: StatusCode) -> Result<(), Failure> {
    let got = response.status();
    response.into_body().collect().await?;
    if got != status {
        return Err(format!("expected {status}, got {got}").into());
    }
    Ok(())
}

async fn join(mut tasks: tokio::task::JoinSet<Result<usize, Failure>>) -> Result<usize, Failure> {
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done??;
    }
    Ok(total)
}

/// An upstream like the benchmark's nginx: a short text body, `Content-Type`,
/// `Connection: keep-alive`; `/unavailable` answers 503, a POST's body is read.
async fn upstream(name: &'static str) -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let status = if req.uri().path() == "/unavailable" {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    let _ = req.into_body().collect().await;
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("server", "pgo-train")
                            .header("content-type", "text/plain")
                            .header("connection", "keep-alive")
                            .body(Full::new(Bytes::from(format!("{name}\n"))))
                            .unwrap_or_default(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A port nothing listens on, for the proxy's `listen`: released at once, and bound
/// by the proxy moments later. Should another process take it first, the proxy exits
/// and `wait_for_port` says so.
async fn free_addr() -> Result<SocketAddr, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?)
}

/// Until the proxy listens on `addr`: at most 10 s, and failing at once if it exits.
async fn wait_for_port(addr: SocketAddr, proxy: &mut Proxy) -> Result<(), Failure> {
    for _ in 0..200 {
        if let Some(status) = proxy.0.try_wait()? {
            return Err(format!("the proxy exited before listening on {addr}: {status}").into());
        }
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the proxy did not listen on {addr} within 10 s").into())
}
