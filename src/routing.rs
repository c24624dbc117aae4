//! A config snapshot ready to serve: routes with precomputed split parameters, the
//! lookup table and the upstream pools. One per config generation; requests borrow it
//! once and never lock.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

use crate::access_log::{AccessLog, Hooks};
use crate::config::{Config, RouteConfig, ServerConfig, ShieldConfig, StickySource};
use crate::rollout::{RouteRuntime, Shared};
use crate::telemetry::{PathMeters, Telemetry};
use crate::upstream::retry_budget::RetryBudget;
use crate::upstream::{Clients, Upstream};

pub mod split;
pub mod table;

pub use split::Side;
use table::RouteTable;

/// Everything the data path needs for one config generation.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    pub routes: Vec<Route>,
    table: RouteTable,
    clients: Clients,
    /// `[log]`: the access log and the side header. `None` when both are off, so the
    /// request path pays one check for them.
    pub log: Option<Box<Hooks>>,
}

/// A route as the data path sees it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// The route's `host`, for a request that names none (HTTP/1.0 without `Host`):
    /// the upstream request always carries an authority (RFC 9112 §3.2).
    pub host: Option<http::uri::Authority>,
    salt: Box<[u8]>,
    sticky: Box<[StickySource]>,
    override_header: Option<HeaderName>,
    cohort: HashSet<Box<[u8]>>,
    pub stable: Upstream,
    pub canary: Upstream,
    /// The canary's latch, weight, window and state machine.
    pub runtime: Arc<RouteRuntime>,
    /// gRPC statuses are judged only when the response says `application/grpc`.
    pub error_statuses: Box<[crate::config::StatusMatch]>,
    /// `[route.shield]` and its retry budget.
    pub shield: Option<Shield>,
    /// The data path's handles: responses as clients saw them, retries, ejections.
    pub path: PathMeters,
    /// `canary.version`, for the access log.
    pub canary_version: Option<Arc<str>>,
    /// `canary VERSION` (or `canary`): the side header's value for the canary.
    canary_side_header: HeaderValue,
}

/// A request's side and why (see [`Route::decision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where the request goes.
    pub side: Side,
    /// Why: rollback, override header, cohort or the hash.
    pub reason: Reason,
    /// The sticky bucket, 0..10 000, when the hash decided (`Reason::Hash`).
    pub bucket: Option<u16>,
}

/// A route's `[route.shield]`: the config and the budget its retries draw on.
#[derive(Debug)]
pub struct Shield {
    pub config: ShieldConfig,
    pub budget: RetryBudget,
}

/// Why a request went where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Hash,
    Override,
    Cohort,
    RolledBack,
}

// === impl Reason ===

impl Reason {
    /// `hash`, `override`, `cohort` or `rolled_back`, as in the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Hash => "hash",
            Reason::Override => "override",
            Reason::Cohort => "cohort",
            Reason::RolledBack => "rolled_back",
        }
    }
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds the serving structures for `config`. Route runtimes (latch, window,
    /// rollout step) are taken over from `previous` while a route's canary is the same;
    /// a new route or a new canary gets a fresh runtime (restored from `[state] dir`).
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        shared: &Arc<Shared>,
        now: Instant,
    ) -> Snapshot {
        let clients = match previous {
            Some(prev) if prev.clients.connect_timeout() == config.server.connect_timeout => {
                prev.clients.clone()
            }
            _ => Clients::new(config.server.connect_timeout),
        };
        let state_dir = config.state.as_ref().map(|s| s.dir.clone());
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let kept = previous
                    .and_then(|prev| prev.route(&route.name))
                    .filter(|prev| prev.runtime.same_canary(route))
                    .map(|prev| Arc::clone(&prev.runtime));
                let runtime = match kept {
                    Some(runtime) => {
                        runtime.reconfigure(route, state_dir.clone(), now);
                        runtime
                    }
                    None => RouteRuntime::new(route, state_dir.clone(), shared, now),
                };
                Route::new(route, &clients, runtime, &shared.telemetry, now)
            })
            .collect();
        let table = RouteTable::build(
            config
                .routes
                .iter()
                .map(|r| (r.host.as_deref(), r.path_prefix.as_str())),
        );
        let log = Hooks::new(None, config.log.side_header);
        Snapshot {
            generation,
            config: Arc::new(config),
            routes,
            table,
            clients,
            log,
        }
    }

    /// This snapshot writing its access log to `access` (opened by the caller, which
    /// owns the I/O: `App::bind`, or a reload before the swap).
    pub fn with_access_log(mut self, access: Option<Arc<AccessLog>>) -> Snapshot {
        self.log = Hooks::new(access, self.config.log.side_header);
        self
    }

    /// The access log this snapshot writes to, if any.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.log.as_ref().and_then(|hooks| hooks.access.as_ref())
    }

    pub fn server(&self) -> &ServerConfig {
        &self.config.server
    }

    /// The route for a request's host and path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.table.find(host, path).and_then(|i| self.routes.get(i))
    }

    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| &*r.name == name)
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }
}

// === impl Route ===

impl Route {
    pub fn new(
        config: &RouteConfig,
        clients: &Clients,
        runtime: Arc<RouteRuntime>,
        telemetry: &Telemetry,
        now: Instant,
    ) -> Route {
        Route {
            name: Arc::from(config.name.as_str()),
            host: config.host.as_deref().and_then(|h| h.parse().ok()),
            salt: config.salt.as_bytes().into(),
            sticky: config.sticky.clone().into_boxed_slice(),
            override_header: config.override_header.clone(),
            cohort: config
                .cohort
                .iter()
                .map(|k| Box::from(k.as_bytes()))
                .collect(),
            stable: Upstream::new(&config.stable, clients),
            canary: Upstream::new(&config.canary, clients),
            runtime,
            error_statuses: config.budget.error_statuses.clone().into_boxed_slice(),
            shield: config.shield.as_ref().map(|shield| Shield {
                budget: RetryBudget::new(shield.budget_ratio, shield.min_retries_per_second, now),
                config: shield.clone(),
            }),
            path: telemetry.path_meters(&config.name),
            canary_version: config.canary_version.as_deref().map(Arc::from),
            canary_side_header: config
                .canary_version
                .as_ref()
                .and_then(|v| HeaderValue::from_str(&format!("canary {v}")).ok())
                .unwrap_or(HeaderValue::from_static("canary")),
        }
    }

    /// Stable or canary for this request. Rollback beats everything; then the override
    /// header, then the cohort, then the sticky hash against the effective weight.
    pub fn decide(&self, headers: &HeaderMap, peer: IpAddr) -> (Side, Reason) {
        let decision = self.decision(headers, peer);
        (decision.side, decision.reason)
    }

    /// [`Route::decide`], with the sticky bucket when the hash decided.
    pub fn decision(&self, headers: &HeaderMap, peer: IpAddr) -> Decision {
        let decided = |side, reason| Decision {
            side,
            reason,
            bucket: None,
        };
        if self.runtime.is_rolled_back() {
            return decided(Side::Stable, Reason::RolledBack);
        }
        if let Some(name) = &self.override_header {
            if let Some(value) = headers.get(name) {
                let value = value.as_bytes();
                if value.eq_ignore_ascii_case(b"always") {
                    return decided(Side::Canary, Reason::Override);
                }
                if value.eq_ignore_ascii_case(b"never") {
                    return decided(Side::Stable, Reason::Override);
                }
            }
        }
        let weight = self.runtime.effective();
        split::with_sticky_key(&self.sticky, headers, peer, |key| {
            if !self.cohort.is_empty() && self.cohort.contains(key) {
                return decided(Side::Canary, Reason::Cohort);
            }
            let bucket = split::bucket(&self.salt, key);
            Decision {
                side: split::side_of_bucket(bucket, weight),
                reason: Reason::Hash,
                bucket: Some(bucket),
            }
        })
    }

    /// The side header's value (`[log] side_header`): `stable`, or `canary VERSION`.
    pub fn side_header(&self, side: Side) -> HeaderValue {
        match side {
            Side::Stable => HeaderValue::from_static("stable"),
            Side::Canary => self.canary_side_header.clone(),
        }
    }

    pub fn upstream(&self, side: Side) -> &Upstream {
        match side {
            Side::Stable => &self.stable,
            Side::Canary => &self.canary,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::HeaderValue;

    use super::*;
    use crate::events::Events;
    use crate::rollout::machine::Command;
    use crate::telemetry::Telemetry;

    /// `decide`'s precedence, as a table: rollback > override > cohort > hash.
    #[tokio::test]
    async fn decide_precedence_rollback_override_cohort_hash() {
        let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
        let toml = r#"
[[route]]
name = "r"
stable = { endpoints = ["127.0.0.1:1"] }
canary = { endpoints = ["127.0.0.1:2"] }
canary_weight = 0
sticky = ["header:x-user"]
override_header = "x-canary"
cohort = ["qa-1"]
"#;
        let config = crate::config::parse_str(toml, Path::new("t.toml")).unwrap();
        let snapshot = Snapshot::build(config, 1, None, &shared, Instant::now());
        let route = &snapshot.routes[0];
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        let headers = |user: Option<&str>, force: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(user) = user {
                headers.insert("x-user", HeaderValue::from_str(user).unwrap());
            }
            if let Some(force) = force {
                headers.insert("x-canary", HeaderValue::from_str(force).unwrap());
            }
            headers
        };
        // (user, override, rolled back) → (side, reason); weight 0, so the hash
        // always says stable.
        let cases = [
            (Some("u1"), None, false, Side::Stable, Reason::Hash),
            (Some("qa-1"), None, false, Side::Canary, Reason::Cohort),
            (
                Some("u1"),
                Some("always"),
                false,
                Side::Canary,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("never"),
                false,
                Side::Stable,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("ALWAYS"),
                false,
                Side::Canary,
                Reason::Override,
            ),
            (
                Some("qa-1"),
                Some("maybe"),
                false,
                Side::Canary,
                Reason::Cohort,
            ),
            (None, Some("always"), false, Side::Canary, Reason::Override),
            (
                Some("u1"),
                Some("always"),
                true,
                Side::Stable,
                Reason::RolledBack,
            ),
            (Some("qa-1"), None, true, Side::Stable, Reason::RolledBack),
            (Some("u1"), None, true, Side::Stable, Reason::RolledBack),
        ];
        for (user, force, rolled_back, side, reason) in cases {
            if rolled_back != route.runtime.is_rolled_back() {
                let command = if rolled_back {
                    Command::Rollback
                } else {
                    Command::Resume
                };
                route.runtime.command(command, Instant::now()).unwrap();
            }
            let decision = route.decision(&headers(user, force), peer);
            assert_eq!(
                (decision.side, decision.reason),
                (side, reason),
                "user {user:?}, override {force:?}, rolled back {rolled_back}"
            );
            assert_eq!(decision.bucket.is_some(), reason == Reason::Hash);
        }
    }
}
