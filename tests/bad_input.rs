//! What hyper lets through by default and the proxy must close itself
//! (shared/TESTING.md), each over a raw socket.

mod support;

use std::time::Duration;

use http::{Request, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDLE: Duration = Duration::from_millis(1500);

async fn setup() -> (MockUpstream, TestProxy) {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"1s\"\nmax_header_bytes = 65536\n{}",
        route_toml("r", stable.addr, stable.addr, 0.0, "")
    ))
    .await;
    (stable, proxy)
}

fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// hyper's HTTP/1.1 parser already applies RFC 9112 §6.3 for an intermediary: it drops
/// `Content-Length`, frames by `Transfer-Encoding` and closes after the response. We
/// assert the result: the upstream never sees both headers, the smuggled request behind
/// the body is never served, and the connection is closed.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_never_forwarded_and_closes() {
    let (stable, proxy) = setup().await;
    let response = raw(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n",
        IDLE,
    )
    .await;
    assert_eq!(
        response.matches("HTTP/1.1 ").count(),
        1,
        "one response only: {response}"
    );
    assert!(response.contains("connection: close"), "{response}");
    assert_eq!(
        stable.requests(),
        1,
        "the smuggled request must not be served"
    );
    let seen = stable.last_headers();
    assert!(!seen.contains_key("content-length"), "{seen:?}");
    let paths: Vec<String> = stable
        .seen
        .heads
        .lock()
        .unwrap()
        .iter()
        .map(|(_, uri, _)| uri.path().to_string())
        .collect();
    assert_eq!(paths, ["/upload"]);
}

#[tokio::test]
async fn missing_or_duplicate_host_is_rejected() {
    let (stable, proxy) = setup().await;
    let response = raw(proxy.addr, b"GET / HTTP/1.1\r\n\r\n", IDLE).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{response}"
    );
    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        IDLE,
    )
    .await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{response}"
    );
    assert_eq!(stable.requests(), 0);
    // HTTP/1.0 may omit Host.
    let response = raw(proxy.addr, b"GET / HTTP/1.0\r\n\r\n", IDLE).await;
    assert!(status_line(&response).contains(" 200"), "{response}");
}

#[tokio::test]
async fn h2c_upgrade_headers_are_stripped() {
    let (stable, proxy) = setup().await;
    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        IDLE,
    )
    .await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 200"),
        "{response}"
    );
    let seen = stable.last_headers();
    assert!(!seen.contains_key("upgrade"), "{seen:?}");
    assert!(!seen.contains_key("http2-settings"), "{seen:?}");
    assert!(!seen.contains_key("connection"), "{seen:?}");
}

#[tokio::test]
async fn oversized_heads_get_431_on_h1_and_h2() {
    let (stable, proxy) = setup().await;
    let big = "a".repeat(70 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let response = raw(proxy.addr, request.as_bytes(), IDLE).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );
    assert!(response.contains("x-request-id"));

    // Far above the limit: hyper's buffer limit answers before we see the head.
    let huge = "a".repeat(200 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\nx-big: {huge}\r\n\r\n");
    let response = raw(proxy.addr, request.as_bytes(), IDLE).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 431"),
        "{}",
        status_line(&response)
    );

    let response = h2_client()
        .request(
            Request::get(proxy.url("/"))
                .header("x-big", big.as_str())
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(stable.requests(), 0);
}

#[tokio::test]
async fn garbage_gets_400_and_the_proxy_keeps_serving() {
    let (_stable, proxy) = setup().await;
    let response = raw(proxy.addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n", IDLE).await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{response:?}"
    );
    let response = raw(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nbad header\r\n\r\n",
        IDLE,
    )
    .await;
    assert!(
        status_line(&response).starts_with("HTTP/1.1 400"),
        "{response:?}"
    );
    let (status, _, _) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// 200 slowloris connections are cut after `header_read_timeout` while normal
/// requests keep being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed() {
    let (_stable, proxy) = setup().await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // Keep trickling header bytes for a while; normal clients are served meanwhile.
    let client = client();
    for round in 0..4 {
        for stream in &mut slow {
            let _ = stream
                .write_all(format!("x-{round}: y\r\n").as_bytes())
                .await;
        }
        let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the 1 s header timeout every slow connection must be closed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut closed = 0;
    for mut stream in slow {
        let mut buf = [0u8; 1024];
        loop {
            match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue, // a 408 or similar before the close
                Err(_) => break,       // still open
            }
        }
    }
    assert_eq!(closed, 200, "all slowloris connections must be closed");
    let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
}

/// A connection that never sends a byte is closed after `header_read_timeout`, like
/// one that stops halfway through its head.
#[tokio::test]
async fn silent_connections_are_closed() {
    let (_stable, proxy) = setup().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open after 5 s: {read:?}"
    );
}

/// HTTP/1 and HTTP/2 share the port: the connection's first bytes decide. An HTTP/2
/// preface split across writes is still HTTP/2, and an HTTP/1 request that starts like
/// the preface (`P…`) is still HTTP/1.
#[tokio::test]
async fn protocol_is_told_by_the_first_bytes_however_they_arrive() {
    let (_stable, proxy) = setup().await;
    // The preface in two writes, then an empty SETTINGS frame.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"\r\nSM\r\n\r\n").await.unwrap();
    stream
        .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    let mut frame_head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut frame_head))
        .await
        .expect("an HTTP/2 server answers the preface")
        .unwrap();
    assert_eq!(frame_head[3], 4, "the server's first frame is SETTINGS");

    // `P` + `O`: no longer the preface.
    let response = raw(
        proxy.addr,
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi",
        IDLE,
    )
    .await;
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
    // A lone `P`, then the rest of an HTTP/1 request.
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
        .write_all(b"UT / HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_line(&response), "HTTP/1.1 200 OK", "{response}");
}

/// The header timer also runs while a keep-alive connection waits for its next
/// request: an idle HTTP/1.1 connection is closed after `header_read_timeout`.
#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_header_timeout() {
    let (_stable, proxy) = setup().await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The response is in; now idle. setup() sets a 1 s header timeout.
    let start = tokio::time::Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?}"
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
}
