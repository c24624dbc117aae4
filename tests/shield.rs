//! Shielding (SPEC §11): the keep-alive race is not an error, a failed canary attempt
//! is answered by stable while the judgement still sees it, the retry budget holds,
//! and a dead endpoint within a side costs no request. Real sockets throughout.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ERRORS: &str = "canary_proxy_upstream_errors_total";

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

/// An HTTP/1.1 upstream that answers the first request on each connection and, on the
/// second, reads it and closes without a reply: the keep-alive race, every time.
async fn closes_on_second_request() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for nth in 1.. {
                    // Read one request head (and a small declared body).
                    loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let body = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + body {
                                buf.drain(..end + 4 + body);
                                break;
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if nth >= 2 {
                        return; // read it, close without replying
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Smallest failing input of the issue: GET twice, 300 ms apart, on a reused
/// connection the upstream closes. Right: 200 twice, no error of either side, one
/// `keepalive_race` retry. A POST was sent and may have been acted on: not retried.
#[tokio::test]
async fn the_keepalive_race_is_retried_when_safe_and_never_an_error() {
    let racy = closes_on_second_request().await;
    let stable = MockUpstream::start("stable").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        route_toml("r", stable.addr, racy, 100.0, "")
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    for _ in 0..2 {
        let (status, _, body) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for kind in ["connect", "timeout", "reset", "protocol", "status"] {
        let s = series(
            ERRORS,
            &format!("route=\"r\",upstream=\"canary\",kind=\"{kind}\""),
        );
        assert_eq!(proxy.metric(&s).await, 0.0, "{s}");
    }
    let retries = series(
        "canary_proxy_retries_total",
        "route=\"r\",upstream=\"canary\",reason=\"keepalive_race\"",
    );
    assert_eq!(proxy.metric(&retries).await, 1.0);

    // POST is not idempotent and was written: the client gets the 502, and it counts.
    let proxy = TestProxy::start(&toml).await;
    let post = |proxy: &TestProxy| {
        let req = Request::post(proxy.url("/")).body(full("x")).unwrap();
        client.request(req)
    };
    assert_eq!(post(&proxy).await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post(&proxy).await.unwrap().status(),
        StatusCode::BAD_GATEWAY
    );
    let reset = series(ERRORS, "route=\"r\",upstream=\"canary\",kind=\"reset\"");
    assert_eq!(proxy.metric(&reset).await, 1.0);
    assert_eq!(proxy.metric(&retries).await, 0.0);
}

fn shielded_route(stable: SocketAddr, canary: SocketAddr, shield: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nmode = \"threshold\"\nmin_requests = 20\nmax_error_rate = 0.5\nwindow = \"1m\"\n{shield}",
        route_toml("r", stable, canary, 100.0, "")
    )
}

/// Canary fails every request; the shield answers each from stable. The judgement is
/// unchanged: the rollback comes after the same number of canary requests as without
/// the shield, and `shielded_total` counts exactly the canary failures before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_costs_users_nothing_and_is_rolled_back_as_fast() {
    let mut rolled_back_after = Vec::new();
    // The burst at the start (20 failures in a few ms, every request a canary one)
    // would outrun the default 10 retries/s minimum: this route allows 50.
    let with_shield = "[route.shield]\nstatuses = [\"5xx\"]\nmin_retries_per_second = 50\n";
    for shield in ["", with_shield] {
        let stable = MockUpstream::start("stable").await;
        let canary = MockUpstream::start("canary").await;
        canary.fail_every(1);
        let proxy = TestProxy::start(&shielded_route(stable.addr, canary.addr, shield)).await;
        let client = client();
        let mut ok_from_stable = 0;
        for _ in 0..1000 {
            let (status, headers, _) = get(&client, &proxy.url("/"), &[]).await;
            if status == StatusCode::OK && headers["x-served-by"] == "stable" {
                ok_from_stable += 1;
            }
        }
        wait_for("the rollback", Duration::from_secs(5), || async {
            proxy.route_status("r").await["state"] == "rolled_back"
        })
        .await;
        rolled_back_after.push(canary.requests());
        let shielded = proxy
            .metric(&series("canary_proxy_shielded_total", "route=\"r\""))
            .await;
        let seen_2xx = proxy
            .metric(&series(
                "canary_proxy_responses_total",
                "route=\"r\",class=\"2xx\"",
            ))
            .await;
        let status = proxy.route_status("r").await;
        assert_eq!(status["responses"], 1000);
        assert_eq!(status["shielded"].as_f64().unwrap(), shielded);
        if shield.is_empty() {
            assert_eq!(ok_from_stable, 1000 - canary.requests());
            assert_eq!(shielded, 0.0);
            let rate = status["user_error_rate"].as_f64().unwrap();
            assert!(
                (rate - canary.requests() as f64 / 1000.0).abs() < 1e-9,
                "{status}"
            );
        } else {
            assert_eq!(status["user_error_rate"], 0.0, "{status}");
            assert_eq!(ok_from_stable, 1000, "every user got stable's 200");
            assert_eq!(shielded, canary.requests() as f64);
            assert_eq!(seen_2xx, 1000.0);
            let attempts = series(
                "canary_proxy_requests_total",
                "route=\"r\",upstream=\"canary\",class=\"5xx\"",
            );
            assert_eq!(proxy.metric(&attempts).await, canary.requests() as f64);
        }
    }
    assert_eq!(rolled_back_after[0], 20, "{rolled_back_after:?}");
    assert_eq!(rolled_back_after[0], rolled_back_after[1]);
}

/// An upstream served by `handle`, on 127.0.0.1:0.
async fn serve_fn<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = handle.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn status_response(status: StatusCode, body: &'static str) -> Response<TestBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
}

/// A 1 MiB streamed POST to a failing canary is not retried (larger than
/// `max_body_bytes`): the client gets the canary's 503, and the body was streamed, not
/// held: the canary had read most of it before the client sent the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_streamed_body_is_never_buffered_or_retried() {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let canary = serve_fn(move |req: Request<Incoming>| {
        let counter = Arc::clone(&counter);
        async move {
            let mut body = req.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    counter.fetch_add(data.len(), Ordering::SeqCst);
                }
            }
            status_response(StatusCode::SERVICE_UNAVAILABLE, "canary says no")
        }
    })
    .await;
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&shielded_route(
        stable.addr,
        canary,
        "[route.shield]\nmethods = [\"GET\", \"POST\"]\nmax_body_bytes = 65536\n",
    ))
    .await;

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, hyper::Error>>(4);
    let body = StreamBody::new(tokio_stream_from(rx)).boxed();
    let req = Request::post(proxy.url("/upload")).body(body).unwrap();
    let response = tokio::spawn(client().request(req));
    let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..4 {
        tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
    }
    // 256 KiB sent: the canary must see most of it before we send any more.
    wait_for(
        "the canary to read the streamed body",
        Duration::from_secs(5),
        || {
            let received = Arc::clone(&received);
            async move { received.load(Ordering::SeqCst) >= 128 * 1024 }
        },
    )
    .await;
    for _ in 4..16 {
        tx.send(Ok(Frame::data(chunk.clone()))).await.unwrap();
    }
    drop(tx);
    let response = response.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"canary says no");
    assert_eq!(received.load(Ordering::SeqCst), 1024 * 1024);
    assert_eq!(stable.requests(), 0, "never retried");
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A dead canary at 50 % under load, observe-only so it is never rolled back: shield
/// retries stay within `budget_ratio` of the route's requests (plus the per-second
/// minimum, here 0), and the budget says when it bites.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_the_load_a_dead_canary_puts_on_stable() {
    let stable = MockUpstream::start("stable").await;
    let dead = refused_addr().await;
    let proxy = TestProxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nenforce = false\n[route.shield]\nbudget_ratio = 0.2\nmin_retries_per_second = 0\n",
        route_toml("r", stable.addr, dead, 50.0, "sticky = [\"header:x-user\"]")
    ))
    .await;
    let total = 800usize;
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let url = proxy.url("/");
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut ok = 0;
            for i in 0..total / 8 {
                let user = format!("user-{worker}-{i}");
                let (status, _, _) = get(&client, &url, &[("x-user", &user)]).await;
                ok += usize::from(status == StatusCode::OK);
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    let retries = proxy
        .metric(&series(
            "canary_proxy_retries_total",
            "route=\"r\",upstream=\"stable\",reason=\"shield\"",
        ))
        .await;
    let exhausted = proxy
        .metric(&series(
            "canary_proxy_retry_budget_exhausted_total",
            "route=\"r\"",
        ))
        .await;
    let to_canary = total - (stable.requests() - retries as usize);
    assert!(
        to_canary > total / 4,
        "about half go to the canary: {to_canary}"
    );
    assert!(
        retries <= 0.2 * total as f64 + 0.2 * (total as f64) * 0.5,
        "retries {retries} within budget_ratio of {total} requests (plus one window's carry)"
    );
    assert!(retries > 0.0, "the budget allows some");
    assert!(exhausted > 0.0, "and then bites");
    assert_eq!(ok, total - to_canary + retries as usize);
    // Stable's load: its own share plus the retries, never the whole canary share.
    assert!(stable.requests() < total - to_canary + to_canary / 2);
}

/// Stable with two endpoints, one of them dead: the dead one's connect failures are
/// retried on the other (no request fails), it is ejected after `max_fails` and tried
/// again after `fail_timeout`.
#[tokio::test]
async fn a_dead_endpoint_costs_no_request_and_is_ejected() {
    let live = MockUpstream::start("live").await;
    let dead = refused_addr().await;
    let proxy = TestProxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"{dead}\", \"{}\"], max_fails = 2, fail_timeout = \"500ms\" }}\ncanary = {{ endpoints = [\"{}\"] }}\ncanary_weight = 0\n",
        live.addr, live.addr
    ))
    .await;
    let client = client();
    let ejections = series(
        "canary_proxy_endpoint_ejections_total",
        "route=\"r\",upstream=\"stable\"",
    );
    let connect_retries = series(
        "canary_proxy_retries_total",
        "route=\"r\",upstream=\"stable\",reason=\"connect\"",
    );
    for _ in 0..20 {
        let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(proxy.metric(&ejections).await, 1.0);
    assert_eq!(
        proxy.metric(&connect_retries).await,
        2.0,
        "two failures, then ejected"
    );
    assert_eq!(live.requests(), 20);

    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..10 {
        let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        proxy.metric(&ejections).await,
        2.0,
        "tried again, ejected again"
    );
    assert_eq!(proxy.metric(&connect_retries).await, 3.0);
    // Every failed attempt counted against its side.
    let connect_errors = series(ERRORS, "route=\"r\",upstream=\"stable\",kind=\"connect\"");
    assert_eq!(proxy.metric(&connect_errors).await, 3.0);
}

/// A hanging canary: after `per_try_timeout` stable answers; the canary's timeout
/// counts against it.
#[tokio::test]
async fn a_hanging_canary_is_cut_at_the_per_try_timeout() {
    let hanging = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let canary = hanging.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = hanging.accept().await {
            held.push(stream); // read nothing, answer nothing
        }
    });
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&shielded_route(
        stable.addr,
        canary,
        "[route.shield]\nper_try_timeout = \"200ms\"\n",
    ))
    .await;
    let start = tokio::time::Instant::now();
    let (status, headers, _) = get(&client(), &proxy.url("/"), &[]).await;
    let took = start.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-served-by"], "stable");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    let timeouts = series(ERRORS, "route=\"r\",upstream=\"canary\",kind=\"timeout\"");
    assert_eq!(proxy.metric(&timeouts).await, 1.0);
}

/// gRPC has no idempotency flag: a call that never left (no connection to the canary)
/// is shielded; one that may have reached the application is not, even with a status
/// the shield would otherwise retry.
#[tokio::test]
async fn grpc_is_shielded_only_when_nothing_was_sent() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let dead = refused_addr().await;
    let h2_route = |canary: SocketAddr| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"{}\"], protocol = \"h2\" }}\ncanary = {{ endpoints = [\"{canary}\"], protocol = \"h2\" }}\ncanary_weight = 100\n[route.shield]\nstatuses = [\"5xx\"]\nmethods = [\"GET\", \"POST\"]\n",
            stable.addr
        )
    };
    let call = |proxy: &TestProxy, path: &str| {
        let req = Request::post(proxy.url(path))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(full(&b"\0\0\0\0\0"[..]))
            .unwrap();
        h2_client().request(req)
    };

    let proxy = TestProxy::start(&h2_route(dead)).await;
    let response = call(&proxy, "/grpc/0").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-served-by"], "stable");
    let shielded = series("canary_proxy_shielded_total", "route=\"r\"");
    assert_eq!(proxy.metric(&shielded).await, 1.0);

    let proxy = TestProxy::start(&h2_route(canary.addr)).await;
    let response = call(&proxy, "/status/503").await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["x-served-by"], "canary", "not retried");
    assert_eq!(proxy.metric(&shielded).await, 0.0);
    assert_eq!(stable.requests(), 1);
}

/// The per-try timeout only cuts attempts stable could take over: a POST (not in
/// `methods`) to a slow canary keeps the whole request_timeout and gets its answer.
#[tokio::test]
async fn a_request_that_cannot_be_retried_keeps_the_whole_request_timeout() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&shielded_route(
        stable.addr,
        canary.addr,
        "[route.shield]\nper_try_timeout = \"100ms\"\n",
    ))
    .await;
    let req = Request::post(proxy.url("/slow/400"))
        .body(full("x"))
        .unwrap();
    let response = client().request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-served-by"], "canary");
    let timeouts = series(ERRORS, "route=\"r\",upstream=\"canary\",kind=\"timeout\"");
    assert_eq!(proxy.metric(&timeouts).await, 0.0);
    assert_eq!(stable.requests(), 0);
}

/// A shielded status counts against the canary even when `error_statuses` would not
/// count it (SPEC §11: the failure still counts).
#[tokio::test]
async fn a_shielded_status_counts_against_the_canary_whatever_error_statuses_says() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}[route.budget]\nerror_statuses = [500]\n[route.shield]\nstatuses = [429]\n",
        route_toml("r", stable.addr, canary.addr, 100.0, "")
    ))
    .await;
    let (status, headers, _) = get(&client(), &proxy.url("/status/429"), &[]).await;
    // Stable answers the same path with its own 429: the client gets stable's.
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers["x-served-by"], "stable");
    let errors = series(ERRORS, "route=\"r\",upstream=\"canary\",kind=\"status\"");
    assert_eq!(proxy.metric(&errors).await, 1.0);
}
