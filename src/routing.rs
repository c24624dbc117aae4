//! A config snapshot ready to serve: routes with precomputed split parameters, the
//! lookup table and the upstream pools. One per config generation; requests borrow it
//! once and never lock.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};
use tokio::time::Instant;

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
        Snapshot {
            generation,
            config: Arc::new(config),
            routes,
            table,
            clients,
        }
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
        }
    }

    /// Stable or canary for this request. Rollback beats everything; then the override
    /// header, then the cohort, then the sticky hash against the effective weight.
    pub fn decide(&self, headers: &HeaderMap, peer: IpAddr) -> (Side, Reason) {
        if self.runtime.is_rolled_back() {
            return (Side::Stable, Reason::RolledBack);
        }
        if let Some(name) = &self.override_header {
            if let Some(value) = headers.get(name) {
                let value = value.as_bytes();
                if value.eq_ignore_ascii_case(b"always") {
                    return (Side::Canary, Reason::Override);
                }
                if value.eq_ignore_ascii_case(b"never") {
                    return (Side::Stable, Reason::Override);
                }
            }
        }
        let weight = self.runtime.effective();
        split::with_sticky_key(&self.sticky, headers, peer, |key| {
            if !self.cohort.is_empty() && self.cohort.contains(key) {
                return (Side::Canary, Reason::Cohort);
            }
            (split::assign(&self.salt, key, weight), Reason::Hash)
        })
    }

    pub fn upstream(&self, side: Side) -> &Upstream {
        match side {
            Side::Stable => &self.stable,
            Side::Canary => &self.canary,
        }
    }
}
