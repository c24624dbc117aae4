//! A config snapshot ready to serve: routes with precomputed split parameters, the
//! lookup table and the upstream pools. One per config generation; requests borrow it
//! once and never lock.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName};

use crate::config::{Config, RouteConfig, ServerConfig, StickySource, Weight};
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
    salt: Box<[u8]>,
    sticky: Box<[StickySource]>,
    override_header: Option<HeaderName>,
    cohort: HashSet<Box<[u8]>>,
    pub stable: Upstream,
    pub canary: Upstream,
    pub state: Arc<RouteState>,
}

/// The runtime side of a route's split: what weight the canary gets right now.
#[derive(Debug)]
pub struct RouteState {
    /// The weight the split uses, in basis points: the configured weight, a rollout step,
    /// or 0 after a rollback.
    effective: AtomicU16,
    /// Latched by a rollback; overrides and cohorts do not bypass it.
    rolled_back: AtomicBool,
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
    /// Builds the serving structures for `config`.
    pub fn build(config: Config, generation: u64) -> Snapshot {
        let clients = Clients::new(config.server.connect_timeout);
        let routes = config
            .routes
            .iter()
            .map(|route| {
                Route::new(
                    route,
                    &clients,
                    Arc::new(RouteState::new(route.canary_weight)),
                )
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
    pub fn new(config: &RouteConfig, clients: &Clients, state: Arc<RouteState>) -> Route {
        Route {
            name: Arc::from(config.name.as_str()),
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
            state,
        }
    }

    /// Stable or canary for this request. Rollback beats everything; then the override
    /// header, then the cohort, then the sticky hash against the effective weight.
    pub fn decide(&self, headers: &HeaderMap, peer: IpAddr) -> (Side, Reason) {
        if self.state.is_rolled_back() {
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
        let weight = self.state.effective();
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

// === impl RouteState ===

impl RouteState {
    pub fn new(weight: Weight) -> RouteState {
        RouteState {
            effective: AtomicU16::new(weight.basis_points()),
            rolled_back: AtomicBool::new(false),
        }
    }

    pub fn effective(&self) -> Weight {
        Weight::from_basis_points(self.effective.load(Ordering::Relaxed)).unwrap_or(Weight::ZERO)
    }

    pub fn set_effective(&self, weight: Weight) {
        self.effective
            .store(weight.basis_points(), Ordering::Relaxed);
    }

    pub fn is_rolled_back(&self) -> bool {
        self.rolled_back.load(Ordering::Acquire)
    }

    /// Latches the rollback: weight 0, overrides and cohorts off.
    pub fn roll_back(&self) {
        self.rolled_back.store(true, Ordering::Release);
        self.effective.store(0, Ordering::Relaxed);
    }
}
