//! The upstream HTTP/1.1 connection pool, end to end: reuse, the upstream closing
//! connections, streaming bodies, and the bound on idle connections.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;

/// Two upstreams, a proxy sending everything to `stable`, and a client.
async fn setup() -> (MockUpstream, MockUpstream, TestProxy, Client) {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, canary.addr, 0.0, "")).await;
    (stable, canary, proxy, client())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_upstream_connection() {
    let (stable, _canary, proxy, client) = setup().await;
    for _ in 0..50 {
        let (status, _, body) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "stable"));
    }
    assert_eq!(stable.requests(), 50);
    assert_eq!(
        stable.connections(),
        1,
        "every request should reuse the first connection"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_gives_its_connection_back_when_it_ends() {
    let (stable, _canary, proxy, client) = setup().await;
    for _ in 0..10 {
        // Several reads' worth: the response head arrives long before the body ends.
        let (status, _, body) = get(&client, &proxy.url("/download/1000000"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 1_000_000);
        // The connection returns to the pool a moment after the body ends.
        wait_for(
            "the connection back in the pool",
            Duration::from_secs(5),
            || async { stable.open_connections() == 1 },
        )
        .await;
    }
    assert!(
        stable.connections() <= 2,
        "10 downloads took {} upstream connections",
        stable.connections()
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_upstream_closes_are_not_reused() {
    let (stable, _canary, proxy, client) = setup().await;
    for _ in 0..20 {
        let (status, headers, _) = get(&client, &proxy.url("/close"), &[]).await;
        assert_eq!(status, StatusCode::OK);
        // `Connection: close` is hop-by-hop: the upstream's, not the client's.
        assert!(!headers.contains_key("connection"), "{headers:?}");
    }
    assert_eq!(stable.connections(), 20);
    // A normal request afterwards still works, on a fresh connection.
    let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stable.connections(), 21);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_bounded_per_endpoint() {
    let (stable, _canary, proxy, client) = setup().await;
    // 300 requests in flight at once need more than 256 upstream connections…
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let client = client.clone();
            let url = proxy.url("/slow/1500");
            tokio::spawn(async move {
                let (status, _, body) = get(&client, &url, &[]).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                status
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let opened = stable.connections();
    assert!(opened > 256, "only {opened} connections");
    // …but only 256 of them are kept afterwards; the rest are closed.
    wait_for(
        "the pool to close the extra connections",
        Duration::from_secs(10),
        || async { stable.open_connections() == 256 },
    )
    .await;
    // The kept ones serve the next burst without new connections.
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.0, StatusCode::OK);
    }
    assert_eq!(stable.connections(), opened);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_upstream_costs_no_failed_request() {
    // The upstream goes away with idle pooled connections and comes back on the same
    // port: the pooled connections are seen closed and skipped.
    let (stable, _canary, proxy, client) = setup().await;
    for _ in 0..5 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.0, StatusCode::OK);
    }
    let addr = stable.addr;
    drop(stable);
    let restarted = MockUpstream::start_on(addr, "stable").await;
    for _ in 0..5 {
        let (status, _, body) = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "stable"));
    }
    assert_eq!(restarted.requests(), 5);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_pool_and_closes_a_removed_endpoints_connections() {
    let old = MockUpstream::start("old").await;
    let new = MockUpstream::start("new").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    let config = |stable: &MockUpstream| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            route_toml("r", stable.addr, new.addr, 0.0, "")
        )
    };
    std::fs::write(&path, config(&old)).unwrap();
    let proxy = TestProxy::start_watching(&path).await;
    let client = client();
    for _ in 0..5 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.2, "old");
    }
    assert_eq!(old.open_connections(), 1);

    // A reload that leaves the endpoint alone keeps the pooled connection.
    std::fs::write(&path, format!("{}\n# edited\n", config(&old))).unwrap();
    wait_for("the reload", Duration::from_secs(10), || async {
        proxy
            .metric("canary_proxy_config_reloads_total{result=\"success\"}")
            .await
            == 1.0
    })
    .await;
    for _ in 0..5 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.2, "old");
    }
    assert_eq!(old.connections(), 1, "the reload dropped the pool");

    // Stable moves to another endpoint: the old one's idle connection closes.
    std::fs::write(&path, config(&new)).unwrap();
    wait_for(
        "the new endpoint to serve",
        Duration::from_secs(10),
        || async { get(&client, &proxy.url("/"), &[]).await.2 == "new" },
    )
    .await;
    wait_for(
        "the old endpoint's connection to close",
        Duration::from_secs(10),
        || async { old.open_connections() == 0 },
    )
    .await;
    proxy.stop().await;
}
