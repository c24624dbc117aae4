//! End to end through real sockets: split, stickiness, overrides, errors, protocols.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request per key (16 at a time) and returns the side each key landed on.
async fn sides(proxy: &TestProxy, keys: impl Iterator<Item = String>) -> Vec<(String, String)> {
    let client = client();
    let url = proxy.url("/");
    let keys: Vec<String> = keys.collect();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(16) {
        let mut tasks = Vec::new();
        for key in chunk {
            let client = client.clone();
            let url = url.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let (status, headers, _) = get(&client, &url, &[("x-user-id", &key)]).await;
                assert_eq!(status, StatusCode::OK);
                (key, headers["x-served-by"].to_str().unwrap().to_string())
            }));
        }
        for task in tasks {
            out.push(task.await.unwrap());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_follows_the_weight() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    for (weight, tolerance) in [(10.0, 1.0), (0.5, 0.2)] {
        let proxy = TestProxy::start(&route_toml(
            "r",
            stable.addr,
            canary.addr,
            weight,
            "sticky = [\"header:x-user-id\"]",
        ))
        .await;
        let n = 20_000;
        let result = sides(&proxy, (0..n).map(|i| format!("user-{weight}-{i}"))).await;
        let canary_share =
            result.iter().filter(|(_, side)| side == "canary").count() as f64 * 100.0 / n as f64;
        assert!(
            (canary_share - weight).abs() <= tolerance,
            "weight {weight}%: canary share {canary_share}%"
        );
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_and_instances_agree() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let toml = route_toml(
        "checkout",
        stable.addr,
        canary.addr,
        30.0,
        "sticky = [\"header:x-user-id\"]",
    );
    let a = TestProxy::start(&toml).await;
    let b = TestProxy::start(&toml).await;
    let keys = || (0..1000).map(|i| format!("k{i}"));
    let first = sides(&a, keys()).await;
    let again = sides(&a, keys()).await;
    let other = sides(&b, keys()).await;
    assert_eq!(first, again, "the same key must land on the same side");
    assert_eq!(first, other, "two instances must agree");
    // And both agree with the documented hash computed offline.
    for (key, side) in &first {
        let bucket = canary_proxy::routing::split::bucket(b"checkout", key.as_bytes());
        assert_eq!(side == "canary", bucket < 3000, "key {key}");
    }
    let canaries = first.iter().filter(|(_, s)| s == "canary").count();
    assert!((200..400).contains(&canaries), "{canaries}");
}

#[tokio::test]
async fn override_header_and_cohort() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&route_toml(
        "r",
        stable.addr,
        canary.addr,
        0.0,
        "sticky = [\"header:x-user-id\"]\noverride_header = \"x-canary\"\ncohort = [\"qa-1\"]",
    ))
    .await;
    let client = client();
    let url = proxy.url("/");
    let side = |h: &http::HeaderMap| h["x-served-by"].to_str().unwrap().to_string();
    let (_, h, _) = get(&client, &url, &[("x-user-id", "someone")]).await;
    assert_eq!(side(&h), "stable");
    let (_, h, _) = get(
        &client,
        &url,
        &[("x-user-id", "someone"), ("x-canary", "always")],
    )
    .await;
    assert_eq!(side(&h), "canary");
    let (_, h, _) = get(&client, &url, &[("x-user-id", "qa-1")]).await;
    assert_eq!(
        side(&h),
        "canary",
        "cohort member goes to canary at weight 0"
    );
    let (_, h, _) = get(
        &client,
        &url,
        &[("x-user-id", "qa-1"), ("x-canary", "never")],
    )
    .await;
    assert_eq!(side(&h), "stable", "override beats cohort");
    let (_, h, _) = get(
        &client,
        &url,
        &[("x-user-id", "someone"), ("x-canary", "bogus")],
    )
    .await;
    assert_eq!(
        side(&h),
        "stable",
        "unknown override values fall back to the hash"
    );
}

#[tokio::test]
async fn routes_by_host_and_longest_prefix() {
    let a = MockUpstream::start("a").await;
    let b = MockUpstream::start("b").await;
    let c = MockUpstream::start("c").await;
    let toml = format!(
        "{}{}{}",
        route_toml(
            "root",
            a.addr,
            a.addr,
            0.0,
            "path_prefix = \"/\"\nhost = \"shop.example\""
        ),
        route_toml("api", b.addr, b.addr, 0.0, "path_prefix = \"/api\""),
        route_toml("api-v2", c.addr, c.addr, 0.0, "path_prefix = \"/api/v2\""),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    let served = |h: &http::HeaderMap| h["x-served-by"].to_str().unwrap().to_string();
    let (_, h, _) = get(&client, &proxy.url("/api/v2/x"), &[]).await;
    assert_eq!(served(&h), "c");
    let (_, h, _) = get(&client, &proxy.url("/api/v1"), &[]).await;
    assert_eq!(served(&h), "b");
    let (_, h, _) = get(&client, &proxy.url("/x"), &[("host", "shop.example")]).await;
    assert_eq!(served(&h), "a");
    let (status, headers, body) = get(&client, &proxy.url("/x"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(headers.contains_key("x-request-id"));
    assert!(body.contains("no route"), "{body}");
}

#[tokio::test]
async fn headers_are_rewritten() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, stable.addr, 0.0, "")).await;
    let client = client();
    let (status, headers, _) = get(
        &client,
        &proxy.url("/"),
        &[
            ("x-forwarded-for", "192.0.2.9"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("keep-alive", "timeout=5"),
            ("x-request-id", "client-id-1"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"], "client-id-1");
    let seen = stable.last_headers();
    assert_eq!(seen["x-forwarded-for"], "192.0.2.9, 127.0.0.1");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-request-id"], "client-id-1");
    assert!(!seen.contains_key("x-hop"));
    assert!(!seen.contains_key("keep-alive"));
    assert!(seen.contains_key("host"));

    // A generated id is passed up and returned.
    let (_, headers, _) = get(&client, &proxy.url("/"), &[]).await;
    let id = headers["x-request-id"].clone();
    assert_eq!(stable.last_headers()["x-request-id"], id);
}

#[tokio::test]
async fn upstream_failures_map_to_502_and_504() {
    let refused = refused_addr().await;
    let hanging = MockUpstream::start("hanging").await;
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nrequest_timeout = \"300ms\"\n{}{}",
        route_toml("down", refused, refused, 0.0, "path_prefix = \"/down\""),
        route_toml(
            "hang",
            hanging.addr,
            hanging.addr,
            0.0,
            "path_prefix = \"/hang\""
        ),
    );
    let proxy = TestProxy::start(&toml).await;
    let client = client();
    let (status, headers, body) = get(&client, &proxy.url("/down"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(headers.contains_key("x-request-id"));
    assert!(body.contains("connect"), "{body}");
    let (status, _, body) = get(&client, &proxy.url("/hang"), &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    // The proxy keeps serving.
    let (status, _, _) = get(&client, &proxy.url("/hang/../status/200"), &[]).await;
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn upstream_reset_is_502() {
    // An upstream that accepts and closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            drop(stream);
        }
    });
    let proxy = TestProxy::start(&route_toml("r", addr, addr, 0.0, "")).await;
    let (status, _, body) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn http2_prior_knowledge_downstream() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, stable.addr, 0.0, "")).await;
    let client = h2_client();
    let response = client
        .request(Request::get(proxy.url("/")).body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-served-by"], "stable");
    // The HTTP/1.1 upstream got a Host built from :authority.
    assert_eq!(
        stable.last_headers()["host"],
        proxy.addr.to_string().as_str()
    );
}

#[tokio::test]
async fn http2_upstream() {
    let stable = MockUpstream::start("stable").await;
    let toml = format!(
        "[[route]]\nname = \"grpc\"\nstable = {{ endpoints = [\"{0}\"], protocol = \"h2\" }}\ncanary = {{ endpoints = [\"{0}\"], protocol = \"h2\" }}\n",
        stable.addr
    );
    let proxy = TestProxy::start(&toml).await;
    let (status, headers, _) = get(&client(), &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-served-by"], "stable");
}

#[tokio::test]
async fn trailers_pass_both_ways() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, stable.addr, 0.0, "")).await;
    // Over HTTP/2 downstream: trailers are native.
    let client = h2_client();
    let mut request_trailers = http::HeaderMap::new();
    request_trailers.insert("x-client-trailer", "1".parse().unwrap());
    let frames = vec![
        Ok::<_, hyper::Error>(http_body::Frame::data(Bytes::from_static(b"payload"))),
        Ok(http_body::Frame::trailers(request_trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
    let response = client
        .request(
            Request::post(proxy.url("/trailers"))
                .header("te", "trailers")
                .header("trailer", "x-client-trailer")
                .body(body)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_else(|| {
        panic!(
            "no response trailers; upstream saw {:?}",
            stable.last_headers()
        )
    });
    assert_eq!(trailers["x-checksum"], "42");
    assert_eq!(
        trailers["x-request-trailers"], "1",
        "request trailers reach the upstream"
    );
    assert_eq!(collected.to_bytes(), "hello trailers");

    // Over HTTP/1.1 downstream with TE: trailers.
    let response = raw(
        proxy.addr,
        b"GET /trailers HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-checksum: 42"),
        "{response}"
    );
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, stable.addr, 0.0, "")).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    for message in [&b"ping"[..], b"hello over the tunnel"] {
        stream.write_all(message).await.unwrap();
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echoed, message);
    }
    let seen = stable.last_headers();
    assert_eq!(seen["upgrade"], "websocket");
    assert!(seen.contains_key("sec-websocket-key"));
}
