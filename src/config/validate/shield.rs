//! `[route.shield]`: which failed canary attempts are retried on stable, and the
//! retry budget (SPEC §11).

use std::time::Duration;

use http::Method;

use super::Ctx;

use crate::config::raw::RawShield;
use crate::config::{ShieldConfig, StatusMatch};

const DEFAULT_STATUSES: [StatusMatch; 3] = [
    StatusMatch::Exact(http::StatusCode::BAD_GATEWAY),
    StatusMatch::Exact(http::StatusCode::SERVICE_UNAVAILABLE),
    StatusMatch::Exact(http::StatusCode::GATEWAY_TIMEOUT),
];
/// RFC 9110 §9.2.2.
const IDEMPOTENT: [Method; 6] = [
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::TRACE,
    Method::PUT,
    Method::DELETE,
];
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Beyond this a request body is better streamed than held for a retry.
const MAX_MAX_BODY_BYTES: i64 = 16 * 1024 * 1024;
const DEFAULT_BUDGET_RATIO: f64 = 0.2;
const DEFAULT_MIN_RETRIES_PER_SECOND: u32 = 10;

// === impl Ctx ===

impl Ctx<'_> {
    pub(super) fn shield(&mut self, raw: &RawShield, at: &str) -> Option<ShieldConfig> {
        let statuses = match &raw.statuses {
            Some(list) => {
                let statuses: Vec<_> = list
                    .get_ref()
                    .iter()
                    .enumerate()
                    .map(|(i, status)| self.status_match(status, &format!("{at}.statuses[{i}]")))
                    .collect();
                statuses.into_iter().collect()
            }
            None => Some(DEFAULT_STATUSES.to_vec()),
        };
        let methods = match &raw.methods {
            Some(list) => {
                let mut ok = true;
                let mut methods = Vec::new();
                for (i, method) in list.get_ref().iter().enumerate() {
                    let key = format!("{at}.methods[{i}]");
                    match Method::from_bytes(method.get_ref().as_bytes()) {
                        Ok(m) if m == Method::CONNECT => {
                            self.error(method.span(), &key, "CONNECT is never retried");
                            ok = false;
                        }
                        Ok(m) => methods.push(m),
                        Err(_) => {
                            let message =
                                format!("invalid method `{}` (e.g. \"GET\")", method.get_ref());
                            self.error(method.span(), &key, message);
                            ok = false;
                        }
                    }
                }
                ok.then_some(methods)
            }
            None => Some(IDEMPOTENT.to_vec()),
        };
        let max_body_bytes = match &raw.max_body_bytes {
            Some(value) => {
                let n = *value.get_ref();
                let ok = (0..=MAX_MAX_BODY_BYTES).contains(&n);
                if !ok {
                    let message =
                        format!("must be between 0 and {MAX_MAX_BODY_BYTES} bytes, got {n}");
                    self.error(value.span(), &format!("{at}.max_body_bytes"), message);
                }
                ok.then_some(n as usize)
            }
            None => Some(DEFAULT_MAX_BODY_BYTES),
        };
        let budget_ratio = match &raw.budget_ratio {
            Some(value) => {
                let ratio = value.get_ref().0;
                let ok = (0.0..=1.0).contains(&ratio);
                if !ok {
                    let message = format!(
                        "must be a fraction in [0, 1] of the route's requests, e.g. 0.2, got {ratio}"
                    );
                    self.error(value.span(), &format!("{at}.budget_ratio"), message);
                }
                ok.then_some(ratio)
            }
            None => Some(DEFAULT_BUDGET_RATIO),
        };
        let min_retries_per_second = match &raw.min_retries_per_second {
            Some(value) => {
                let n = u32::try_from(*value.get_ref())
                    .ok()
                    .filter(|n| *n <= 100_000);
                if n.is_none() {
                    let message = format!("must be between 0 and 100000, got {}", value.get_ref());
                    self.error(
                        value.span(),
                        &format!("{at}.min_retries_per_second"),
                        message,
                    );
                }
                n
            }
            None => Some(DEFAULT_MIN_RETRIES_PER_SECOND),
        };
        let per_try_timeout = match &raw.per_try_timeout {
            Some(value) => self
                .duration(value, &format!("{at}.per_try_timeout"))
                .map(Some),
            None => Some(None::<Duration>),
        };
        Some(ShieldConfig {
            statuses: statuses?,
            methods: methods?,
            max_body_bytes: max_body_bytes?,
            budget_ratio: budget_ratio?,
            min_retries_per_second: min_retries_per_second?,
            per_try_timeout: per_try_timeout?,
        })
    }
}
