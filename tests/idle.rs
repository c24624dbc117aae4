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
    responses(stream, 1).await.remove(0)
}

/// Reads `n` responses (heads, then `content-length` bodies) off `stream`, and not a
/// byte more: pipelined answers arrive several to a read.
async fn responses(stream: &mut TcpStream, n: usize) -> Vec<String> {
    let mut got: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while out.len() < n {
        // One byte at a time: a few hundred per response, and never one too many.
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert!(read > 0, "closed before a whole response: {got:?}");
        got.push(byte[0]);
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
            if got.len() == end + 4 + length {
                out.push(text);
                got.clear();
            }
        }
    }
    out
}

/// A keep-alive connection that has served one request.
async fn served_once(proxy: &TestProxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream
}

/// Asserts the proxy closes `stream` within `limit` (EOF or a reset).
async fn closed_within(stream: &mut TcpStream, limit: Duration) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(limit, stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
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
    let mut stream = served_once(&proxy).await;
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
    closed_within(&mut stream, Duration::from_secs(5)).await;
    parked(&proxy, 0.0).await;
}

/// Bytes hyper read but had not parsed when it was parked (the start of a head) are
/// read again by the next hyper connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_begun_before_the_park_is_finished_after_it() {
    let (stable, proxy) = setup().await;
    let mut stream = served_once(&proxy).await;
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
    // Never parked, still closed by the header deadline (2 to 3 s of idleness).
    closed_within(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(proxy.metric(PARKED).await, 0.0);
}

/// A drain closes parked connections at once: nothing is in flight on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_closes_parked_connections_without_waiting() {
    let (_stable, proxy) = setup().await;
    let mut stream = served_once(&proxy).await;
    parked(&proxy, 1.0).await;
    // drain_timeout is 10 s: a parked connection left to it would hold the stop.
    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .expect("the drain did not wait for the parked connection");
    closed_within(&mut stream, Duration::from_secs(2)).await;
}

/// A client that stops reading a large response: hyper's last writes wait on the
/// socket after the body has ended. The header deadline must not cut them off
/// (the response is not over until it is written), and the client, reading again
/// past the timeout, gets every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_past_the_deadline_still_gets_its_whole_response() {
    let (_stable, proxy) = setup().await;
    const SIZE: usize = 4 << 20;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(proxy.addr).await.unwrap();
    stream
        .write_all(format!("GET /download/{SIZE} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Past the 2 s timeout plus a whole sweep, without reading.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut got = Vec::with_capacity(SIZE + 1024);
    let mut buf = vec![0u8; 64 * 1024];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("the response keeps coming")
            .unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= head_end + 4 + SIZE {
                break head_end + 4;
            }
        }
    };
    assert_eq!(got.len() - end, SIZE);
}

/// More pipelined requests in one write than hyper serves in one poll (16): all are
/// answered, and the connection is parked only after the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_served_before_a_park() {
    let (stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&GET.repeat(40)).await.unwrap();
    for (i, answer) in responses(&mut stream, 40).await.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 200"), "response {i}: {answer}");
    }
    assert_eq!(stable.requests(), 40);
    parked(&proxy, 1.0).await;
    stream.write_all(GET).await.unwrap();
    assert!(response(&mut stream).await.starts_with("HTTP/1.1 200"));
}

/// A drain does not wait `drain_timeout` for a client stuck halfway through its
/// first head: the header deadline still cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_still_cuts_a_half_sent_head_at_the_header_deadline() {
    let (_stable, proxy) = setup().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost:").await.unwrap();
    // drain_timeout is 10 s; the header deadline (2 s) comes first.
    tokio::time::timeout(Duration::from_secs(5), proxy.stop())
        .await
        .expect("the drain waited for a half-sent head");
    closed_within(&mut stream, Duration::from_secs(2)).await;
}
