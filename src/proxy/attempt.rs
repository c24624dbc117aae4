//! One attempt: a request sent to one side of a route, as far as the response head.
//!
//! The side's endpoints are tried round robin, skipping ejected ones; a request that
//! was provably never sent (no connection could be made) goes to the side's next
//! endpoint. Every failure is recorded against the side in the judgement, and reported
//! to the endpoint's passive health; a retry after the keep-alive race is not a
//! failure (see `upstream::pool`).

use std::future::Future;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Response, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::config::Protocol;
use crate::error::{classify, ProxyError, Seen};
use crate::rollout::Outcome;
use crate::routing::Side;
use crate::snapshot::Route;
use crate::telemetry::{Class, RetryReason};
use crate::upstream::{Failed, HealthChange, Lease, RequestBody, Sent, Target, Upstream};

/// A response head from one side.
#[derive(Debug)]
pub struct Exchange<'r> {
    pub response: Response<Incoming>,
    /// Returns the connection to its pool; lives as long as the response body.
    pub lease: Option<Lease>,
    /// From the attempt's start to the response head.
    pub latency: Duration,
    /// The endpoint that answered (`host:port`), for the access log: a reference into
    /// the route, so the request path copies nothing when the log is off.
    pub endpoint: &'r Authority,
}

/// Sends `parts` + `body` to `side` of `route`, giving up at `deadline`; `start` is
/// when the attempt began (for its latency) and `timeout` what the deadline stands for
/// (in the error). The error hands the request back when it was never sent.
///
/// Not an `async fn`: that would copy `parts` once more, into the future's locals
/// (see `forward::proxy`).
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn send(
    route: &Route,
    side: Side,
    parts: Parts,
    body: RequestBody,
    start: Instant,
    deadline: Instant,
    timeout: Duration,
) -> impl Future<Output = Result<Exchange<'_>, Failed>> + Send + use<'_> {
    async move {
        let upstream = route.upstream(side);
        let mut req = Request::from_parts(parts, body);
        let tries = upstream.len().max(1);
        for attempt in 0..tries {
            let Some(target) = upstream.pick(start) else {
                return Err(Failed::unsent(ProxyError::NoEndpoint, req));
            };
            if let Err(error) = retarget(&mut req, route, upstream, target) {
                return Err(Failed::sent(error));
            }
            let sent = tokio::time::timeout_at(deadline, upstream.send(target, req, start)).await;
            let failed = match sent {
                Ok(Ok(Sent {
                    response,
                    lease,
                    keepalive_retries,
                })) => {
                    health(route, side, upstream, target, false, start);
                    if keepalive_retries > 0 {
                        route.path.retry(side, RetryReason::KeepaliveRace);
                    }
                    return Ok(Exchange {
                        response,
                        lease,
                        latency: start.elapsed(),
                        endpoint: &target.authority,
                    });
                }
                Ok(Err(failed)) => failed,
                Err(_elapsed) => Failed::sent(ProxyError::Timeout(timeout)),
            };
            // The endpoint's fault (no connection, a reset, a hang, garbage) counts against
            // the side and towards the endpoint's ejection; the client's (its body failed)
            // says nothing about either.
            if record_failure(route, side, &failed.error, start) {
                health(route, side, upstream, target, true, Instant::now());
            }
            match failed.unsent {
                Some(unsent) if attempt + 1 < tries && Instant::now() < deadline => {
                    tracing::debug!(route = %route.name, endpoint = %target.authority, error = %failed.error, "no connection; trying the side's next endpoint");
                    route.path.retry(side, RetryReason::Connect);
                    req = unsent;
                }
                _ => return Err(failed),
            }
        }
        unreachable!("the last try returns")
    }
}

/// Counts a failure without a response against `side`'s budget when
/// `error::classify` says it is the upstream's (not the client's: it aborted its
/// request body). Returns whether it counted.
pub fn record_failure(route: &Route, side: Side, error: &ProxyError, start: Instant) -> bool {
    let Some(kind) = classify(Seen::Failed(error)) else {
        return false;
    };
    let now = Instant::now();
    let outcome = Outcome {
        class: Class::Error,
        error: Some(kind),
        latency: now.saturating_duration_since(start),
    };
    route.runtime.record(side, outcome, now);
    true
}

fn health(
    route: &Route,
    side: Side,
    upstream: &Upstream,
    target: &Target,
    failed: bool,
    now: Instant,
) {
    match upstream.report(target, failed, now) {
        Some(HealthChange::Ejected) => {
            route.path.ejection(side);
            tracing::warn!(route = %route.name, side = side.as_str(), endpoint = %target.authority, max_fails = upstream.max_fails, fail_timeout = ?upstream.fail_timeout, "endpoint ejected after consecutive connect failures or resets");
        }
        Some(HealthChange::Restored) => {
            tracing::info!(route = %route.name, side = side.as_str(), endpoint = %target.authority, "endpoint back in rotation");
        }
        None => {}
    }
}

/// Points `req` at `target` of `upstream`, with the authority the upstream must see:
/// the request's `Host` (set from the target URI's authority by the head phase), else
/// the authority of an earlier attempt's HTTP/2 URI, else the route's `host`, else the
/// endpoint's (RFC 9112 §3.2: an upstream request always carries one). HTTP/1.1 gets
/// it as `Host` and an origin-form URI; HTTP/2 as `:authority`, with no `host` header
/// (RFC 9113 §8.3.1).
fn retarget(
    req: &mut Request<RequestBody>,
    route: &Route,
    upstream: &Upstream,
    target: &Target,
) -> Result<(), ProxyError> {
    let has_host = req.headers().get(HOST).is_some_and(|h| !h.is_empty());
    // Without a Host: an earlier attempt's HTTP/2 URI, else the route's, else the
    // endpoint's. Only parsed when it is needed (no Host, or an HTTP/2 upstream).
    let fallback = |req: &Request<RequestBody>| match req.uri().authority() {
        Some(authority) => authority.clone(),
        None => route
            .host
            .clone()
            .unwrap_or_else(|| target.authority.clone()),
    };
    let pq = req.uri().path_and_query().cloned();
    let (uri, version) = match upstream.protocol() {
        Protocol::Http1 => {
            if !has_host {
                let value = HeaderValue::from_str(fallback(req).as_str())
                    .map_err(|e| ProxyError::Internal(e.into()))?;
                req.headers_mut().insert(HOST, value);
            }
            (target.uri(pq.as_ref(), &target.authority), Version::HTTP_11)
        }
        Protocol::Http2 => {
            let authority = match req.headers_mut().remove(HOST).filter(|h| !h.is_empty()) {
                Some(host) => Authority::try_from(host.as_bytes())
                    .map_err(|_| ProxyError::BadRequest("invalid Host header"))?,
                None => fallback(req),
            };
            (target.uri(pq.as_ref(), &authority), Version::HTTP_2)
        }
    };
    *req.uri_mut() = uri.map_err(|e| ProxyError::Internal(e.into()))?;
    *req.version_mut() = version;
    Ok(())
}
