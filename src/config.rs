//! The validated configuration: domain types that cannot hold an invalid value.
//!
//! The TOML file is read into a serde mirror (`raw`, `deny_unknown_fields`, every value
//! wrapped in `Spanned` so errors can name file:line:column), then converted by
//! `validate` into these types. Everything downstream (routing tables, upstream pools,
//! the budget) is built from a `Config` only, so it never re-checks a value.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;
use http::StatusCode;

mod raw;
mod validate;

pub use validate::{parse_str, parse_str_with};

/// A whole, valid configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages and to resolve relative paths).
    pub source: PathBuf,
    pub server: ServerConfig,
    /// `None`: no admin listener.
    pub admin: Option<AdminConfig>,
    /// `None`: decisions live in memory only.
    pub state: Option<StateConfig>,
    /// `None`: no webhook.
    pub notify: Option<NotifyConfig>,
    /// `[log]`: the access log and the debug side header; all off when absent.
    pub log: LogConfig,
    /// `[fleet]`: judge and latch together with the other instances of this name,
    /// through etcd (SPEC §10). `None`: this instance judges alone.
    pub fleet: Option<FleetConfig>,
    /// In file order; names are unique.
    pub routes: Vec<RouteConfig>,
}

/// `[fleet]`: the etcd cluster and this instance's place in the fleet (SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// Instances with the same name judge together; a path segment of every key.
    pub name: String,
    /// etcd client URLs (`http://host:port` or `https://host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// This instance's name in the fleet (default: the host name).
    pub instance: String,
    /// Between counter publications (jittered ±10 %); default 1 s.
    pub publish_interval: Duration,
    /// No etcd round trip for this long: judge locally; default 3 s.
    pub stale_after: Duration,
    /// Key prefix, ending in `/`; default `/canary-proxy/`.
    pub prefix: String,
    pub tls: Option<FleetTls>,
}

/// TLS to etcd: a CA that verifies the members, and an optional client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    pub ca_file: Option<PathBuf>,
    pub cert: Option<(PathBuf, PathBuf)>,
}

/// `[server]`: the downstream listener and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Upstream TCP (and later TLS) connect.
    pub connect_timeout: Duration,
    /// From sending the request upstream until the response head arrives.
    pub request_timeout: Duration,
    /// A client must deliver a whole request head within this (slowloris defence).
    pub header_read_timeout: Duration,
    /// Request line + headers larger than this get 431.
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub drain_timeout: Duration,
    /// `tls`: terminate TLS (ALPN h2 + http/1.1) on the listener.
    pub tls: Option<ServerTls>,
    /// Runtime worker threads (Envoy's `--concurrency`). `None`: one per CPU this
    /// process may use (its affinity mask and cgroup CPU quota). 1..=1024; read at
    /// start only.
    pub workers: Option<usize>,
}

/// `[server] tls`, loaded and checked (the key matches the certificate).
#[derive(Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Mutual TLS: clients need a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    pub config: Arc<rustls::ServerConfig>,
}

/// TLS to an upstream's `https://` endpoints.
#[derive(Clone)]
pub struct UpstreamTls {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub config: Arc<rustls::ClientConfig>,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The bearer token read from `token_file` (whitespace trimmed). `None`: no
    /// `token_file`, so mutating endpoints are off (or an offline load, which does not
    /// read it).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// `[state]`: where latched decisions are persisted.
#[derive(Debug, Clone, PartialEq)]
pub struct StateConfig {
    pub dir: PathBuf,
}

/// `[notify]`: where decision events are POSTed, which ones, and how (SPEC §9).
#[derive(Clone, PartialEq)]
pub struct NotifyConfig {
    /// `http://` or `https://`, with a host.
    pub webhook: http::Uri,
    /// Present for an `https://` webhook: the receiver's certificate is verified
    /// against `ca_file`, else the webpki roots (no client certificate, no
    /// `server_name`: the URL's host is verified).
    pub tls: Option<UpstreamTls>,
    /// Sent with every POST (names lower-cased, values marked sensitive); never one
    /// the notifier sets itself (`content-type`, `host`, the signature, hop-by-hop).
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
    /// The HMAC-SHA256 key read from `secret_file` (whitespace trimmed, non-empty):
    /// each body is signed in `x-canary-proxy-signature: sha256=<hex>`. `None` also in
    /// an offline load (`check --offline`), which does not read it.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// The event kinds delivered (`Event::kind` values); never empty. Default: the
    /// decisions (`rollback`, `would_rollback`, `step`, `promote`, `pause`, `resume`).
    pub events: Vec<&'static str>,
    /// POST attempts per event, 1..=20; default 5.
    pub max_attempts: u32,
    /// Delay before the first retry, doubled after each (capped at 30 s); default 500 ms.
    pub backoff: Duration,
    /// One attempt, from connecting to the response head; default 2 s.
    pub timeout: Duration,
}

/// `[log]` (SPEC §12): what the proxy tells operators about each request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogConfig {
    /// `access`: one JSON line per request (see `access_log`); `None`: off.
    pub access: Option<AccessLogTarget>,
    /// `side_header`: responses carry `x-canary-proxy-side: stable` or
    /// `canary VERSION`, for debugging with curl. Default `false`.
    pub side_header: bool,
}

/// Where `[log] access` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// `"stderr"`, beside the proxy's own logs (whole lines, never interleaved).
    Stderr,
    /// A file, appended to (created if absent); relative paths resolve against the
    /// config file's directory.
    File(PathBuf),
}

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Lower-cased, without a port. `None` matches any host.
    pub host: Option<String>,
    /// Starts with `/`.
    pub path_prefix: String,
    pub stable: UpstreamConfig,
    pub canary: UpstreamConfig,
    /// `canary.version`; part of the canary's identity (a new one re-arms a rollback).
    pub canary_version: Option<String>,
    pub canary_weight: Weight,
    /// Tried in order; the first present source gives the sticky key.
    pub sticky: Vec<StickySource>,
    /// `salt`, or the route name.
    pub salt: String,
    pub override_header: Option<HeaderName>,
    /// Sticky keys always sent to the canary (unless rolled back).
    pub cohort: Vec<String>,
    pub budget: BudgetConfig,
    pub rollout: Option<RolloutConfig>,
    /// `[route.shield]`: retry failed canary attempts on stable.
    pub shield: Option<ShieldConfig>,
}

/// `[route.shield]` (SPEC §11): a canary attempt that fails for an eligible request is
/// sent once more, to stable; the failure still counts against the canary.
#[derive(Debug, Clone, PartialEq)]
pub struct ShieldConfig {
    /// Canary statuses that are retried on stable (connect errors, resets and closes
    /// before the head, and per-try timeouts always are). Default 502, 503, 504.
    pub statuses: Vec<StatusMatch>,
    /// Methods eligible for a retry. Default: the idempotent ones (RFC 9110 §9.2.2).
    pub methods: Vec<http::Method>,
    /// Request bodies up to this size are held to be sent again; larger or streamed
    /// bodies are never retried. Bytes; default 65 536.
    pub max_body_bytes: usize,
    /// Retries allowed as a fraction of the route's requests (Linkerd's retry budget);
    /// default 0.2.
    pub budget_ratio: f64,
    /// Retries always allowed per second on top of the ratio; default 10.
    pub min_retries_per_second: u32,
    /// How long the canary attempt may take to its response head before stable is
    /// tried. `None`: `[server] request_timeout`.
    pub per_try_timeout: Option<Duration>,
}

/// `stable` / `canary`: a set of interchangeable endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Never empty.
    pub endpoints: Vec<Endpoint>,
    pub protocol: Protocol,
    /// Present when an endpoint is `https://`.
    pub tls: Option<UpstreamTls>,
    /// How long an idle keep-alive connection to an endpoint is kept for reuse. Below
    /// the upstream's own keep-alive timeout (Node.js: 5 s), so the proxy closes first
    /// and seldom meets the keep-alive race. Default 4 s.
    pub idle_timeout: Duration,
    /// Consecutive connect failures or resets that take an endpoint out of rotation
    /// (nginx `max_fails`); 0 never does. Default 3. Only with two or more endpoints.
    pub max_fails: u32,
    /// How long an ejected endpoint stays out of rotation (nginx `fail_timeout`).
    /// Default 10 s.
    pub fail_timeout: Duration,
}

/// One upstream endpoint (`host:port` or `http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (gRPC upstreams).
    Http2,
}

/// A canary weight in basis points: 0..=10_000 (percent with 0.01 resolution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Weight(u16);

/// Where the sticky key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickySource {
    /// `header:NAME`
    Header(HeaderName),
    /// `cookie:NAME`
    Cookie(String),
    /// `client_ip`: the peer address.
    ClientIp,
    /// `forwarded_for:N`: the client address as the Nth trusted proxy in front of us
    /// saw it: the Nth address from the end of `X-Forwarded-For` (1 = the one the
    /// nearest proxy appended), or of `Forwarded: for=` when `X-Forwarded-For` is
    /// absent. A list too short or an entry that is not an IP address falls through to
    /// the next source.
    ForwardedFor(std::num::NonZeroU8),
}

/// `[route.budget]`: when the canary has spent its error budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// How the canary is judged.
    pub mode: BudgetMode,
    pub window: Duration,
    /// Threshold criteria: no verdict on fewer canary requests in the window.
    /// Sequential test: no verdict on fewer canary requests since it was armed.
    pub min_requests: u32,
    /// 0.0..=1.0; an absolute hard stop over the window. Default 0.05 in threshold
    /// mode, off in sequential mode (the test covers it) unless set.
    pub max_error_rate: Option<f64>,
    /// Canary rate above this multiple of the stable rate (with a floor) is a breach.
    pub max_error_rate_vs_stable: Option<f64>,
    pub max_p99_latency: Option<Duration>,
    /// Upstream statuses counted as errors. Never empty.
    pub error_statuses: Vec<StatusMatch>,
    /// Parameters of the sequential test (mode = sequential).
    pub sequential: SequentialConfig,
    /// Sequential mode: also test the share of requests slower than this.
    pub latency_slo: Option<Duration>,
    /// false: observe only (record would-be rollbacks, never touch the weight).
    pub enforce: bool,
}

/// `[route.budget] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BudgetMode {
    /// Fixed thresholds over a sliding time window.
    Threshold,
    /// A sequential probability ratio test of canary vs stable, over requests.
    #[default]
    Sequential,
}

/// The sequential test's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialConfig {
    /// "Worse" means an error rate above `tolerance × stable + margin`. ≥ 1.
    pub tolerance: f64,
    /// Absolute slack, a fraction (0.01 = one percentage point).
    pub margin: f64,
    /// Probability of rolling back a canary that is as good as stable.
    pub alpha: f64,
    /// Probability of calling a worse canary healthy.
    pub beta: f64,
}

impl Default for SequentialConfig {
    fn default() -> Self {
        SequentialConfig {
            tolerance: 2.0,
            margin: 0.01,
            alpha: 0.001,
            beta: 0.05,
        }
    }
}

/// One entry of `error_statuses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// `"5xx"`: the class digit 1..=5.
    Class(u8),
    /// `"503"` or `503`.
    Exact(StatusCode),
}

/// `[route.rollout]`: progressive promotion.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutConfig {
    /// Strictly increasing, the last is 100 %.
    pub steps: Vec<Weight>,
    pub step_interval: Duration,
}

/// How `Config::load_with` treats the files a config names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Validate the file away from its host (`check --offline`): the admin token, TLS
    /// certificates, keys and CAs, upstream client certificates and the webhook secret
    /// are not read, only listed in `Loaded::not_checked`; their paths must still be
    /// valid. The TLS configs of such a load complete no handshake: it is for reading,
    /// never for serving.
    pub offline: bool,
}

/// A config and what loading it left unchecked.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// Files an offline load did not read, in file order; empty otherwise.
    pub not_checked: Vec<NotChecked>,
}

/// A file an offline load did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotChecked {
    /// The key naming it, e.g. `admin.token_file` or `route[0].canary.ca_file`.
    pub key: String,
    /// Resolved against the config file's directory.
    pub path: PathBuf,
}

/// Why a file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} error(s) in {}", .errors.len(), path.display())]
    Invalid { path: PathBuf, errors: Vec<Invalid> },
}

/// One problem in a config file, located precisely.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct Invalid {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
    /// Dotted path of the offending key, e.g. `route[0].canary_weight` (or `route."checkout".canary_weight`).
    pub key: String,
    pub message: String,
}

// === impl Config ===

impl Config {
    /// Reads and validates `path`. Relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, LoadOptions::default()).map(|loaded| loaded.config)
    }

    /// `load` with options (`offline`: see `LoadOptions`).
    pub fn load_with(path: &Path, options: LoadOptions) -> Result<Loaded, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        parse_str_with(&src, path, options).map_err(|errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Things that are valid but probably not what an operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.admin {
            None => out.push(
                "no [admin] section: no admin listener (no /metrics, no admin API)".to_string(),
            ),
            Some(admin) if admin.token_file.is_none() => out.push(
                "[admin] has no token_file: mutating admin endpoints are disabled".to_string(),
            ),
            Some(_) => {}
        }
        if self.state.is_none() {
            out.push(
                "no [state] section: rollback and rollout decisions live in memory only and are lost on restart"
                    .to_string(),
            );
        }
        for route in &self.routes {
            route.warnings(&mut out);
        }
        out
    }
}

// === impl RouteConfig ===

impl RouteConfig {
    /// `Config::warnings` for one route.
    fn warnings(&self, out: &mut Vec<String>) {
        let name = &self.name;
        if let Some(rollout) = &self.rollout {
            // The rollout starts at canary_weight and moves to the next step above it.
            let skipped: Vec<String> = rollout
                .steps
                .iter()
                .filter(|step| **step < self.canary_weight)
                .map(Weight::to_string)
                .collect();
            if !skipped.is_empty() {
                out.push(format!(
                    "route `{name}`: rollout steps {} are below canary_weight {} and are skipped: the rollout starts at canary_weight and moves to the next step above it (lower canary_weight to start there)",
                    skipped.join(", "),
                    self.canary_weight,
                ));
            }
        }
        let stable: std::collections::HashSet<&Endpoint> = self.stable.endpoints.iter().collect();
        let canary: std::collections::HashSet<&Endpoint> = self.canary.endpoints.iter().collect();
        if stable == canary {
            let list: Vec<String> = self
                .stable
                .endpoints
                .iter()
                .map(Endpoint::to_string)
                .collect();
            out.push(format!(
                "route `{name}`: stable and canary have the same endpoints ({}): both sides reach one service, so the canary is judged against itself",
                list.join(", ")
            ));
        } else {
            let mut seen = std::collections::HashSet::new();
            let shared = self.canary.endpoints.iter().filter(|e| stable.contains(e));
            for shared in shared.filter(|e| seen.insert(*e)) {
                out.push(format!(
                    "route `{name}`: endpoint {shared} is both stable and canary: its answers count for both sides"
                ));
            }
        }
        if self.sticky == [StickySource::ClientIp] {
            out.push(format!(
                "route `{name}`: client_ip is the only sticky source (it is also the default): behind a load balancer or NAT many users share a few peer addresses, so they land on one side together; put a header:NAME or cookie:NAME source first (or forwarded_for:N behind trusted proxies)"
            ));
        }
    }
}

// === impl AdminConfig ===

impl AdminConfig {
    /// The tokens in `token_file`, by name: a file holding one bare token names it
    /// `admin`; otherwise each non-empty line that is not a `#` comment is
    /// `NAME:TOKEN`, and the name goes into the events of the commands it authorises.
    pub fn named_tokens(&self) -> Vec<(&str, &str)> {
        let Some(text) = self.token.as_deref() else {
            return Vec::new();
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if let [only] = lines[..] {
            if !only.contains(':') {
                return vec![("admin", only)];
            }
        }
        lines
            .into_iter()
            .filter_map(|line| line.split_once(':'))
            .map(|(name, token)| (name.trim(), token.trim()))
            .filter(|(name, token)| !name.is_empty() && !token.is_empty())
            .collect()
    }
}

// === impl ServerTls ===

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("client_ca", &self.client_ca)
            .finish_non_exhaustive()
    }
}

/// Same files, same settings (the loaded key material is not compared).
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.cert == other.cert && self.key == other.key && self.client_ca == other.client_ca
    }
}

// === impl UpstreamTls ===

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_file", &self.ca_file)
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.server_name == other.server_name
            && self.client_cert == other.client_cert
    }
}

// === impl NotifyConfig ===

/// Header values and the secret are not printed.
impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.webhook)
            .field("tls", &self.tls)
            .field("headers", &headers)
            .field("secret_file", &self.secret_file)
            .field("events", &self.events)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

// === impl Weight ===

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const FULL: Weight = Weight(10_000);

    /// `None` when above 10 000.
    pub const fn from_basis_points(bp: u16) -> Option<Weight> {
        if bp <= 10_000 {
            Some(Weight(bp))
        } else {
            None
        }
    }

    /// Percent with at most two decimals, 0..=100. `None` otherwise.
    pub fn from_percent(percent: f64) -> Option<Weight> {
        if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
            return None;
        }
        let scaled = percent * 100.0;
        let rounded = scaled.round();
        if (scaled - rounded).abs() > 1e-6 {
            return None;
        }
        Some(Weight(rounded as u16))
    }

    pub const fn basis_points(self) -> u16 {
        self.0
    }

    pub fn percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

// === impl Endpoint ===

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority)
    }
}

// === impl BudgetConfig ===

impl BudgetConfig {
    /// Whether any criterion over the sliding window is set (`max_error_rate`,
    /// `max_error_rate_vs_stable`, `max_p99_latency`); without one the window cannot
    /// produce a breach and need not be summed on the request path.
    pub fn has_window_criteria(&self) -> bool {
        self.max_error_rate.is_some()
            || self.max_error_rate_vs_stable.is_some()
            || self.max_p99_latency.is_some()
    }
}

// === impl StatusMatch ===

impl StatusMatch {
    pub fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Class(class) => status.as_u16() / 100 == u16::from(class),
            StatusMatch::Exact(code) => code == status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_from_percent() {
        assert_eq!(Weight::from_percent(10.0), Some(Weight(1000)));
        assert_eq!(Weight::from_percent(0.5), Some(Weight(50)));
        assert_eq!(Weight::from_percent(12.34), Some(Weight(1234)));
        assert_eq!(Weight::from_percent(100.0), Some(Weight::FULL));
        assert_eq!(Weight::from_percent(0.0), Some(Weight::ZERO));
        assert_eq!(Weight::from_percent(12.345), None);
        assert_eq!(Weight::from_percent(-1.0), None);
        assert_eq!(Weight::from_percent(100.01), None);
        assert_eq!(Weight::from_percent(f64::NAN), None);
    }

    #[test]
    fn status_match() {
        assert!(StatusMatch::Class(5).matches(StatusCode::BAD_GATEWAY));
        assert!(!StatusMatch::Class(5).matches(StatusCode::NOT_FOUND));
        assert!(StatusMatch::Exact(StatusCode::TOO_MANY_REQUESTS)
            .matches(StatusCode::TOO_MANY_REQUESTS));
    }
}
