//! Phase 5, the forward itself: one request through the proxy, the phases in order.
//! Request id (`request_id`), head checks (`head`), route and side, the head
//! rewritten for the upstream (`rewrite`, RFC 9110 §7.6), one attempt per side
//! (`attempt`) with the shield's retry on stable (SPEC §11), then the answer: a
//! `101` spliced (`upgrade`), or the upstream's response streamed back through its
//! meter (`body`), or a proxy-made one (`rescue`). A proxy forwards what it does not
//! understand unchanged (RFC 9110 §3.7); what it does change is listed in the phases.
//!
//! Generic over the request body ([`DownstreamBody`]): the server drives it with
//! hyper's `Incoming`, a test in process with a `RequestBody`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{Extensions, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use crate::access_log::{Entry, Hooks, Pending, SIDE_HEADER};
use crate::error::{is_grpc, ProxyError};
use crate::proxy::attempt::{self, Exchange};
use crate::proxy::body::{Meter, ProxyBody};
use crate::proxy::head::{authority_to_host, check_head};
use crate::proxy::request_id::{request_id, X_REQUEST_ID};
use crate::proxy::rescue::rescue;
use crate::proxy::rewrite::{self, ConnInfo};
use crate::proxy::upgrade;
use crate::rollout::Outcome;
use crate::routing::{Decision, Reason, Side};
use crate::snapshot::{Route, Shield, Snapshot};
use crate::telemetry::{Class, ErrorKind, RetryReason};
use crate::upstream::{Failed, RequestBody};

/// A request body the data path can send upstream: hyper's `Incoming` from the
/// server, or a [`RequestBody`] already made (a test driving [`proxy`] in process).
pub trait DownstreamBody: Send + 'static {
    /// The body as it comes, streamed (empty when it says so).
    fn streaming(self) -> RequestBody;

    /// The body read whole when it is at most `cap` bytes, so it can be sent again
    /// (see `RequestBody::buffered`). Errors are the client's.
    fn buffered(self, cap: usize)
        -> impl Future<Output = Result<RequestBody, hyper::Error>> + Send;
}

impl DownstreamBody for Incoming {
    fn streaming(self) -> RequestBody {
        RequestBody::streaming(self)
    }

    fn buffered(
        self,
        cap: usize,
    ) -> impl Future<Output = Result<RequestBody, hyper::Error>> + Send {
        RequestBody::buffered(self, cap)
    }
}

impl DownstreamBody for RequestBody {
    fn streaming(self) -> RequestBody {
        self
    }

    /// Already as held as it gets: `Empty` and `Full` are replayable, the others not.
    fn buffered(
        self,
        _cap: usize,
    ) -> impl Future<Output = Result<RequestBody, hyper::Error>> + Send {
        std::future::ready(Ok(self))
    }
}

/// Serves one request against `snapshot`. Never fails: errors become proxy-made
/// responses (via `rescue`), and every response carries `x-request-id`.
///
/// Not an `async fn`, nor is `forward`: an `async fn` moves each argument once more,
/// into its future's locals, and a request is ~300 bytes to copy (issue 17). The
/// block uses what it captured in place.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn proxy<B: DownstreamBody>(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<B>,
) -> impl Future<Output = Response<ProxyBody>> + Send + use<'_, B> {
    async move {
        let request_id = request_id(req.headers());
        let version = req.version();
        // `[log]` (SPEC §12): when it is off, the request pays for checking this
        // `Option`, here and when `trace` drops.
        let hooks = snapshot.log.as_deref();
        let mut trace = Trace {
            pending: hooks
                .and_then(|hooks| hooks.access.as_ref())
                .map(|log| Pending::start(log, req.method(), req.uri(), &request_id)),
            route: None,
            note: Note::default(),
        };
        let result = match check_head(&req, snapshot.server().max_header_bytes) {
            Err(err) => Err(err),
            Ok(host) => match snapshot.find(host, req.uri().path()) {
                None => Err(ProxyError::NoRoute),
                Some(route) => {
                    trace.route = Some(route);
                    forward(&snapshot, route, conn, req, &request_id, &mut trace.note).await
                }
            },
        };
        let route = trace.route;
        let mut response = match result {
            Ok(mut response) => {
                response.headers_mut().insert(X_REQUEST_ID, request_id);
                response
            }
            Err(err) => rescue(&err, route.map(|r| &*r.name), &request_id, version),
        };
        if let Some(route) = route {
            account(route, response.status());
        }
        if let Some(hooks) = hooks {
            let pending = trace.pending.take();
            response = observe(hooks, response, route, &trace.note, pending);
        }
        response
    }
}

/// Counts what the client received, proxy-made answers included (SPEC §11).
fn account(route: &Route, status: StatusCode) {
    route.path.response(Class::of(status));
    let error = status.is_server_error() || route.error_statuses.iter().any(|m| m.matches(status));
    route.runtime.record_response(error);
}

/// What the access log and the side header need from `forward`: filled on every
/// request (a few plain stores), read only when `[log]` is on.
#[derive(Debug, Default)]
struct Note<'r> {
    /// The side chosen, then the side that answered.
    side: Option<Side>,
    reason: Option<Reason>,
    bucket: Option<u16>,
    /// The endpoint whose response the client gets.
    endpoint: Option<&'r Authority>,
    /// Stable answered a failed canary attempt.
    shielded: bool,
}

/// A request's access log line while `forward` runs, with what it has learnt so far.
/// Dropped with its request when the client leaves before the response (the server
/// drops the request's future, and the upstream request with it): the line then goes
/// out as a 499 that still names the route and the side tried. Its `upstream` stays
/// empty: no endpoint answered (`Note::endpoint` is set with the response head).
struct Trace<'r> {
    pending: Option<Pending>,
    route: Option<&'r Route>,
    note: Note<'r>,
}

impl Drop for Trace<'_> {
    fn drop(&mut self) {
        if let Some(mut pending) = self.pending.take() {
            if let Some(entry) = pending.entry() {
                fill(entry, self.route, &self.note);
            }
        }
    }
}

/// What `forward` learnt, into the access log line: the route, side and upstream.
fn fill(entry: &mut Entry, route: Option<&Route>, note: &Note<'_>) {
    entry.route = route.map(|route| Arc::clone(&route.name));
    entry.canary_version = route.and_then(|route| route.canary_version.clone());
    entry.side = note.side;
    entry.reason = note.reason.map(Reason::as_str);
    entry.bucket = note.bucket;
    entry.upstream = note.endpoint.cloned();
    entry.shielded = note.shielded;
}

/// `[log]`: names the side in a response header, and hands the access log line to the
/// response body, which sends it when it ends. Out of line: the common path has `[log]`
/// off and never comes here.
#[inline(never)]
fn observe(
    hooks: &Hooks,
    mut response: Response<ProxyBody>,
    route: Option<&Route>,
    note: &Note<'_>,
    pending: Option<Pending>,
) -> Response<ProxyBody> {
    if hooks.side_header {
        if let (Some(route), Some(side)) = (route, note.side) {
            response
                .headers_mut()
                .insert(SIDE_HEADER, route.side_header(side));
        }
    }
    let Some(mut pending) = pending else {
        return response;
    };
    if let Some(entry) = pending.entry() {
        let status = response.status();
        entry.status = status.as_u16();
        // A proxy-made 5xx after the side was chosen: no upstream answered.
        entry.class = if note.side.is_some() && note.endpoint.is_none() && status.is_server_error()
        {
            Class::Error
        } else {
            Class::of(status)
        };
        fill(entry, route, note);
    }
    response.map(|body| body.with_access_log(pending))
}

/// Route chosen: picks the side, rewrites the head for the upstream, sends it (with
/// the shield's retry when it applies), and turns the answer into the client's.
#[allow(clippy::manual_async_fn)] // on purpose: see `proxy`
fn forward<'a, 'r: 'a, B: DownstreamBody>(
    snapshot: &'a Snapshot,
    route: &'r Route,
    conn: &'a ConnInfo,
    req: Request<B>,
    request_id: &'a HeaderValue,
    note: &'a mut Note<'r>,
) -> impl Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + use<'a, 'r, B> {
    async move {
        let Decision {
            side,
            reason,
            bucket,
        } = route.decision(req.headers(), conn.peer.ip());
        tracing::trace!(route = %route.name, side = side.as_str(), ?reason, "side chosen");
        note.side = Some(side);
        note.reason = Some(reason);
        note.bucket = bucket;

        let (mut parts, body) = req.into_parts();
        let downstream_version = parts.version;
        let downstream_upgrade = upstream_head(&mut parts, conn, request_id)?;
        let request_timeout = snapshot.server().request_timeout;
        let start = Instant::now();
        let shield = shield_for(route, side, reason, downstream_upgrade.is_some(), start);
        let (answered, exchange) = match shield {
            // One attempt, the whole request_timeout, nothing copied: called here rather
            // than through `send_shielded`, so the request is not moved through one more
            // future (issue 17).
            None => {
                let deadline = start + request_timeout;
                let body = body.streaming();
                let first =
                    attempt::send(route, side, parts, body, start, deadline, request_timeout);
                (side, first.await.map_err(|f| f.error)?)
            }
            // Boxed: the common path's future does not carry the shield's state.
            Some(shield) => {
                Box::pin(send_shielded(
                    route,
                    side,
                    shield,
                    parts,
                    body,
                    start,
                    request_timeout,
                ))
                .await?
            }
        };
        note.side = Some(answered);
        note.shielded = answered != side;
        respond(
            route,
            answered,
            exchange,
            downstream_upgrade,
            downstream_version,
            note,
        )
    }
}

/// The head the upstream gets (phases `head`, `upgrade`, `rewrite`): `Host` from the
/// authority the route was chosen by, hop-by-hop headers out, forwarding headers and
/// the request id in, no extensions. Returns the client's side of an upgrade it asked
/// for.
fn upstream_head(
    parts: &mut Parts,
    conn: &ConnInfo,
    request_id: &HeaderValue,
) -> Result<Option<OnUpgrade>, ProxyError> {
    let downstream_upgrade =
        upgrade::downstream(parts.version, &parts.headers, &mut parts.extensions);
    authority_to_host(parts)?;
    let keep_upgrade = downstream_upgrade.is_some();
    rewrite::request_head(&mut parts.headers, conn, request_id, keep_upgrade);
    parts.extensions = Extensions::new();
    Ok(downstream_upgrade)
}

/// Sends a request `shield` covers to `side`, and to stable once more when the
/// canary's attempt fails (see [`shielded`]), all within `request_timeout` of `start`.
/// Returns the side that answered. The unshielded path is `forward`'s own.
async fn send_shielded<'r, B: DownstreamBody>(
    route: &'r Route,
    side: Side,
    shield: &Shield,
    parts: Parts,
    body: B,
    start: Instant,
    request_timeout: Duration,
) -> Result<(Side, Exchange<'r>), ProxyError> {
    let deadline = start + request_timeout;
    // gRPC has no idempotency flag: a call is retried only if it never left.
    let retry_on_stable = shield.config.methods.contains(&parts.method) && !is_grpc(&parts.headers);
    // The attempt starts once the body is held, when the shield reads it first;
    // otherwise at the request's start.
    let (body, tried_at) = if retry_on_stable {
        (buffer(body, shield, deadline).await?, Instant::now())
    } else {
        (body.streaming(), start)
    };
    // What stable gets if the canary attempt fails after sending: a copy, taken only
    // when the shield may need it (an eligible method and a body held whole).
    let spare = retry_on_stable
        .then(|| body.try_clone().map(|b| (copy_head(&parts), b)))
        .flatten();
    let per_try = per_try(shield, spare.is_some(), request_timeout);

    let first_try = (tried_at + per_try).min(deadline);
    let first = attempt::send(route, side, parts, body, tried_at, first_try, per_try).await;
    shielded(route, shield, first, spare, deadline, request_timeout).await
}

/// The shield that covers this request, if any: canary requests the split chose (not
/// an explicit override: whoever forces the canary wants to see it), never an
/// upgrade. Every request on a shielded route earns retry budget at `start`.
fn shield_for(
    route: &Route,
    side: Side,
    reason: Reason,
    upgrade: bool,
    start: Instant,
) -> Option<&Shield> {
    let shield = route.shield.as_ref()?;
    shield.budget.deposit(start);
    (side == Side::Canary && reason != Reason::Override && !upgrade).then_some(shield)
}

/// Reads the client's body for a possible retry on stable, up to the shield's
/// `max_body_bytes`. The read counts against `request_timeout` (by `deadline`), not
/// the canary's try.
async fn buffer<B: DownstreamBody>(
    body: B,
    shield: &Shield,
    deadline: Instant,
) -> Result<RequestBody, ProxyError> {
    let buffered = tokio::time::timeout_at(deadline, body.buffered(shield.config.max_body_bytes))
        .await
        .map_err(|_| {
            ProxyError::ClientAborted("request body not received within request_timeout".into())
        })?;
    buffered.map_err(|e| ProxyError::ClientAborted(e.into()))
}

/// The first attempt's timeout: the shield's `per_try_timeout` only where stable can
/// take over (`retryable`); a request that cannot be retried keeps the whole
/// `request_timeout`.
fn per_try(shield: &Shield, retryable: bool, request_timeout: Duration) -> Duration {
    match shield.config.per_try_timeout {
        Some(per_try) if retryable => per_try.min(request_timeout),
        _ => request_timeout,
    }
}

/// The client's answer from the side that `answered`: a `101` becomes a tunnel, any
/// other response is streamed back through the meter that settles its outcome.
fn respond<'r>(
    route: &'r Route,
    answered: Side,
    exchange: Exchange<'r>,
    downstream_upgrade: Option<OnUpgrade>,
    downstream_version: Version,
    note: &mut Note<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Exchange {
        response,
        lease,
        latency,
        endpoint,
    } = exchange;
    note.endpoint = Some(endpoint);
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let response = upgrade::switch(downstream_upgrade, response, downstream_version)?;
        let outcome = Outcome {
            class: Class::Informational,
            error: None,
            latency,
        };
        route.runtime.record(answered, outcome, Instant::now());
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    rewrite::response_head(&mut parts, downstream_version);
    let meter = meter(route, answered, status, &parts.headers, latency);
    Ok(Response::from_parts(
        parts,
        ProxyBody::upstream(body, Some(meter), lease),
    ))
}

/// What the shield does after the canary's attempt.
// Built once per shielded request and taken apart at once: never stored, so the
// size of the larger variant costs nothing.
#[allow(clippy::large_enum_variant)]
enum AfterCanary<'r> {
    /// The canary's answer (or failure) is the client's.
    Stands(Result<Exchange<'r>, ProxyError>),
    /// Stable may be sent `retry`; if it is not, the client gets `fallback`.
    Retry {
        fallback: Result<Exchange<'r>, ProxyError>,
        retry: (Parts, RequestBody),
    },
}

/// Whether the canary's `first` attempt may go to stable: a response with one of the
/// shield's statuses and a spare copy of the request, a request never sent (safe for
/// any request), or one sent and failed with a spare copy.
fn after_canary<'r>(
    shield: &Shield,
    first: Result<Exchange<'r>, Failed>,
    spare: Option<(Parts, RequestBody)>,
) -> AfterCanary<'r> {
    match first {
        Ok(exchange) => {
            let status = exchange.response.status();
            match spare {
                Some(retry) if shield.config.statuses.iter().any(|m| m.matches(status)) => {
                    AfterCanary::Retry {
                        fallback: Ok(exchange),
                        retry,
                    }
                }
                _ => AfterCanary::Stands(Ok(exchange)),
            }
        }
        Err(failed) => match (failed.unsent, spare) {
            // Never sent (no canary endpoint could be reached): safe for any request.
            (Some(unsent), _) => AfterCanary::Retry {
                fallback: Err(failed.error),
                retry: unsent.into_parts(),
            },
            // Sent and then failed: only with a copy (an eligible method, a body held).
            (None, Some(retry)) => AfterCanary::Retry {
                fallback: Err(failed.error),
                retry,
            },
            (None, None) => AfterCanary::Stands(Err(failed.error)),
        },
    }
}

/// The shield (SPEC §11): a failed canary attempt is sent once more, to stable, when
/// the request allows it and the retry budget has room; the client gets stable's
/// answer. The canary's failure has been recorded in its judgement already (by the
/// attempt, or here for a failing status), exactly as without the shield.
async fn shielded<'r>(
    route: &'r Route,
    shield: &Shield,
    first: Result<Exchange<'r>, Failed>,
    spare: Option<(Parts, RequestBody)>,
    deadline: Instant,
    request_timeout: Duration,
) -> Result<(Side, Exchange<'r>), ProxyError> {
    let (fallback, (parts, body)) = match after_canary(shield, first, spare) {
        AfterCanary::Stands(result) => return result.map(|e| (Side::Canary, e)),
        AfterCanary::Retry { fallback, retry } => (fallback, retry),
    };
    let now = Instant::now();
    let give_up = |fallback: Result<Exchange<'r>, ProxyError>| fallback.map(|e| (Side::Canary, e));
    if now >= deadline {
        return give_up(fallback);
    }
    if !shield.budget.withdraw(now) {
        route.path.retry_budget_exhausted.increment(1);
        return give_up(fallback);
    }
    if let Ok(canary) = fallback {
        // The canary's failing answer is not forwarded: settle its outcome now, as a
        // failure whatever `error_statuses` says (SPEC §11: it counts against the
        // canary).
        let (parts, _body) = canary.response.into_parts();
        let mut settled = meter(
            route,
            Side::Canary,
            parts.status,
            &parts.headers,
            canary.latency,
        );
        settled.fail(ErrorKind::Status);
        drop(settled);
    }
    route.path.retry(Side::Stable, RetryReason::Shield);
    let stable = attempt::send(
        route,
        Side::Stable,
        parts,
        body,
        now,
        deadline,
        request_timeout,
    )
    .await
    .map_err(|failed| failed.error)?;
    let status = stable.response.status();
    if !shield.config.statuses.iter().any(|m| m.matches(status)) {
        route.path.shielded.increment(1);
        route.runtime.record_shielded();
    }
    tracing::debug!(route = %route.name, %status, "canary attempt failed; answered by stable");
    Ok((Side::Stable, stable))
}

/// The meter that records an exchange's outcome when its body ends, the head
/// classified by `error::classify` with the route's `error_statuses`.
fn meter(
    route: &Route,
    side: Side,
    status: StatusCode,
    headers: &HeaderMap,
    latency: Duration,
) -> Meter {
    let listed = route.error_statuses.iter().any(|m| m.matches(status));
    Meter::at_head(
        Arc::clone(&route.runtime),
        side,
        status,
        listed,
        headers,
        latency,
    )
}

/// The request head without its extensions, for a second attempt.
fn copy_head(parts: &Parts) -> Parts {
    let mut copy = Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    copy.into_parts().0
}
