//! `[fleet]`: the etcd cluster, the fleet's name and this instance's, the publish and
//! staleness periods, TLS (SPEC §10).

use std::time::Duration;

use toml::Spanned;

use super::Ctx;
use crate::config::raw::{RawFleet, RawFleetTls};
use crate::config::{FleetConfig, FleetTls};

const DEFAULT_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(3);
const DEFAULT_PREFIX: &str = "/canary-proxy/";
/// Publishing faster than this only loads etcd; slower delays every fleet verdict.
const PUBLISH_RANGE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));

// === impl Ctx ===

impl Ctx<'_> {
    pub(super) fn fleet(&mut self, raw: &Spanned<RawFleet>) -> Option<FleetConfig> {
        let fleet = raw.get_ref();
        let name = match &fleet.name {
            Some(name) => self.fleet_segment(name, "fleet.name"),
            None => {
                self.missing(raw.span(), "fleet.name");
                None
            }
        };
        let endpoints = match &fleet.endpoints {
            Some(list) => self.etcd_endpoints(list),
            None => {
                self.missing(raw.span(), "fleet.endpoints");
                None
            }
        };
        let instance = match &fleet.instance {
            Some(instance) => self.fleet_segment(instance, "fleet.instance"),
            None => Some(crate::events::host_name()),
        };
        let publish_interval = self.duration_or(
            fleet.publish_interval.as_ref(),
            "fleet.publish_interval",
            DEFAULT_PUBLISH_INTERVAL,
        );
        if let (Some(value), Some(interval)) = (&fleet.publish_interval, publish_interval) {
            if interval < PUBLISH_RANGE.0 || interval > PUBLISH_RANGE.1 {
                self.error(
                    value.span(),
                    "fleet.publish_interval",
                    "must be between 100ms and 60s",
                );
            }
        }
        let stale_after = self.duration_or(
            fleet.stale_after.as_ref(),
            "fleet.stale_after",
            DEFAULT_STALE_AFTER,
        );
        if let (Some(interval), Some(stale)) = (publish_interval, stale_after) {
            if stale < interval * 2 {
                let span = fleet
                    .stale_after
                    .as_ref()
                    .map_or(raw.span(), |value| value.span());
                self.error(
                    span,
                    "fleet.stale_after",
                    format!(
                        "must be at least twice publish_interval ({}), or every pause in publishing looks like an outage",
                        humantime::format_duration(interval)
                    ),
                );
            }
        }
        let prefix = match &fleet.prefix {
            Some(prefix) => self.fleet_prefix(prefix),
            None => Some(DEFAULT_PREFIX.to_string()),
        };
        let https = endpoints
            .as_ref()
            .is_some_and(|list: &Vec<String>| list.iter().any(|e| e.starts_with("https://")));
        let tls = match &fleet.tls {
            Some(tls) => self.fleet_tls(tls).map(Some),
            None if https => {
                self.error(
                    raw.span(),
                    "fleet.tls",
                    "https:// endpoints need [fleet] tls = { ca_file = \"…\" } (and cert/key for client certificates)",
                );
                None
            }
            None => Some(None),
        };
        if !cfg!(feature = "fleet") {
            self.error(
                raw.span(),
                "fleet",
                "this build has no fleet support: build with `cargo build --release --features fleet` (needs protoc) or use the release image",
            );
        }
        Some(FleetConfig {
            name: name?,
            endpoints: endpoints?,
            instance: instance?,
            publish_interval: publish_interval?,
            stale_after: stale_after?,
            prefix: prefix?,
            tls: tls?,
        })
    }

    /// A name used as one segment of an etcd key: 1–128 of `[A-Za-z0-9._-]`.
    fn fleet_segment(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let text = value.get_ref();
        let ok = !text.is_empty()
            && text.len() <= 128
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            self.error(
                value.span(),
                key,
                format!("`{text}` must be 1 to 128 letters, digits, `.`, `_` or `-` (it names an etcd key)"),
            );
            return None;
        }
        Some(text.clone())
    }

    fn fleet_prefix(&mut self, value: &Spanned<String>) -> Option<String> {
        let text = value.get_ref();
        if !text.starts_with('/') || !text.ends_with('/') || text.contains("//") {
            self.error(
                value.span(),
                "fleet.prefix",
                format!("`{text}` must start and end with `/`, e.g. \"/canary-proxy/\""),
            );
            return None;
        }
        Some(text.clone())
    }

    fn etcd_endpoints(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<String>> {
        if list.get_ref().is_empty() {
            self.error(
                list.span(),
                "fleet.endpoints",
                "must list at least one etcd client URL",
            );
            return None;
        }
        let mut endpoints = Vec::new();
        let mut ok = true;
        for value in list.get_ref() {
            let text = value.get_ref();
            let parsed = text.parse::<http::Uri>().ok().filter(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some_and(|a| a.port_u16().is_some())
                    && uri.path() == "/"
                    && uri.query().is_none()
            });
            if parsed.is_none() {
                self.error(
                    value.span(),
                    "fleet.endpoints",
                    format!("`{text}` is not an etcd client URL: expected http://host:port or https://host:port"),
                );
                ok = false;
                continue;
            }
            endpoints.push(text.trim_end_matches('/').to_string());
        }
        ok.then_some(endpoints)
    }

    fn fleet_tls(&mut self, raw: &Spanned<RawFleetTls>) -> Option<FleetTls> {
        let tls = raw.get_ref();
        let ca_file = match &tls.ca_file {
            Some(ca) => Some(self.readable(ca, "fleet.tls.ca_file")?),
            None => None,
        };
        let cert = match (&tls.cert, &tls.key) {
            (Some(cert), Some(key)) => Some((
                self.readable(cert, "fleet.tls.cert")?,
                self.readable(key, "fleet.tls.key")?,
            )),
            (None, None) => None,
            (Some(_), None) => {
                self.missing(raw.span(), "fleet.tls.key");
                return None;
            }
            (None, Some(_)) => {
                self.missing(raw.span(), "fleet.tls.cert");
                return None;
            }
        };
        Some(FleetTls { ca_file, cert })
    }

    /// A path that must be a readable file (recorded, not read, offline).
    fn readable(&mut self, value: &Spanned<String>, key: &str) -> Option<std::path::PathBuf> {
        let path = self.path(value, key)?;
        if self.skip_offline(key, &path) {
            return Some(path);
        }
        if let Err(err) = std::fs::metadata(&path).and_then(|m| {
            if m.is_file() {
                Ok(())
            } else {
                Err(std::io::Error::other("not a file"))
            }
        }) {
            self.error(
                value.span(),
                key,
                format!("cannot read {}: {err}", path.display()),
            );
            return None;
        }
        Some(path)
    }
}
