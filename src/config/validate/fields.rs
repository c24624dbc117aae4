//! Checks for single values that recur across sections: durations, endpoints, host
//! names, header names, sticky sources, status matchers, weights.
//!
//! Each records an `Invalid` at the value's span and returns `None` on failure.

use std::time::Duration;

use http::header::HeaderName;
use http::uri::Authority;
use http::StatusCode;
use toml::Spanned;

use super::Ctx;
use crate::config::raw::{Number, StatusEntry};
use crate::config::{Endpoint, Protocol, Scheme, StatusMatch, StickySource, Weight};

const WEIGHT_MESSAGE: &str = "must be a percentage between 0 and 100 with at most two decimals";

// === impl Ctx ===

impl Ctx<'_> {
    /// A humantime duration greater than zero, or `default` when absent.
    pub(super) fn duration_or(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        match value {
            Some(value) => self.duration(value, key),
            None => Some(default),
        }
    }

    /// A humantime duration greater than zero.
    pub(super) fn duration(&mut self, value: &Spanned<String>, key: &str) -> Option<Duration> {
        let duration = self.duration_allow_zero(value, key)?;
        if duration.is_zero() {
            self.error(value.span(), key, "must be greater than 0");
            return None;
        }
        Some(duration)
    }

    /// A humantime duration, zero allowed.
    pub(super) fn duration_allow_zero(
        &mut self,
        value: &Spanned<String>,
        key: &str,
    ) -> Option<Duration> {
        match humantime::parse_duration(value.get_ref()) {
            Ok(duration) => Some(duration),
            Err(err) => {
                let message = format!(
                    "invalid duration `{}`: {err} (write e.g. \"250ms\", \"30s\", \"5m\")",
                    value.get_ref()
                );
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// A percentage with 0.01 resolution.
    pub(super) fn weight(&mut self, value: &Spanned<Number>, key: &str) -> Option<Weight> {
        let weight = Weight::from_percent(value.get_ref().0);
        if weight.is_none() {
            let message = format!("{WEIGHT_MESSAGE}, got {}", value.get_ref().0);
            self.error(value.span(), key, message);
        }
        weight
    }

    /// `http1` (or `http/1.1`) or `h2`; HTTP/1.1 when absent.
    pub(super) fn protocol(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
    ) -> Option<Protocol> {
        let Some(value) = value else {
            return Some(Protocol::Http1);
        };
        match value.get_ref().as_str() {
            "http1" | "http/1.1" => Some(Protocol::Http1),
            "h2" => Some(Protocol::Http2),
            other => {
                let message =
                    format!("unknown protocol `{other}`: use \"http1\" or \"h2\" (HTTP/2 prior knowledge, e.g. gRPC)");
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// A non-empty list of distinct endpoints. `key` names the list, e.g.
    /// `route[0].stable.endpoints`; `table` is the span of the owning table, used
    /// when the list is missing.
    pub(super) fn endpoints(
        &mut self,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
        table: std::ops::Range<usize>,
        key: &str,
    ) -> Option<Vec<Endpoint>> {
        let Some(list) = value else {
            self.error(
                table,
                key,
                "missing required key `endpoints`: an upstream needs at least one endpoint",
            );
            return None;
        };
        if list.get_ref().is_empty() {
            self.error(
                list.span(),
                key,
                "must list at least one endpoint (host:port)",
            );
            return None;
        }
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(list.get_ref().len());
        let mut ok = true;
        for (i, entry) in list.get_ref().iter().enumerate() {
            let entry_key = format!("{key}[{i}]");
            let Some(endpoint) = self.endpoint(entry, &entry_key) else {
                ok = false;
                continue;
            };
            if let Some(first) = endpoints.iter().position(|e| *e == endpoint) {
                let message = format!("duplicate endpoint `{endpoint}` (same as {key}[{first}])");
                self.error(entry.span(), &entry_key, message);
                ok = false;
                continue;
            }
            endpoints.push(endpoint);
        }
        ok.then_some(endpoints)
    }

    /// `host:port` or `http://host:port` (a single trailing `/` is tolerated).
    fn endpoint(&mut self, value: &Spanned<String>, key: &str) -> Option<Endpoint> {
        let raw = value.get_ref().as_str();
        let (scheme, rest) = match raw.split_once("://") {
            None => (Scheme::Http, raw),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((scheme, _)) => {
                let message =
                    format!("unsupported scheme `{scheme}`: write host:port, http://host:port or https://host:port");
                self.error(value.span(), key, message);
                return None;
            }
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let problem = if rest.contains(['/', '?', '#']) {
            Some("must not have a path or query: write host:port or http://host:port")
        } else if rest.contains('@') {
            Some("must not contain user info: write host:port or http://host:port")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.error(value.span(), key, format!("`{raw}` {problem}"));
            return None;
        }
        let authority = match rest.parse::<Authority>() {
            Ok(authority) if !authority.host().is_empty() => authority,
            _ => {
                let message =
                    format!("`{raw}` is not a valid endpoint: write host:port or http://host:port");
                self.error(value.span(), key, message);
                return None;
            }
        };
        // After an IPv6 literal's `]`, a `:` can only introduce a port.
        let has_port = authority
            .as_str()
            .rsplit(']')
            .next()
            .is_some_and(|tail| tail.contains(':'));
        match authority.port_u16() {
            Some(port) if port != 0 => Some(Endpoint { scheme, authority }),
            _ if has_port => {
                let message = format!("`{raw}`: the port must be between 1 and 65535");
                self.error(value.span(), key, message);
                None
            }
            _ => {
                let message =
                    format!("`{raw}`: the port is required (host:port, e.g. 127.0.0.1:9001)");
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// A route's `host`: lower-cased, a `:port` suffix stripped, then it must be a
    /// valid DNS name or IPv4 address.
    pub(super) fn host(&mut self, value: &Spanned<String>, key: &str) -> Option<String> {
        let raw = value.get_ref();
        let lower = raw.to_ascii_lowercase();
        let problem = if lower.contains("://") {
            Some("must be a bare host name, without a scheme")
        } else if lower.contains(['/', '?', '#']) {
            Some("must be a bare host name, without a path")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.error(value.span(), key, format!("`{raw}` {problem}"));
            return None;
        }
        let host = match lower.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => host,
            _ => lower.as_str(),
        };
        if !is_hostname(host) {
            let message = format!(
                "`{raw}` is not a valid host name (letters, digits, '-' and '.'; e.g. shop.example.com)"
            );
            self.error(value.span(), key, message);
            return None;
        }
        Some(host.to_owned())
    }

    /// An HTTP header name (stored lower-case).
    pub(super) fn header_name(&mut self, value: &Spanned<String>, key: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(value.get_ref().as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                let message = format!("`{}` is not a valid HTTP header name", value.get_ref());
                self.error(value.span(), key, message);
                None
            }
        }
    }

    /// `header:NAME`, `cookie:NAME`, `client_ip` or `forwarded_for:N` (N = 1..=255
    /// trusted proxies in front).
    pub(super) fn sticky_source(
        &mut self,
        value: &Spanned<String>,
        key: &str,
    ) -> Option<StickySource> {
        let raw = value.get_ref().as_str();
        let valid = match raw.split_once(':') {
            None if raw == "client_ip" => return Some(StickySource::ClientIp),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .ok()
                .map(StickySource::Header),
            Some(("cookie", name)) if !name.is_empty() && name.chars().all(is_tchar) => {
                Some(StickySource::Cookie(name.to_owned()))
            }
            Some(("forwarded_for", hops)) => {
                let hops = hops.parse::<std::num::NonZeroU8>().ok();
                if hops.is_none() {
                    let message = format!(
                        "invalid sticky source `{raw}`: N in \"forwarded_for:N\" is the number of trusted proxies in front of this one, 1..=255 (1: the address the nearest one appended to X-Forwarded-For)"
                    );
                    self.error(value.span(), key, message);
                }
                return hops.map(StickySource::ForwardedFor);
            }
            _ => None,
        };
        if valid.is_none() {
            let message = format!(
                "invalid sticky source `{raw}`: use \"header:NAME\", \"cookie:NAME\", \"client_ip\" or \"forwarded_for:N\" (NAME a valid header or cookie name, N the number of trusted proxies in front)"
            );
            self.error(value.span(), key, message);
        }
        valid
    }

    /// `"1xx"`..`"5xx"`, or a status code 100..=599 as a string or an integer.
    pub(super) fn status_match(
        &mut self,
        value: &Spanned<StatusEntry>,
        key: &str,
    ) -> Option<StatusMatch> {
        let matched = match value.get_ref() {
            StatusEntry::Text(text) => {
                let lower = text.to_ascii_lowercase();
                match lower.as_bytes() {
                    [class @ b'1'..=b'5', b'x', b'x'] => Some(StatusMatch::Class(class - b'0')),
                    _ => lower.parse::<i64>().ok().and_then(status_code),
                }
            }
            StatusEntry::Code(code) => status_code(*code),
        };
        if matched.is_none() {
            let shown = match value.get_ref() {
                StatusEntry::Text(text) => format!("\"{text}\""),
                StatusEntry::Code(code) => code.to_string(),
            };
            let message = format!(
                "invalid error status {shown}: use a class \"1xx\"..\"5xx\" or a status code 100..=599"
            );
            self.error(value.span(), key, message);
        }
        matched
    }
}

fn status_code(code: i64) -> Option<StatusMatch> {
    let code = u16::try_from(code)
        .ok()
        .filter(|c| (100..=599).contains(c))?;
    StatusCode::from_u16(code).ok().map(StatusMatch::Exact)
}

/// RFC 1123 host name (which covers dotted IPv4), at most 253 characters.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// RFC 9110 `tchar`, the characters of a token (cookie names are tokens).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}
