//! `[notify]`: the webhook URL and its TLS, custom headers, the signing secret, the
//! event filter and the retry policy (SPEC §9).
//!
//! Every key is checked on its own, so one `check` run reports each bad key; the
//! section is valid only when all of them are.

use std::path::PathBuf;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::Uri;
use toml::Spanned;

use super::Ctx;
use crate::config::raw::RawNotify;
use crate::config::{NotifyConfig, UpstreamTls};

/// The kinds delivered when `events` is absent: the decisions, not config reloads.
const DEFAULT_EVENTS: [&str; 6] = [
    "rollback",
    "would_rollback",
    "step",
    "promote",
    "pause",
    "resume",
];
const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// More attempts only hold later events back behind a receiver that is down.
const MAX_ATTEMPTS_RANGE: std::ops::RangeInclusive<i64> = 1..=20;
const DEFAULT_BACKOFF: Duration = Duration::from_millis(500);
/// The notifier caps the doubled delay here too (`notify::MAX_BACKOFF`).
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Events are delivered in order: one slow attempt holds every later event back.
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
/// Set by the notifier itself, or hop-by-hop (meaningless on one request).
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "x-canary-proxy-signature",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

// === impl Ctx ===

impl Ctx<'_> {
    pub(super) fn notify(&mut self, raw: &Spanned<RawNotify>) -> Option<NotifyConfig> {
        let notify = raw.get_ref();
        let webhook = match &notify.webhook {
            Some(webhook) => self.webhook(webhook),
            None => {
                self.missing(raw.span(), "notify.webhook");
                None
            }
        };
        let https = webhook
            .as_ref()
            .is_some_and(|uri| uri.scheme_str() == Some("https"));
        // Only judged against a webhook that parsed: otherwise its own error says it.
        let tls = match &webhook {
            Some(_) => self.webhook_tls(notify.ca_file.as_ref(), https),
            None => Some(None),
        };
        let headers = match &notify.headers {
            Some(headers) => self.webhook_headers(headers.get_ref()),
            None => Some(Vec::new()),
        };
        let secret = match &notify.secret_file {
            Some(file) => self.secret(file).map(|(s, p)| (s, Some(p))),
            None => Some((None, None)),
        };
        let events = match &notify.events {
            Some(list) => self.event_kinds(list),
            None => Some(DEFAULT_EVENTS.to_vec()),
        };
        let max_attempts = match &notify.max_attempts {
            Some(value) if MAX_ATTEMPTS_RANGE.contains(value.get_ref()) => {
                u32::try_from(*value.get_ref()).ok()
            }
            Some(value) => {
                let message = format!(
                    "must be between {} and {}, got {}",
                    MAX_ATTEMPTS_RANGE.start(),
                    MAX_ATTEMPTS_RANGE.end(),
                    value.get_ref()
                );
                self.error(value.span(), "notify.max_attempts", message);
                None
            }
            None => Some(DEFAULT_MAX_ATTEMPTS),
        };
        let backoff = self.bounded_duration(
            notify.backoff.as_ref(),
            "notify.backoff",
            DEFAULT_BACKOFF,
            MAX_BACKOFF,
        );
        let timeout = self.bounded_duration(
            notify.timeout.as_ref(),
            "notify.timeout",
            DEFAULT_TIMEOUT,
            MAX_TIMEOUT,
        );
        let (secret, secret_file) = secret?;
        Some(NotifyConfig {
            webhook: webhook?,
            tls: tls?,
            headers: headers?,
            secret,
            secret_file,
            events: events?,
            max_attempts: max_attempts?,
            backoff: backoff?,
            timeout: timeout?,
        })
    }

    /// An `http://` or `https://` URL with a host and no user info.
    fn webhook(&mut self, value: &Spanned<String>) -> Option<Uri> {
        const KEY: &str = "notify.webhook";
        let raw = value.get_ref();
        let uri = raw.parse::<Uri>().ok().filter(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.authority().is_some_and(|a| !a.host().is_empty())
        });
        let Some(uri) = uri else {
            let message = format!(
                "`{raw}` is not an http:// or https:// URL with a host, e.g. https://hooks.example.com/canary"
            );
            self.error(value.span(), KEY, message);
            return None;
        };
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            let message =
                format!("`{raw}` must not contain user info (user:password@): send credentials with `headers`");
            self.error(value.span(), KEY, message);
            return None;
        }
        Some(uri)
    }

    /// The client TLS config of an `https://` webhook; `ca_file` only applies to one.
    fn webhook_tls(
        &mut self,
        ca_file: Option<&Spanned<String>>,
        https: bool,
    ) -> Option<Option<UpstreamTls>> {
        const KEY: &str = "notify.ca_file";
        if !https {
            if let Some(ca) = ca_file {
                self.error(
                    ca.span(),
                    KEY,
                    "only applies to an https:// webhook; this one is http://",
                );
                return None;
            }
            return Some(None);
        }
        let ca = match ca_file {
            Some(ca) => Some((self.path(ca, KEY)?, ca.span())),
            None => None,
        };
        // Offline: not read; a placeholder config with the webpki roots.
        let read_ca = match &ca {
            Some((path, _)) if !self.skip_offline(KEY, path) => Some(path.as_path()),
            _ => None,
        };
        match crate::tls::client_config(read_ca, None) {
            Ok(config) => Some(Some(UpstreamTls {
                ca_file: ca.map(|(path, _)| path),
                server_name: None,
                client_cert: None,
                config: std::sync::Arc::new(config),
            })),
            Err(err) => {
                let span = ca.map_or(0..0, |(_, span)| span);
                self.error(span, KEY, err.to_string());
                None
            }
        }
    }

    /// Valid, distinct header names the notifier does not set itself; valid values.
    fn webhook_headers(
        &mut self,
        raw: &std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let mut ok = true;
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(raw.len());
        for (name, value) in raw {
            let key = format!("notify.headers.\"{}\"", name.get_ref());
            let Ok(parsed) = HeaderName::from_bytes(name.get_ref().as_bytes()) else {
                let message = format!("`{}` is not a valid HTTP header name", name.get_ref());
                self.error(name.span(), &key, message);
                ok = false;
                continue;
            };
            if RESERVED_HEADERS.contains(&parsed.as_str()) {
                let message = format!(
                    "`{}` is set by canary-proxy (or hop-by-hop) and cannot be configured",
                    name.get_ref()
                );
                self.error(name.span(), &key, message);
                ok = false;
                continue;
            }
            if headers.iter().any(|(n, _)| *n == parsed) {
                let message = format!(
                    "`{}` is listed twice (header names are case-insensitive)",
                    name.get_ref()
                );
                self.error(name.span(), &key, message);
                ok = false;
                continue;
            }
            let Ok(mut parsed_value) = HeaderValue::from_str(value.get_ref()) else {
                let message = "not a valid header value: visible ASCII, spaces and tabs only (no line breaks or control characters)";
                self.error(value.span(), &key, message);
                ok = false;
                continue;
            };
            parsed_value.set_sensitive(true);
            headers.push((parsed, parsed_value));
        }
        ok.then_some(headers)
    }

    /// Reads the signing key: relative to the config's directory, trimmed, non-empty.
    /// Offline: not read (`None`).
    fn secret(&mut self, file: &Spanned<String>) -> Option<(Option<String>, PathBuf)> {
        const KEY: &str = "notify.secret_file";
        let path = self.path(file, KEY)?;
        if self.skip_offline(KEY, &path) {
            return Some((None, path));
        }
        match std::fs::read_to_string(&path) {
            Ok(text) if text.trim().is_empty() => {
                let message = format!("secret file is empty: {}", path.display());
                self.error(file.span(), KEY, message);
                None
            }
            Ok(text) => Some((Some(text.trim().to_owned()), path)),
            Err(err) => {
                let message = format!("cannot read secret file {}: {err}", path.display());
                self.error(file.span(), KEY, message);
                None
            }
        }
    }

    /// A non-empty list of distinct, known event kinds.
    fn event_kinds(&mut self, list: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<&'static str>> {
        let known = crate::events::KINDS.join(", ");
        if list.get_ref().is_empty() {
            let message = format!(
                "must list at least one event kind ({known}); to send nothing, remove [notify]"
            );
            self.error(list.span(), "notify.events", message);
            return None;
        }
        let mut ok = true;
        let mut kinds: Vec<&'static str> = Vec::with_capacity(list.get_ref().len());
        for (i, entry) in list.get_ref().iter().enumerate() {
            let key = format!("notify.events[{i}]");
            let name = entry.get_ref().as_str();
            match crate::events::KINDS.into_iter().find(|k| *k == name) {
                Some(kind) if kinds.contains(&kind) => {
                    self.error(entry.span(), &key, format!("`{name}` is listed twice"));
                    ok = false;
                }
                Some(kind) => kinds.push(kind),
                None => {
                    let message = format!("unknown event kind `{name}`: use one of {known}");
                    self.error(entry.span(), &key, message);
                    ok = false;
                }
            }
        }
        ok.then_some(kinds)
    }

    /// A humantime duration in `(0, max]`, or `default` when absent.
    fn bounded_duration(
        &mut self,
        value: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let duration = self.duration(value, key)?;
        if duration > max {
            let message = format!(
                "must be at most {}, got {}",
                humantime::format_duration(max),
                value.get_ref()
            );
            self.error(value.span(), key, message);
            return None;
        }
        Some(duration)
    }
}
