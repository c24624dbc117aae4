//! One `[[route]]`: matching, upstreams, split, budget and rollout.

use std::ops::Range;
use std::time::Duration;

use http::header::HeaderName;
use toml::Spanned;

use super::Ctx;

use crate::config::raw::{Number, RawBudget, RawRollout, RawRoute, StatusEntry};
use crate::config::{
    BudgetConfig, BudgetMode, RolloutConfig, RouteConfig, Scheme, SequentialConfig, ShieldConfig,
    StatusMatch, StickySource, UpstreamConfig, UpstreamTls, Weight,
};

/// The `UpstreamKeys` of a `RawStable` or `RawCanary` (same fields, two serde types
/// so that `version` is only accepted under `canary`).
macro_rules! upstream_keys {
    ($up:expr) => {
        UpstreamKeys {
            endpoints: $up.endpoints.as_ref(),
            protocol: $up.protocol.as_ref(),
            idle_timeout: $up.idle_timeout.as_ref(),
            max_fails: $up.max_fails.as_ref(),
            fail_timeout: $up.fail_timeout.as_ref(),
            tls: TlsKeys {
                ca_file: $up.ca_file.as_ref(),
                server_name: $up.server_name.as_ref(),
                client_cert: $up.client_cert.as_ref(),
                client_key: $up.client_key.as_ref(),
            },
        }
    };
}

/// The keys of a `stable` / `canary` table (`canary.version` aside).
#[derive(Debug, Clone, Copy)]
struct UpstreamKeys<'a> {
    endpoints: Option<&'a Spanned<Vec<Spanned<String>>>>,
    protocol: Option<&'a Spanned<String>>,
    idle_timeout: Option<&'a Spanned<String>>,
    max_fails: Option<&'a Spanned<i64>>,
    fail_timeout: Option<&'a Spanned<String>>,
    tls: TlsKeys<'a>,
}

/// The TLS keys of a `stable` / `canary` table.
#[derive(Debug, Clone, Copy)]
struct TlsKeys<'a> {
    ca_file: Option<&'a Spanned<String>>,
    server_name: Option<&'a Spanned<String>>,
    client_cert: Option<&'a Spanned<String>>,
    client_key: Option<&'a Spanned<String>>,
}

/// Which requests a route takes.
struct Matching {
    name: String,
    host: Option<String>,
    path_prefix: String,
}

/// Where a route sends them.
struct Sides {
    stable: UpstreamConfig,
    canary: UpstreamConfig,
    canary_version: Option<String>,
}

/// How a route splits them between its sides.
struct Split {
    canary_weight: Weight,
    sticky: Vec<StickySource>,
    /// `None`: the route's name.
    salt: Option<String>,
    override_header: Option<HeaderName>,
    cohort: Vec<String>,
}

/// What judges the canary, moves its weight and shields users.
struct Policy {
    budget: BudgetConfig,
    rollout: Option<RolloutConfig>,
    shield: Option<ShieldConfig>,
}

const DEFAULT_PATH_PREFIX: &str = "/";
/// Below the 5 s keep-alive timeout of Node.js and many others.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// nginx's `max_fails` is 1 and Envoy's consecutive gateway failures 5.
const DEFAULT_MAX_FAILS: u32 = 3;
/// nginx's `fail_timeout`.
const DEFAULT_FAIL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_MIN_REQUESTS: u32 = 50;
const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;
const DEFAULT_ERROR_STATUSES: [StatusMatch; 1] = [StatusMatch::Class(5)];

const MISSING_STABLE: &str =
    "missing required table `stable` (e.g. stable = { endpoints = [\"127.0.0.1:9001\"] })";
const MISSING_CANARY: &str =
    "missing required table `canary` (e.g. canary = { endpoints = [\"127.0.0.1:9002\"] })";

// === impl Ctx ===

impl Ctx<'_> {
    /// Route `i`. Duplicate names are checked by the caller, across routes.
    pub(super) fn route(&mut self, i: usize, raw: &Spanned<RawRoute>) -> Option<RouteConfig> {
        let at = format!("route[{i}]");
        let header = raw.span();
        let route = raw.get_ref();
        // Every step runs (and reports its errors) before any result is used.
        let matching = self.route_matching(route, header.clone(), &at);
        let sides = self.route_sides(route, header, &at);
        let split = self.route_split(route, &at);
        let policy = self.route_policy(route, &at);

        let (
            Matching {
                name,
                host,
                path_prefix,
            },
            sides,
            split,
            policy,
        ) = (matching?, sides?, split?, policy?);
        Some(RouteConfig {
            salt: split.salt.unwrap_or_else(|| name.clone()),
            name,
            host,
            path_prefix,
            stable: sides.stable,
            canary: sides.canary,
            canary_version: sides.canary_version,
            canary_weight: split.canary_weight,
            sticky: split.sticky,
            override_header: split.override_header,
            cohort: split.cohort,
            budget: policy.budget,
            rollout: policy.rollout,
            shield: policy.shield,
        })
    }

    /// `name`, `host` and `path_prefix` of the route at `at`, whose table starts at
    /// `header`.
    fn route_matching(
        &mut self,
        route: &RawRoute,
        header: Range<usize>,
        at: &str,
    ) -> Option<Matching> {
        let name = match &route.name {
            Some(name) => self.route_name(name, &format!("{at}.name")),
            None => {
                self.missing(header, &format!("{at}.name"));
                None
            }
        };
        let host = match &route.host {
            Some(host) => self.host(host, &format!("{at}.host")).map(Some),
            None => Some(None),
        };
        let path_prefix = match &route.path_prefix {
            Some(prefix) => self.path_prefix(prefix, &format!("{at}.path_prefix")),
            None => Some(DEFAULT_PATH_PREFIX.to_owned()),
        };
        Some(Matching {
            name: name?,
            host: host?,
            path_prefix: path_prefix?,
        })
    }

    /// `stable`, `canary` and `canary.version`, both tables required.
    fn route_sides(&mut self, route: &RawRoute, header: Range<usize>, at: &str) -> Option<Sides> {
        let stable = match &route.stable {
            Some(stable) => {
                let up = stable.get_ref();
                self.upstream(upstream_keys!(up), stable.span(), &format!("{at}.stable"))
            }
            None => {
                self.error(header.clone(), &format!("{at}.stable"), MISSING_STABLE);
                None
            }
        };
        let (canary, canary_version) = match &route.canary {
            Some(canary) => {
                let up = canary.get_ref();
                let at = format!("{at}.canary");
                let upstream = self.upstream(upstream_keys!(up), canary.span(), &at);
                let version = match &up.version {
                    Some(version) => self.non_empty(version, &format!("{at}.version")).map(Some),
                    None => Some(None),
                };
                (upstream, version)
            }
            None => {
                self.error(header, &format!("{at}.canary"), MISSING_CANARY);
                (None, None)
            }
        };
        Some(Sides {
            stable: stable?,
            canary: canary?,
            canary_version: canary_version?,
        })
    }

    /// `canary_weight`, `sticky`, `salt`, `override_header` and `cohort`.
    fn route_split(&mut self, route: &RawRoute, at: &str) -> Option<Split> {
        let canary_weight = match &route.canary_weight {
            Some(weight) => self.weight(weight, &format!("{at}.canary_weight")),
            None => Some(Weight::ZERO),
        };
        let sticky = self.sticky(route.sticky.as_ref(), &format!("{at}.sticky"));
        let salt = match &route.salt {
            Some(salt) => self.non_empty(salt, &format!("{at}.salt")).map(Some),
            None => Some(None),
        };
        let override_header = match &route.override_header {
            Some(header) => self
                .header_name(header, &format!("{at}.override_header"))
                .map(Some),
            None => Some(None),
        };
        let cohort = self.cohort(route.cohort.as_ref(), &format!("{at}.cohort"));
        Some(Split {
            canary_weight: canary_weight?,
            sticky: sticky?,
            salt: salt?,
            override_header: override_header?,
            cohort: cohort?,
        })
    }

    /// `budget`, `rollout` and `shield`.
    fn route_policy(&mut self, route: &RawRoute, at: &str) -> Option<Policy> {
        let budget = match &route.budget {
            Some(budget) => self.budget(budget.get_ref(), &format!("{at}.budget")),
            None => Some(default_budget()),
        };
        let rollout = match &route.rollout {
            Some(rollout) => self.rollout(rollout, &format!("{at}.rollout")).map(Some),
            None => Some(None),
        };
        let shield = match &route.shield {
            Some(shield) => self
                .shield(shield.get_ref(), &format!("{at}.shield"))
                .map(Some),
            None => Some(None),
        };
        Some(Policy {
            budget: budget?,
            rollout: rollout?,
            shield: shield?,
        })
    }

    /// `stable` or `canary` (at `key`), whose table starts at `table`.
    fn upstream(
        &mut self,
        keys: UpstreamKeys<'_>,
        table: Range<usize>,
        key: &str,
    ) -> Option<UpstreamConfig> {
        let UpstreamKeys {
            endpoints,
            protocol,
            idle_timeout,
            max_fails,
            fail_timeout,
            tls,
        } = keys;
        let endpoints = self.endpoints(endpoints, table.clone(), &format!("{key}.endpoints"))?;
        let protocol = self.protocol(protocol, &format!("{key}.protocol"));
        let https = endpoints.iter().any(|e| e.scheme == Scheme::Https);
        let tls = self.upstream_tls(tls, https, table, key);
        let idle_timeout = self.duration_or(
            idle_timeout,
            &format!("{key}.idle_timeout"),
            DEFAULT_IDLE_TIMEOUT,
        );
        let fail_timeout = self.duration_or(
            fail_timeout,
            &format!("{key}.fail_timeout"),
            DEFAULT_FAIL_TIMEOUT,
        );
        let max_fails = match max_fails {
            Some(value) => {
                let n = u32::try_from(*value.get_ref()).ok().filter(|n| *n <= 1000);
                if n.is_none() {
                    let message = format!(
                        "must be between 0 (never eject) and 1000, got {}",
                        value.get_ref()
                    );
                    self.error(value.span(), &format!("{key}.max_fails"), message);
                }
                n
            }
            None => Some(DEFAULT_MAX_FAILS),
        };
        Some(UpstreamConfig {
            endpoints,
            protocol: protocol?,
            tls: tls?,
            idle_timeout: idle_timeout?,
            max_fails: max_fails?,
            fail_timeout: fail_timeout?,
        })
    }

    /// TLS settings of an upstream; they only make sense with `https://` endpoints.
    fn upstream_tls(
        &mut self,
        keys: TlsKeys<'_>,
        https: bool,
        table: Range<usize>,
        key: &str,
    ) -> Option<Option<UpstreamTls>> {
        let set = [
            ("ca_file", keys.ca_file),
            ("server_name", keys.server_name),
            ("client_cert", keys.client_cert),
            ("client_key", keys.client_key),
        ];
        if !https {
            let mut ok = true;
            for (name, value) in set {
                if let Some(value) = value {
                    let message = "only applies to https:// endpoints; this upstream has none";
                    self.error(value.span(), &format!("{key}.{name}"), message);
                    ok = false;
                }
            }
            return ok.then_some(None);
        }
        let ca_file = match keys.ca_file {
            Some(ca) => Some((self.path(ca, &format!("{key}.ca_file"))?, ca.span())),
            None => None,
        };
        let server_name = match keys.server_name {
            Some(name) => match rustls_pki_types::ServerName::try_from(name.get_ref().clone()) {
                Ok(parsed) => Some(parsed),
                Err(_) => {
                    let message = format!("`{}` is not a DNS name or IP address", name.get_ref());
                    self.error(name.span(), &format!("{key}.server_name"), message);
                    return None;
                }
            },
            None => None,
        };
        let client_cert = match (keys.client_cert, keys.client_key) {
            (Some(cert), Some(client_key)) => Some((
                self.path(cert, &format!("{key}.client_cert"))?,
                self.path(client_key, &format!("{key}.client_key"))?,
                client_key.span(),
            )),
            (None, None) => None,
            (Some(_), None) => {
                self.missing(table, &format!("{key}.client_key"));
                return None;
            }
            (None, Some(_)) => {
                self.missing(table, &format!("{key}.client_cert"));
                return None;
            }
        };
        if self.offline {
            // Not read: a placeholder config (the webpki roots, no client certificate).
            if let Some((ca, _)) = &ca_file {
                self.skip_offline(&format!("{key}.ca_file"), ca);
            }
            if let Some((cert, client_key, _)) = &client_cert {
                self.skip_offline(&format!("{key}.client_cert"), cert);
                self.skip_offline(&format!("{key}.client_key"), client_key);
            }
        }
        let (ca_path, pair) = if self.offline {
            (None, None)
        } else {
            let pair = client_cert
                .as_ref()
                .map(|(c, k, _)| (c.as_path(), k.as_path()));
            (ca_file.as_ref().map(|(p, _)| p.as_path()), pair)
        };
        if let (Some(ca), Some((_, span))) = (ca_path, &ca_file) {
            if let Err(err) = crate::tls::load_certs(ca) {
                self.error(span.clone(), &format!("{key}.ca_file"), err.to_string());
                return None;
            }
        }
        match crate::tls::client_config(ca_path, pair) {
            Ok(config) => Some(Some(UpstreamTls {
                ca_file: ca_file.map(|(p, _)| p),
                server_name,
                client_cert: client_cert.map(|(c, k, _)| (c, k)),
                config: std::sync::Arc::new(config),
            })),
            Err(err) => {
                let span = client_cert.map_or(table, |(_, _, span)| span);
                self.error(span, &format!("{key}.client_key"), err.to_string());
                None
            }
        }
    }

    /// Non-empty, `[A-Za-z0-9_.-]` only: it appears in admin URLs and metric labels.
    fn route_name(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let name = value.get_ref();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            let message = format!(
                "invalid route name `{name}`: use a non-empty name of letters, digits, '_', '.' and '-' (it appears in admin URLs and metric labels)"
            );
            self.error(value.span(), key, message);
            return None;
        }
        Some(name.clone())
    }

    fn path_prefix(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let prefix = value.get_ref();
        if !prefix.starts_with('/') {
            self.error(value.span(), key, format!("`{prefix}` must start with '/'"));
            return None;
        }
        if prefix.contains(['?', '#']) || prefix.chars().any(char::is_whitespace) {
            let message =
                format!("`{prefix}` must be a plain path: no query, fragment or whitespace");
            self.error(value.span(), key, message);
            return None;
        }
        Some(prefix.clone())
    }

    fn non_empty(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        if value.get_ref().is_empty() {
            self.error(value.span(), key, "must not be empty");
            return None;
        }
        Some(value.get_ref().clone())
    }

    /// Defaults to `["client_ip"]`.
    fn sticky(
        &mut self,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
    ) -> Option<Vec<StickySource>> {
        let Some(list) = value else {
            return Some(vec![StickySource::ClientIp]);
        };
        if list.get_ref().is_empty() {
            self.error(
                list.span(),
                key,
                "must list at least one sticky source (e.g. [\"client_ip\"])",
            );
            return None;
        }
        let sources: Vec<_> = list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, source)| self.sticky_source(source, &format!("{key}[{i}]")))
            .collect();
        sources.into_iter().collect()
    }

    fn cohort(
        &mut self,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
        key: &str,
    ) -> Option<Vec<String>> {
        let Some(list) = value else {
            return Some(Vec::new());
        };
        let members: Vec<_> = list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, member)| self.non_empty(member, &format!("{key}[{i}]")))
            .collect();
        members.into_iter().collect()
    }

    /// `[route.budget]`: each key checked on its own; `sequential` and `latency_slo`
    /// depend on `mode`.
    fn budget(&mut self, raw: &RawBudget, at: &str) -> Option<BudgetConfig> {
        let window = self.duration_or(raw.window.as_ref(), &format!("{at}.window"), DEFAULT_WINDOW);
        let min_requests =
            self.min_requests(raw.min_requests.as_ref(), &format!("{at}.min_requests"));
        let mode = self.budget_mode(raw.mode.as_ref(), &format!("{at}.mode"));
        let max_error_rate = self.max_error_rate(raw.max_error_rate.as_ref(), mode, at);
        let sequential = self.sequential(raw, mode, at);
        let latency_slo = self.latency_slo(raw.latency_slo.as_ref(), mode, at);
        let enforce = Some(raw.enforce.as_ref().is_none_or(|v| *v.get_ref()));
        let max_error_rate_vs_stable = self.vs_stable(raw.max_error_rate_vs_stable.as_ref(), at);
        let max_p99_latency = match &raw.max_p99_latency {
            Some(value) => self
                .duration(value, &format!("{at}.max_p99_latency"))
                .map(Some),
            None => Some(None),
        };
        let error_statuses = self.error_statuses(raw.error_statuses.as_ref(), at);
        Some(BudgetConfig {
            mode: mode?,
            window: window?,
            min_requests: min_requests?,
            max_error_rate: max_error_rate?,
            max_error_rate_vs_stable: max_error_rate_vs_stable?,
            max_p99_latency: max_p99_latency?,
            error_statuses: error_statuses?,
            sequential: sequential?,
            latency_slo: latency_slo?,
            enforce: enforce?,
        })
    }

    /// `min_requests`: at least 1 (default 50).
    fn min_requests(&mut self, value: Option<&Spanned<i64>>, key: &str) -> Option<u32> {
        let Some(value) = value else {
            return Some(DEFAULT_MIN_REQUESTS);
        };
        let n = u32::try_from(*value.get_ref()).ok().filter(|n| *n >= 1);
        if n.is_none() {
            let message = format!(
                "must be between 1 and {}, got {}",
                u32::MAX,
                value.get_ref()
            );
            self.error(value.span(), key, message);
        }
        n
    }

    /// `mode`: "sequential" (the default) or "threshold".
    fn budget_mode(&mut self, value: Option<&Spanned<String>>, key: &str) -> Option<BudgetMode> {
        let Some(value) = value else {
            return Some(BudgetMode::default());
        };
        match value.get_ref().as_str() {
            "threshold" => Some(BudgetMode::Threshold),
            "sequential" => Some(BudgetMode::Sequential),
            other => {
                let message =
                    format!("unknown mode `{other}`: use \"sequential\" or \"threshold\"");
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// `max_error_rate`: a fraction in (0, 1]; by default 5 % in threshold mode and
    /// none in sequential mode.
    fn max_error_rate(
        &mut self,
        value: Option<&Spanned<Number>>,
        mode: Option<BudgetMode>,
        at: &str,
    ) -> Option<Option<f64>> {
        let Some(value) = value else {
            // Threshold mode's main criterion; in sequential mode the test covers it.
            return Some((mode == Some(BudgetMode::Threshold)).then_some(DEFAULT_MAX_ERROR_RATE));
        };
        let rate = value.get_ref().0;
        let ok = rate > 0.0 && rate <= 1.0;
        if !ok {
            let message = format!("must be a fraction in (0, 1], e.g. 0.05 for 5 %, got {rate}");
            self.error(value.span(), &format!("{at}.max_error_rate"), message);
        }
        ok.then_some(Some(rate))
    }

    /// `latency_slo`: a duration, only in sequential mode.
    fn latency_slo(
        &mut self,
        value: Option<&Spanned<String>>,
        mode: Option<BudgetMode>,
        at: &str,
    ) -> Option<Option<Duration>> {
        match value {
            Some(value) if mode == Some(BudgetMode::Threshold) => {
                self.error(
                    value.span(),
                    &format!("{at}.latency_slo"),
                    "only applies with mode = \"sequential\" (use max_p99_latency in threshold mode)",
                );
                None
            }
            Some(value) => self.duration(value, &format!("{at}.latency_slo")).map(Some),
            None => Some(None),
        }
    }

    /// `max_error_rate_vs_stable`: a finite multiple above 1.0, or none.
    fn vs_stable(&mut self, value: Option<&Spanned<Number>>, at: &str) -> Option<Option<f64>> {
        let Some(value) = value else {
            return Some(None);
        };
        let ratio = value.get_ref().0;
        let ok = ratio.is_finite() && ratio > 1.0;
        if !ok {
            let message =
                format!("must be a finite multiple greater than 1.0 (e.g. 3.0), got {ratio}");
            self.error(
                value.span(),
                &format!("{at}.max_error_rate_vs_stable"),
                message,
            );
        }
        ok.then_some(Some(ratio))
    }

    /// `error_statuses`: a non-empty list of codes and classes (default `["5xx"]`).
    fn error_statuses(
        &mut self,
        value: Option<&Spanned<Vec<Spanned<StatusEntry>>>>,
        at: &str,
    ) -> Option<Vec<StatusMatch>> {
        let Some(list) = value else {
            return Some(DEFAULT_ERROR_STATUSES.to_vec());
        };
        if list.get_ref().is_empty() {
            self.error(
                list.span(),
                &format!("{at}.error_statuses"),
                "must list at least one status (e.g. [\"5xx\"])",
            );
            return None;
        }
        let statuses: Vec<_> = list
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, status)| self.status_match(status, &format!("{at}.error_statuses[{i}]")))
            .collect();
        statuses.into_iter().collect()
    }

    /// tolerance ≥ 1, margin in [0, 0.5], alpha and beta in (0, 0.5); only with
    /// mode = "sequential".
    fn sequential(
        &mut self,
        raw: &RawBudget,
        mode: Option<BudgetMode>,
        at: &str,
    ) -> Option<SequentialConfig> {
        let defaults = SequentialConfig::default();
        let mut ok = true;
        let mut field = |this: &mut Self,
                         value: Option<&Spanned<Number>>,
                         name: &str,
                         default: f64,
                         valid: &dyn Fn(f64) -> bool,
                         rule: &str|
         -> f64 {
            let Some(value) = value else { return default };
            let key = format!("{at}.{name}");
            if mode == Some(BudgetMode::Threshold) {
                this.error(
                    value.span(),
                    &key,
                    "only applies with mode = \"sequential\"",
                );
                ok = false;
                return default;
            }
            let x = value.get_ref().0;
            if !(x.is_finite() && valid(x)) {
                this.error(value.span(), &key, format!("{rule}, got {x}"));
                ok = false;
            }
            x
        };
        let tolerance = field(
            self,
            raw.tolerance.as_ref(),
            "tolerance",
            defaults.tolerance,
            &|x| x >= 1.0,
            "must be a ratio of at least 1.0 (2.0 = twice stable's error rate)",
        );
        let margin = field(
            self,
            raw.margin.as_ref(),
            "margin",
            defaults.margin,
            &|x| (0.0..=0.5).contains(&x),
            "must be a fraction in [0, 0.5] (0.01 = one percentage point)",
        );
        let alpha = field(
            self,
            raw.alpha.as_ref(),
            "alpha",
            defaults.alpha,
            &|x| x > 0.0 && x < 0.5,
            "must be a probability in (0, 0.5), e.g. 0.001",
        );
        let beta = field(
            self,
            raw.beta.as_ref(),
            "beta",
            defaults.beta,
            &|x| x > 0.0 && x < 0.5,
            "must be a probability in (0, 0.5), e.g. 0.05",
        );
        if ok && tolerance <= 1.0 && margin == 0.0 {
            let span = raw.tolerance.as_ref().map_or(0..0, Spanned::span);
            self.error(
                span,
                &format!("{at}.tolerance"),
                "tolerance 1.0 with margin 0 leaves no room between a healthy and a failing canary",
            );
            ok = false;
        }
        ok.then_some(SequentialConfig {
            tolerance,
            margin,
            alpha,
            beta,
        })
    }

    fn rollout(&mut self, raw: &Spanned<RawRollout>, at: &str) -> Option<RolloutConfig> {
        let rollout = raw.get_ref();
        let steps_key = format!("{at}.steps");
        let steps = match &rollout.steps {
            Some(steps) => self.steps(steps, &steps_key),
            None => {
                self.missing(raw.span(), &steps_key);
                None
            }
        };
        let interval_key = format!("{at}.step_interval");
        let step_interval = match &rollout.step_interval {
            Some(interval) => self.duration(interval, &interval_key),
            None => {
                self.missing(raw.span(), &interval_key);
                None
            }
        };
        Some(RolloutConfig {
            steps: steps?,
            step_interval: step_interval?,
        })
    }

    /// Non-empty, each in (0, 100], strictly increasing, ending at 100.
    fn steps(&mut self, list: &Spanned<Vec<Spanned<Number>>>, key: &str) -> Option<Vec<Weight>> {
        let Some(last) = list.get_ref().last() else {
            self.error(
                list.span(),
                key,
                "must list at least one step, ending with 100",
            );
            return None;
        };
        let mut steps = Vec::with_capacity(list.get_ref().len());
        let mut previous: Option<Weight> = None;
        let mut ok = true;
        for (i, step) in list.get_ref().iter().enumerate() {
            let step_key = format!("{key}[{i}]");
            let Some(weight) = self.weight(step, &step_key) else {
                ok = false;
                continue;
            };
            if weight == Weight::ZERO {
                self.error(step.span(), &step_key, "a step must be greater than 0");
                ok = false;
            } else if let Some(prev) = previous.filter(|prev| weight <= *prev) {
                let message = format!("steps must be strictly increasing: {weight} follows {prev}");
                self.error(step.span(), &step_key, message);
                ok = false;
            }
            previous = Some(weight);
            steps.push(weight);
        }
        let last_weight = Weight::from_percent(last.get_ref().0);
        if last_weight.is_some_and(|w| w != Weight::FULL) {
            let message =
                "the last step must be 100 (the rollout ends with the canary taking all traffic)";
            self.error(
                last.span(),
                &format!("{key}[{}]", list.get_ref().len() - 1),
                message,
            );
            ok = false;
        }
        ok.then_some(steps)
    }
}

fn default_budget() -> BudgetConfig {
    BudgetConfig {
        mode: BudgetMode::default(),
        window: DEFAULT_WINDOW,
        min_requests: DEFAULT_MIN_REQUESTS,
        max_error_rate: None,
        max_error_rate_vs_stable: None,
        max_p99_latency: None,
        error_statuses: DEFAULT_ERROR_STATUSES.to_vec(),
        sequential: SequentialConfig::default(),
        latency_slo: None,
        enforce: true,
    }
}
