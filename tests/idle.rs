//! Idle keep-alive connections are parked (hyper's connection and its buffers freed,
//! the socket kept) and served again by their next request (issue 17), over raw
//! sockets so the same connection is used throughout.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PARKED: &str = "canary_proxy_parked_connections";

/// `header_read_timeout = "2s"`: the sweep runs every 500 ms, so a connection idle
/// since one sweep is parked at the next (within ~1 s) and closed 2 to 3 s after its
/// last response.
async fn setup() -> (MockUpstream, TestProxy) {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"2s\"\ndrain_timeout = \"10s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{}",
        route_toml("r", stable.addr, stable.addr, 0.0, "")
    ))
    .await;
    (stable, proxy)
}

const GET: &[u8] = b"GET /again HTTP/1.1\r\nhost: x\r\n\r\n";

/// Reads one response (head, then a `content-length` body) off `stream`.
async fn response(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {got:?}");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

async fn parked(proxy: &TestProxy, n: f64) {
    let mut last = -1.0;
    for _ in 0..60 {
        last = proxy.metric(PARKED).await;
        if last == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{PARKED} = {last}, expected {n} within 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_parked_and_serves_its_next_request_then_times_out() {
    let (stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    parked(&proxy, 1.0).await;

    // The next request on the same socket builds a new hyper connection.
    stream.write_all(GET).await.unwrap();
    let second = response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(stable.requests(), 2);
    assert_eq!(stable.connections(), 1, "one upstream connection, reused");
    parked(&proxy, 0.0).await;

    // Parked again, and still closed by the header deadline (2 to 3 s of idleness).
    parked(&proxy, 1.0).await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
    parked(&proxy, 0.0).await;
}

/// Bytes hyper read but had not parsed when it was parked (the start of a head) are
/// read again by the next hyper connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_begun_before_the_park_is_finished_after_it() {
    let (stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
        .write_all(b"GET /half HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    parked(&proxy, 1.0).await;
    stream.write_all(b"x-late: 1\r\n\r\n").await.unwrap();
    let second = response(&mut stream).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert_eq!(stable.requests(), 2);
    assert_eq!(stable.last_headers()["x-late"], "1");
}

/// hyper may still be reading a request body after the response ended, so a
/// connection that had one is never parked; it is served and timed out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sent_a_body_keeps_its_buffers() {
    let (_stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(proxy.metric(PARKED).await, 0.0);
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
}

/// A drain closes parked connections at once: nothing is in flight on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_parked_connections_without_waiting() {
    let (_stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    parked(&proxy, 1.0).await;
    // drain_timeout is 10 s: a parked connection left to it would hold the stop.
    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .expect("the drain did not wait for the parked connection");
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
}
