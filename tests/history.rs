//! `GET /api/v1/history`: every route sampled at the (injected) interval, following the
//! route's name across reloads, bounded at `history::CAPACITY` points per route.

mod support;

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use support::*;

use canary_proxy::app::App;
use canary_proxy::config::{parse_str, Config};
use canary_proxy::history::CAPACITY;

/// A proxy sampling its history every `interval` (TestProxy::start uses the 5 s
/// default).
struct Sampled(TestProxy);

impl std::ops::Deref for Sampled {
    type Target = TestProxy;

    fn deref(&self) -> &TestProxy {
        &self.0
    }
}

impl Sampled {
    async fn start(toml: &str, interval: Duration) -> Sampled {
        let config = parse_str(toml, Path::new("test.toml")).unwrap();
        let app = App::bind(config).await.unwrap();
        Sampled(TestProxy::serve(app.history_interval(interval)))
    }

    async fn watching(path: &Path, interval: Duration) -> Sampled {
        let app = App::bind(Config::load(path).unwrap()).await.unwrap();
        let app = app
            .history_interval(interval)
            .reload_from(path.to_path_buf());
        Sampled(TestProxy::serve(app))
    }

    async fn history(&self) -> Value {
        let (status, headers, body) = get(&client(), &self.admin_url("/api/v1/history"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["content-type"], "application/json");
        serde_json::from_str(&body).unwrap()
    }

    async fn points(&self, route: &str) -> Vec<Value> {
        self.history().await["routes"][route]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn stop(self) {
        tokio::time::timeout(Duration::from_secs(5), self.0.stop())
            .await
            .expect("the proxy stops (the sampler with it)");
    }
}

fn config(routes: &str) -> String {
    format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{routes}")
}

fn times(points: &[Value]) -> Vec<f64> {
    points.iter().map(|p| p["t"].as_f64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_appear_at_the_interval_with_the_window_and_the_weight() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    canary.fail_every(4);
    let proxy = Sampled::start(
        &config(&route_toml(
            "shop",
            stable.addr,
            canary.addr,
            50.0,
            "sticky = [\"header:x-user-id\"]",
        )),
        Duration::from_millis(100),
    )
    .await;
    let client = client();
    for i in 0..40 {
        get(&client, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
    }
    let served = (stable.requests() + canary.requests()) as u64;
    let total = |p: &Value| {
        p["stable"]["requests"].as_u64().unwrap() + p["canary"]["requests"].as_u64().unwrap()
    };
    wait_for(
        "three points that saw all the traffic",
        Duration::from_secs(5),
        || async {
            proxy
                .points("shop")
                .await
                .iter()
                .filter(|p| total(p) == served)
                .count()
                >= 3
        },
    )
    .await;

    let history = proxy.history().await;
    assert_eq!(history["interval_seconds"], 0.1);
    assert_eq!(history["capacity"], CAPACITY);
    let now = history["now"].as_f64().unwrap();
    let points = history["routes"]["shop"].as_array().unwrap();
    let t = times(points);
    // One point per tick, in order, ~100 ms apart (bounded loosely: a loaded CI box).
    for pair in t.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((0.05..1.0).contains(&gap), "gap {gap} in {t:?}");
    }
    assert!(*t.last().unwrap() <= now + 0.001, "{t:?} after now {now}");
    let last = points.last().unwrap();
    assert_eq!(last["state"], "steady");
    assert_eq!(last["effective_weight"], 50.0);
    assert_eq!(last["configured_weight"], 50.0);
    assert_eq!(total(last), served, "{last}");
    assert!(last["canary"]["requests"].as_u64() > Some(0), "{last}");
    assert_eq!(
        last["canary"]["errors"].as_u64().unwrap(),
        canary.requests() as u64 / 4,
        "{last}"
    );
    assert!(
        last["canary"]["error_rate"].as_f64().unwrap() > 0.0,
        "{last}"
    );
    assert!(last["canary"]["p99_seconds"].as_f64().is_some(), "{last}");
    assert_eq!(last["stable"]["errors"], 0, "{last}");

    // Read-only.
    let request = http::Request::post(proxy.admin_url("/api/v1/history"))
        .body(empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_interval_is_five_seconds_and_the_first_point_comes_at_once() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&config(&route_toml(
        "shop",
        stable.addr,
        stable.addr,
        10.0,
        "",
    )))
    .await;
    wait_for("the first point", Duration::from_secs(2), || async {
        proxy.admin_json("/api/v1/history").await["routes"]["shop"]
            .as_array()
            .is_some_and(|p| p.len() == 1)
    })
    .await;
    let history = proxy.admin_json("/api/v1/history").await;
    assert_eq!(history["interval_seconds"], 5.0);
    assert_eq!(history["capacity"], 180);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_follows_the_route_across_a_reload_and_drops_a_removed_one() {
    let dir = tempfile::tempdir().unwrap();
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let path = dir.path().join("proxy.toml");
    let route = |name: &str, weight: f64, version: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nhost = \"{name}.test\"\nstable = {{ endpoints = [\"{}\"] }}\ncanary = {{ endpoints = [\"{}\"], version = \"{version}\" }}\ncanary_weight = {weight}\n",
            stable.addr, canary.addr
        )
    };
    std::fs::write(
        &path,
        config(&format!(
            "{}{}",
            route("shop", 10.0, "v1"),
            route("old", 10.0, "v1")
        )),
    )
    .unwrap();
    let proxy = Sampled::watching(&path, Duration::from_millis(50)).await;
    wait_for("points of both routes", Duration::from_secs(5), || async {
        let history = proxy.history().await;
        history["routes"]["shop"].as_array().map_or(0, Vec::len) >= 3
            && history["routes"]["old"].as_array().map_or(0, Vec::len) >= 3
    })
    .await;
    let before = times(&proxy.points("shop").await);

    // Same name, new weight and a new canary version (a new runtime): the line goes on.
    // `old` goes, `new` comes.
    let tmp = path.with_extension("tmp~");
    std::fs::write(
        &tmp,
        config(&format!(
            "{}{}",
            route("shop", 30.0, "v2"),
            route("new", 5.0, "v1")
        )),
    )
    .unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    wait_for(
        "a point after the reload",
        Duration::from_secs(5),
        || async {
            let history = proxy.history().await;
            history["routes"]["new"].as_array().is_some()
                && history["routes"]["shop"]
                    .as_array()
                    .unwrap()
                    .last()
                    .is_some_and(|p| p["configured_weight"] == 30.0)
        },
    )
    .await;
    let history = proxy.history().await;
    let routes = history["routes"].as_object().unwrap();
    assert!(!routes.contains_key("old"), "{history}");
    let shop = routes["shop"].as_array().unwrap();
    let t = times(shop);
    assert_eq!(
        &t[..before.len()],
        &before[..],
        "the points before the reload are kept"
    );
    assert_eq!(shop[0]["configured_weight"], 10.0);
    assert!(
        shop.iter().any(|p| p["configured_weight"] == 30.0),
        "{history}"
    );
    // `new` starts empty-handed: only points taken since it appeared.
    assert!(
        routes["new"].as_array().unwrap().len() < shop.len(),
        "{history}"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_bounded_and_drops_the_oldest_first() {
    let stable = MockUpstream::start("stable").await;
    let proxy = Sampled::start(
        &config(&route_toml("shop", stable.addr, stable.addr, 10.0, "")),
        Duration::from_millis(5),
    )
    .await;
    wait_for("a full ring", Duration::from_secs(20), || async {
        proxy.points("shop").await.len() >= CAPACITY
    })
    .await;
    let full = times(&proxy.points("shop").await);
    assert_eq!(full.len(), CAPACITY);
    wait_for(
        "the oldest point dropped",
        Duration::from_secs(5),
        || async { times(&proxy.points("shop").await)[0] > full[0] },
    )
    .await;
    let later = times(&proxy.points("shop").await);
    assert_eq!(later.len(), CAPACITY, "never more than {CAPACITY}");
    assert!(
        later.windows(2).all(|p| p[0] <= p[1]),
        "oldest first: {later:?}"
    );
    assert!(later.last() > full.last(), "{later:?} vs {full:?}");
    proxy.stop().await;
}
