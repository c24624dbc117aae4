//! A config snapshot ready to serve: routes with their split parameters, runtimes and
//! upstreams, the lookup table and the upstream pools. One per config generation;
//! requests borrow it once and never lock.
//!
//! It sits above the data path's pure parts (`routing`) and the judgement
//! (`rollout`): it joins them per route, and neither imports it.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::access_log::{AccessLog, Hooks};
use crate::config::{Config, RouteConfig, ServerConfig, ShieldConfig};
use crate::notify::Target;
use crate::rollout::{RouteRuntime, Shared};
use crate::routing::meters::PathMeters;
use crate::routing::table::RouteTable;
use crate::routing::{self, Decision, Params, Reason, Side};
use crate::telemetry::Telemetry;
use crate::upstream::retry_budget::RetryBudget;
use crate::upstream::{Clients, Upstream};

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
    /// `[notify]`: where decision events are POSTed (`None`: no webhook).
    pub webhook: Option<Arc<Target>>,
}

/// A snapshot built and not yet published: the runtimes it takes over from the live
/// one are still untouched, and get the new config only in `apply`, just before the
/// swap.
#[derive(Debug)]
pub struct Candidate {
    snapshot: Snapshot,
    /// Kept runtimes and their new route config.
    reconfigure: Vec<(Arc<RouteRuntime>, RouteConfig)>,
}

/// A route as the data path sees it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    /// The route's `host`, for a request that names none (HTTP/1.0 without `Host`):
    /// the upstream request always carries an authority (RFC 9112 §3.2).
    pub host: Option<http::uri::Authority>,
    /// What the split needs: salt, sticky sources, override header, cohort.
    params: Params,
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

/// A route's `[route.shield]`: the config and the budget its retries draw on.
#[derive(Debug)]
pub struct Shield {
    pub config: ShieldConfig,
    pub budget: RetryBudget,
}

// === impl Snapshot ===

impl Snapshot {
    /// Builds and applies at once (tests, benches): `candidate(…).apply(now)`.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        shared: &Arc<Shared>,
        now: Instant,
    ) -> Snapshot {
        Snapshot::candidate(config, generation, previous, shared, now).apply(now)
    }

    /// Builds the serving structures for `config` without touching `previous`. Route
    /// runtimes (latch, window, rollout step) are taken over from `previous` while a
    /// route's canary is the same (and reconfigured by `Candidate::apply`); a new route
    /// or a new canary gets a fresh runtime (restored from `[state] dir`).
    pub fn candidate(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
        shared: &Arc<Shared>,
        now: Instant,
    ) -> Candidate {
        let clients = match previous {
            Some(prev) if prev.clients.connect_timeout() == config.server.connect_timeout => {
                prev.clients.clone()
            }
            _ => Clients::new(config.server.connect_timeout),
        };
        let state_dir = config.state.as_ref().map(|s| s.dir.clone());
        let mut reconfigure = Vec::new();
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
                        reconfigure.push((Arc::clone(&runtime), route.clone()));
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
        let webhook = Target::from_config(&config);
        Candidate {
            snapshot: Snapshot {
                generation,
                config: Arc::new(config),
                routes,
                table,
                clients,
                log,
                webhook,
            },
            reconfigure,
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

// === impl Candidate ===

impl Candidate {
    /// This candidate writing its access log to `access` (see
    /// `Snapshot::with_access_log`).
    pub fn with_access_log(mut self, access: Option<Arc<AccessLog>>) -> Candidate {
        self.snapshot = self.snapshot.with_access_log(access);
        self
    }

    /// Hands the new budgets, weights and rollouts to the runtimes taken over from the
    /// live snapshot; the caller swaps the returned snapshot in right after.
    pub fn apply(self, now: Instant) -> Snapshot {
        let state_dir = self.snapshot.config.state.as_ref().map(|s| s.dir.clone());
        for (runtime, route) in self.reconfigure {
            runtime.reconfigure(&route, state_dir.clone(), now);
        }
        self.snapshot
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
            params: Params::new(config),
            stable: Upstream::new(&config.stable, clients),
            canary: Upstream::new(&config.canary, clients),
            runtime,
            error_statuses: config.budget.error_statuses.clone().into_boxed_slice(),
            shield: config.shield.as_ref().map(|shield| Shield {
                budget: RetryBudget::new(shield.budget_ratio, shield.min_retries_per_second, now),
                config: shield.clone(),
            }),
            path: PathMeters::new(telemetry, &config.name),
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

    /// [`Route::decide`], with the sticky bucket when the hash decided: the pure
    /// `routing::decide` on this route's parameters and its effective weight now.
    pub fn decision(&self, headers: &HeaderMap, peer: IpAddr) -> Decision {
        let (weight, latched) = self.runtime.weight_cell().get();
        routing::decide(&self.params, headers, peer, weight, latched)
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

    use super::*;
    use crate::config::parse_str;
    use crate::events::Events;

    fn config(weight: u32) -> Config {
        let toml = format!(
            "[[route]]\nname = \"r\"\nstable = {{ endpoints = [\"127.0.0.1:1\"] }}\ncanary = {{ endpoints = [\"127.0.0.1:2\"], version = \"v1\" }}\ncanary_weight = {weight}\n"
        );
        parse_str(&toml, Path::new("t.toml")).unwrap()
    }

    /// Issue 13: building the next generation leaves the live one alone; only `apply`,
    /// right before the swap, hands the kept runtime its new config.
    #[tokio::test]
    async fn a_candidate_touches_no_live_runtime_until_applied() {
        let (shared, _trips) = Shared::new(Arc::new(Events::new(None)), Telemetry::new());
        let now = Instant::now();
        let live = Snapshot::build(config(10), 1, None, &shared, now);
        let runtime = Arc::clone(&live.routes[0].runtime);
        let candidate = Snapshot::candidate(config(40), 2, Some(&live), &shared, now);
        assert_eq!(runtime.status(now).configured_weight, 10.0);
        assert_eq!(runtime.effective().percent(), 10.0);
        let next = candidate.apply(now);
        assert!(
            Arc::ptr_eq(&next.routes[0].runtime, &runtime),
            "same canary: kept"
        );
        assert_eq!(runtime.status(now).configured_weight, 40.0);
        assert_eq!(runtime.effective().percent(), 40.0);
    }
}
