//! The proxy under test, serving in this process, and its admin API.

use std::net::SocketAddr;
use std::path::Path;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use canary_proxy::app::App;
use canary_proxy::config::parse_str;

use super::body::empty;
use super::client::{client, get};

/// A proxy's admin API at its address: for the in-process `TestProxy` and for proxy
/// processes alike.
#[derive(Debug, Clone, Copy)]
pub struct AdminApi(pub SocketAddr);

impl AdminApi {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.0, path)
    }

    /// The value of a metric line `NAME{LABELS} VALUE` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = get(&client(), &self.url("/metrics"), &[]).await.2;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    /// GET an admin JSON endpoint (asserts 200).
    pub async fn json(&self, path: &str) -> serde_json::Value {
        let (status, _, body) = get(&client(), &self.url(path), &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The `/api/v1/routes` entry of `name`.
    pub async fn route_status(&self, name: &str) -> serde_json::Value {
        let routes = self.json("/api/v1/routes").await;
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
        let mut req = Request::post(self.url(&format!("/api/v1/routes/{route}/{action}")));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = client().request(req.body(empty()).unwrap()).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// This proxy's admin API.
    pub fn admin_api(&self) -> AdminApi {
        AdminApi(self.admin.expect("no [admin] in this config"))
    }

    pub fn admin_url(&self, path: &str) -> String {
        self.admin_api().url(path)
    }

    /// The value of a metric line `NAME{LABELS} VALUE` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.admin_api().metric(series).await
    }

    /// GET an admin JSON endpoint.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        self.admin_api().json(path).await
    }

    /// The `/api/v1/routes` entry of `name`.
    pub async fn route_status(&self, name: &str) -> serde_json::Value {
        self.admin_api().route_status(name).await
    }

    /// POST an admin command with an optional bearer token.
    pub async fn command(
        &self,
        route: &str,
        action: &str,
        token: Option<&str>,
    ) -> (StatusCode, String) {
        self.admin_api().command(route, action, token).await
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
