//! The serde mirror of the TOML file.
//!
//! Every struct denies unknown keys, so a typo is an error rather than a silently
//! ignored setting. Every value a later check may reject is wrapped in `Spanned`, so
//! `validate` can name its line and column. Values are kept loose here (durations,
//! addresses, protocols and sticky sources are plain strings; numbers accept integers
//! and floats): deserialization stops at the first error, while `validate` reports
//! every problem at once, so the more that is checked there, the better the report.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    /// `[server]`; optional, every key has a default.
    pub(super) server: Option<Spanned<RawServer>>,
    /// `[admin]`; absent means no admin listener.
    pub(super) admin: Option<Spanned<RawAdmin>>,
    /// `[state]`; absent means decisions live in memory only.
    pub(super) state: Option<Spanned<RawState>>,
    /// `[notify]`; absent means no webhook.
    pub(super) notify: Option<Spanned<RawNotify>>,
    /// `[log]`; absent means no access log and no side header.
    pub(super) log: Option<Spanned<RawLog>>,
    /// `[fleet]`; absent means this instance judges alone (SPEC §10).
    pub(super) fleet: Option<Spanned<RawFleet>>,
    /// `[[route]]`; at least one is required (checked in `validate`).
    pub(super) route: Option<Spanned<Vec<Spanned<RawRoute>>>>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    /// `ip:port` of the downstream listener.
    pub(super) listen: Option<Spanned<String>>,
    /// `tls = { cert, key, client_ca }`: terminate TLS on the listener.
    pub(super) tls: Option<Spanned<RawServerTls>>,
    /// Humantime duration.
    pub(super) connect_timeout: Option<Spanned<String>>,
    /// Humantime duration.
    pub(super) request_timeout: Option<Spanned<String>>,
    /// Humantime duration.
    pub(super) header_read_timeout: Option<Spanned<String>>,
    /// Signed so a negative value gets a range message rather than a type error.
    pub(super) max_header_bytes: Option<Spanned<i64>>,
    /// Humantime duration; `0s` is allowed.
    pub(super) drain_timeout: Option<Spanned<String>>,
    pub(super) workers: Option<Spanned<i64>>,
}

/// `[server] tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServerTls {
    /// PEM certificate chain, leaf first.
    pub(super) cert: Option<Spanned<String>>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(super) key: Option<Spanned<String>>,
    /// PEM CA bundle: when set, clients must present a certificate it signed.
    pub(super) client_ca: Option<Spanned<String>>,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    /// `ip:port` of the admin listener.
    pub(super) listen: Option<Spanned<String>>,
    /// Path of the bearer token file, relative to the config file's directory.
    pub(super) token_file: Option<Spanned<String>>,
}

/// `[state]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    /// Directory for persisted decisions, relative to the config file's directory.
    pub(super) dir: Option<Spanned<String>>,
}

/// `[notify]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    /// `http(s)://host[:port]/path` receiving decision events.
    pub(super) webhook: Option<Spanned<String>>,
    /// CA bundle that verifies an `https://` webhook (default: the webpki roots).
    pub(super) ca_file: Option<Spanned<String>>,
    /// Extra request headers, name -> value (e.g. `Authorization`).
    pub(super) headers: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
    /// File holding the HMAC-SHA256 signing key, relative to the config file's directory.
    pub(super) secret_file: Option<Spanned<String>>,
    /// Event kinds to deliver (default: the decisions).
    pub(super) events: Option<Spanned<Vec<Spanned<String>>>>,
    /// POST attempts per event. Signed so a negative value gets a range message.
    pub(super) max_attempts: Option<Spanned<i64>>,
    /// Humantime duration: the first retry delay (then doubled).
    pub(super) backoff: Option<Spanned<String>>,
    /// Humantime duration: one attempt, connect to response head.
    pub(super) timeout: Option<Spanned<String>>,
}

/// `[fleet]` (SPEC §10).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    /// Instances with the same name judge together.
    pub(super) name: Option<Spanned<String>>,
    /// etcd v3 client URLs, `http://host:port` or `https://host:port`.
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    /// This instance's name (default: the host name).
    pub(super) instance: Option<Spanned<String>>,
    /// Humantime duration between counter publications.
    pub(super) publish_interval: Option<Spanned<String>>,
    /// Humantime duration without an etcd round trip before local judgement.
    pub(super) stale_after: Option<Spanned<String>>,
    /// Key prefix in etcd (default `/canary-proxy/`).
    pub(super) prefix: Option<Spanned<String>>,
    /// `https://` endpoints: CA and optional client certificate.
    pub(super) tls: Option<Spanned<RawFleetTls>>,
}

/// `[fleet] tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleetTls {
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    /// `"stderr"` or a file path, relative to the config file's directory.
    pub(super) access: Option<Spanned<String>>,
    /// Add `x-canary-proxy-side` to responses.
    pub(super) side_header: Option<Spanned<bool>>,
}

/// One `[[route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) name: Option<Spanned<String>>,
    pub(super) host: Option<Spanned<String>>,
    pub(super) path_prefix: Option<Spanned<String>>,
    pub(super) stable: Option<Spanned<RawStable>>,
    pub(super) canary: Option<Spanned<RawCanary>>,
    /// Percent.
    pub(super) canary_weight: Option<Spanned<Number>>,
    pub(super) sticky: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) salt: Option<Spanned<String>>,
    pub(super) override_header: Option<Spanned<String>>,
    pub(super) cohort: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) budget: Option<Spanned<RawBudget>>,
    pub(super) rollout: Option<Spanned<RawRollout>>,
    pub(super) shield: Option<Spanned<RawShield>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShield {
    pub(super) statuses: Option<Spanned<Vec<Spanned<StatusEntry>>>>,
    pub(super) methods: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) max_body_bytes: Option<Spanned<i64>>,
    pub(super) budget_ratio: Option<Spanned<Number>>,
    pub(super) min_retries_per_second: Option<Spanned<i64>>,
    pub(super) per_try_timeout: Option<Spanned<String>>,
}

/// `stable = { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStable {
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_fails: Option<Spanned<i64>>,
    pub(super) fail_timeout: Option<Spanned<String>>,
    /// CA bundle that verifies `https://` endpoints (default: the webpki roots).
    pub(super) ca_file: Option<Spanned<String>>,
    /// SNI and verified name for `https://` endpoints (default: the endpoint host).
    pub(super) server_name: Option<Spanned<String>>,
    /// Client certificate for upstream mutual TLS (with `client_key`).
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
}

/// `canary = { ... }`: like `stable`, plus a version label.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCanary {
    pub(super) endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) idle_timeout: Option<Spanned<String>>,
    pub(super) max_fails: Option<Spanned<i64>>,
    pub(super) fail_timeout: Option<Spanned<String>>,
    pub(super) version: Option<Spanned<String>>,
    /// CA bundle that verifies `https://` endpoints (default: the webpki roots).
    pub(super) ca_file: Option<Spanned<String>>,
    /// SNI and verified name for `https://` endpoints (default: the endpoint host).
    pub(super) server_name: Option<Spanned<String>>,
    /// Client certificate for upstream mutual TLS (with `client_key`).
    pub(super) client_cert: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
}

/// `[route.budget]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    pub(super) window: Option<Spanned<String>>,
    pub(super) min_requests: Option<Spanned<i64>>,
    pub(super) max_error_rate: Option<Spanned<Number>>,
    pub(super) max_error_rate_vs_stable: Option<Spanned<Number>>,
    pub(super) max_p99_latency: Option<Spanned<String>>,
    pub(super) error_statuses: Option<Spanned<Vec<Spanned<StatusEntry>>>>,
    /// `"threshold"` or `"sequential"`.
    pub(super) mode: Option<Spanned<String>>,
    pub(super) tolerance: Option<Spanned<Number>>,
    pub(super) margin: Option<Spanned<Number>>,
    pub(super) alpha: Option<Spanned<Number>>,
    pub(super) beta: Option<Spanned<Number>>,
    /// Humantime duration.
    pub(super) latency_slo: Option<Spanned<String>>,
    pub(super) enforce: Option<Spanned<bool>>,
}

/// `[route.rollout]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRollout {
    /// Percent.
    pub(super) steps: Option<Spanned<Vec<Spanned<Number>>>>,
    pub(super) step_interval: Option<Spanned<String>>,
}

/// A TOML integer or float, as `f64` (`10` and `10.0` mean the same weight).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Number(pub(super) f64);

/// One `error_statuses` entry: `"5xx"`, `"503"` or `503`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum StatusEntry {
    Text(String),
    Code(i64),
}

// === impl Number ===

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

#[derive(Debug)]
struct NumberVisitor;

impl Visitor<'_> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Number, E> {
        Ok(Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Number, E> {
        Ok(Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Number, E> {
        Ok(Number(v))
    }
}

// === impl StatusEntry ===

impl<'de> Deserialize<'de> for StatusEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusEntryVisitor)
    }
}

#[derive(Debug)]
struct StatusEntryVisitor;

impl Visitor<'_> for StatusEntryVisitor {
    type Value = StatusEntry;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status class like \"5xx\" or a status code like 503")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StatusEntry, E> {
        Ok(StatusEntry::Code(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StatusEntry, E> {
        Ok(StatusEntry::Code(i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StatusEntry, E> {
        Ok(StatusEntry::Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StatusEntry, E> {
        Ok(StatusEntry::Text(v))
    }
}
