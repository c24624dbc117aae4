//! One request through the proxy: check the head, find the route, pick the side,
//! rewrite the head for the upstream, send it, stream the answer back.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT,
    FORWARDED, HOST, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::request::Parts;
use http::uri::Authority;
use http::{Extensions, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::access_log::{Hooks, Pending, SIDE_HEADER};
use crate::error::ProxyError;
use crate::proxy::attempt::{self, Exchange};
use crate::proxy::body::{grpc_failed, Meter, ProxyBody};
use crate::proxy::rescue::rescue;
use crate::rollout::Outcome;
use crate::routing::{Decision, Reason, Route, Shield, Side, Snapshot};
use crate::telemetry::{Class, ErrorKind, RetryReason};
use crate::upstream::{Failed, RequestBody};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Longest `x-request-id` we pass through; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// What the proxy knows about the downstream connection, with the forwarding header
/// values precomputed once per connection rather than formatted per request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The peer address as text: `x-forwarded-for` when the client sent none.
    xff: HeaderValue,
    /// `for=…;proto=…`: `forwarded` when the client sent none.
    forwarded: HeaderValue,
}

// === impl ConnInfo ===

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let ip = peer.ip();
        let proto = if tls { "https" } else { "http" };
        let forwarded = match ip {
            IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
        };
        ConnInfo {
            peer,
            tls,
            xff: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&forwarded)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
        }
    }
}

/// Serves one request against `snapshot`. Never fails: errors become proxy-made
/// responses (via `rescue`), and every response carries `x-request-id`.
pub async fn proxy(
    snapshot: Arc<Snapshot>,
    conn: &ConnInfo,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let request_id = request_id(req.headers());
    let downstream_h1 = req.version() < Version::HTTP_2;
    // `[log]` (SPEC §12): when it is off, this is the one check the request pays.
    let hooks = snapshot.log.as_deref();
    let pending = hooks
        .and_then(|hooks| hooks.access.as_ref())
        .map(|log| Pending::start(log, req.method(), req.uri(), &request_id));
    let mut note = Note::default();
    let (route, result) = match check_head(&req, snapshot.server().max_header_bytes) {
        Err(err) => (None, Err(err)),
        Ok(host) => match snapshot.find(host, req.uri().path()) {
            None => (None, Err(ProxyError::NoRoute)),
            Some(route) => (
                Some(route),
                forward(&snapshot, route, conn, req, &request_id, &mut note).await,
            ),
        },
    };
    let mut response = match result {
        Ok(mut response) => {
            response.headers_mut().insert(X_REQUEST_ID, request_id);
            response
        }
        Err(err) => {
            let close = downstream_h1
                && matches!(
                    err,
                    ProxyError::BadRequest(_) | ProxyError::HeadTooLarge { .. }
                );
            let mut response = rescue(&err, route.map(|r| &*r.name), &request_id);
            if close {
                // The connection's framing cannot be trusted after a malformed head.
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    if let Some(route) = route {
        // What the client received, proxy-made answers included (SPEC §11).
        let status = response.status();
        route.path.response(Class::of(status));
        let error =
            status.is_server_error() || route.error_statuses.iter().any(|m| m.matches(status));
        route.runtime.record_response(error);
    }
    if let Some(hooks) = hooks {
        response = observe(hooks, response, route, &note, pending);
    }
    response
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
        entry.route = route.map(|route| Arc::clone(&route.name));
        entry.canary_version = route.and_then(|route| route.canary_version.clone());
        entry.side = note.side;
        entry.reason = note.reason.map(Reason::as_str);
        entry.bucket = note.bucket;
        entry.upstream = note.endpoint.cloned();
        entry.shielded = note.shielded;
    }
    response.map(|body| body.with_access_log(pending))
}

async fn forward<'r>(
    snapshot: &Snapshot,
    route: &'r Route,
    conn: &ConnInfo,
    req: Request<Incoming>,
    request_id: &HeaderValue,
    note: &mut Note<'r>,
) -> Result<Response<ProxyBody>, ProxyError> {
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
    let wants_upgrade = parts.version == Version::HTTP_11 && is_upgrade_request(&parts.headers);
    let downstream_upgrade = if wants_upgrade {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    authority_to_host(&mut parts)?;
    strip_hop_by_hop(&mut parts.headers, downstream_upgrade.is_some());
    append_forwarded(&mut parts.headers, conn);
    parts.headers.insert(X_REQUEST_ID, request_id.clone());
    parts.extensions = Extensions::new();

    let request_timeout = snapshot.server().request_timeout;
    let start = tokio::time::Instant::now();
    let deadline = start + request_timeout;
    // The shield covers canary requests the split chose (not an explicit override:
    // whoever forces the canary wants to see it), never an upgrade.
    let shield = route.shield.as_ref().filter(|_| {
        side == Side::Canary && reason != Reason::Override && downstream_upgrade.is_none()
    });
    if let Some(shield) = &route.shield {
        shield.budget.deposit(start);
    }
    // gRPC has no idempotency flag: a call is retried only if it never left.
    let retry_on_stable =
        shield.filter(|s| s.config.methods.contains(&parts.method) && !is_grpc(&parts.headers));
    let body = match retry_on_stable {
        // Boxed: the common path's future does not carry the buffering state. The
        // client's body read counts against request_timeout, not the canary's try.
        Some(shield) => {
            let buffered = tokio::time::timeout_at(
                deadline,
                Box::pin(RequestBody::buffered(body, shield.config.max_body_bytes)),
            )
            .await
            .map_err(|_| {
                ProxyError::ClientAborted("request body not received within request_timeout".into())
            })?;
            buffered.map_err(|e| ProxyError::ClientAborted(e.into()))?
        }
        None => RequestBody::streaming(body),
    };
    // What stable gets if the canary attempt fails after sending: a copy, taken only
    // when the shield may need it (an eligible method and a body held whole).
    let spare = retry_on_stable.and_then(|_| body.try_clone().map(|b| (copy_head(&parts), b)));
    // The per-try timeout only where stable can take over: a request that cannot be
    // retried keeps the whole request_timeout.
    let per_try = match (&spare, shield.and_then(|s| s.config.per_try_timeout)) {
        (Some(_), Some(per_try)) => per_try.min(request_timeout),
        _ => request_timeout,
    };

    let first_side = side;
    let tried_at = tokio::time::Instant::now();
    let first = attempt::send(
        route,
        side,
        parts,
        body,
        tried_at,
        (tried_at + per_try).min(deadline),
        per_try,
    )
    .await;
    let (side, exchange) = match shield {
        None => (side, first.map_err(|f| f.error)?),
        // Boxed for the same reason.
        Some(shield) => {
            Box::pin(shielded(
                route,
                shield,
                first,
                spare,
                deadline,
                request_timeout,
            ))
            .await?
        }
    };
    note.side = Some(side);
    note.shielded = side != first_side;
    let Exchange {
        mut response,
        lease,
        latency,
        endpoint,
    } = exchange;
    note.endpoint = Some(endpoint);
    let status = response.status();

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream_upgrade else {
            return Err(ProxyError::Protocol(
                "upstream switched protocols without being asked".into(),
            ));
        };
        let upstream_io = hyper::upgrade::on(&mut response);
        tokio::spawn(tunnel(downstream, upstream_io));
        let outcome = Outcome {
            class: Class::Informational,
            error: None,
            latency,
        };
        route
            .runtime
            .record(side, outcome, tokio::time::Instant::now());
        let (mut parts, _) = response.into_parts();
        parts.version = response_version(downstream_version);
        return Ok(Response::from_parts(parts, ProxyBody::empty()));
    }

    let (mut parts, body) = response.into_parts();
    // We speak our own version to the client, whatever the upstream spoke (RFC 9110
    // §6.2): an HTTP/1.0 upstream must not make an HTTP/1.1 client's connection close.
    parts.version = response_version(downstream_version);
    strip_hop_by_hop(&mut parts.headers, false);
    let meter = meter(route, side, status, &parts.headers, latency);
    Ok(Response::from_parts(
        parts,
        ProxyBody::upstream(body, Some(meter), lease),
    ))
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
    deadline: tokio::time::Instant,
    request_timeout: Duration,
) -> Result<(Side, Exchange<'r>), ProxyError> {
    // What the client gets if stable is not tried, and what stable would be sent.
    let (fallback, retry) = match first {
        Ok(exchange) => {
            let status = exchange.response.status();
            match spare {
                Some(spare) if shield.config.statuses.iter().any(|m| m.matches(status)) => {
                    (Ok(exchange), spare)
                }
                _ => return Ok((Side::Canary, exchange)),
            }
        }
        Err(failed) => match (failed.unsent, spare) {
            // Never sent (no canary endpoint could be reached): safe for any request.
            (Some(unsent), _) => (Err(failed.error), unsent.into_parts()),
            // Sent and then failed: only with a copy (an eligible method, a body held).
            (None, Some(spare)) => (Err(failed.error), spare),
            (None, None) => return Err(failed.error),
        },
    };
    let now = tokio::time::Instant::now();
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
    let (parts, body) = retry;
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

/// The meter that records an exchange's outcome when its body ends: the class, and
/// an error when the status is in `error_statuses` or a gRPC head says so.
fn meter(
    route: &Route,
    side: Side,
    status: StatusCode,
    headers: &HeaderMap,
    latency: Duration,
) -> Meter {
    let grpc = is_grpc(headers);
    let error = if route.error_statuses.iter().any(|m| m.matches(status)) {
        Some(ErrorKind::Status)
    } else if grpc && grpc_failed(headers) {
        // A trailers-only gRPC response carries its status in the head.
        Some(ErrorKind::Grpc)
    } else {
        None
    };
    Meter::new(
        Arc::clone(&route.runtime),
        side,
        Class::of(status),
        error,
        latency,
        grpc,
    )
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
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

/// Splices an upgraded (e.g. WebSocket) connection to the upstream's until either
/// side closes.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(err) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(error = %err, "upgraded connection ended with an error");
    }
}

/// Rejects heads that hyper lets through but a proxy must not forward, and returns
/// the host to route on.
fn check_head<B>(req: &Request<B>, limit: usize) -> Result<Option<&str>, ProxyError> {
    let headers = req.headers();
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if req.version() == Version::HTTP_11 && host.is_none() {
        return Err(ProxyError::BadRequest(
            "HTTP/1.1 request without a Host header",
        ));
    }
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        // Request smuggling: two framings. hyper's HTTP/1.1 parser already drops
        // Content-Length in this case and closes after the response (RFC 9112 §6.3);
        // this catches any other path that would hand us both.
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let mut size = req.method().as_str().len() + req.uri().to_string_len_hint() + 12;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > limit {
        return Err(ProxyError::HeadTooLarge { limit });
    }
    if let Some(host) = host {
        if !is_valid_authority(host.as_bytes()) {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
    }
    let host = match req.uri().authority() {
        Some(authority) => {
            if !is_valid_authority(authority.as_str().as_bytes()) {
                // Userinfo (`http://user:pass@host/`) is never sent by a client
                // (RFC 9110 §4.2.4); anything else that fails is malformed.
                return Err(ProxyError::BadRequest(
                    "invalid authority in the request target",
                ));
            }
            Some(authority.as_str())
        }
        None => host.and_then(|h| h.to_str().ok()),
    };
    Ok(host)
}

/// Whether `value` is `host [ ":" port ]` as RFC 9112 §3.2 and RFC 3986 §3.2 allow it
/// in `Host` and a request target: a reg-name (unreserved, pct-encoded, sub-delims),
/// an IPv4 address or a bracketed IP literal, then an optional decimal port. No
/// userinfo (`@`), no whitespace, no `/`, `?` or `#`. The empty value is valid (a
/// `Host` for a target without an authority).
fn is_valid_authority(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b":.%-_~".contains(&b));
        if !ok {
            return false;
        }
        (&[][..], &rest[end + 1..])
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && is_reg_name(host)
}

/// RFC 3986 §3.2.2 `reg-name` (which also covers IPv4 addresses): unreserved and
/// sub-delims. Percent-encoding, which the RFC also allows there, is refused, as the
/// `http` crate refuses it: no DNS name needs it, and an authority that would not
/// parse as a URI authority could not be sent to an HTTP/2 upstream.
fn is_reg_name(host: &[u8]) -> bool {
    host.iter().all(|&b| REG_NAME[b as usize])
}

/// The bytes `is_reg_name` allows, as a table: one load per byte on the request path.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// Makes `Host` the authority the route was chosen by: a request target with an
/// authority (absolute form, or HTTP/2 `:authority`) wins over any `Host` (RFC 9112
/// §3.2.2, RFC 9113 §8.3.1). A request with neither gets one per attempt (see
/// `attempt::retarget`).
fn authority_to_host(parts: &mut Parts) -> Result<(), ProxyError> {
    if let Some(authority) = parts.uri.authority() {
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
        parts.headers.insert(HOST, value);
    }
    Ok(())
}

/// The version of a response to a client that spoke `downstream`: ours, HTTP/1.1 or
/// HTTP/2 (hyper itself answers an HTTP/1.0 client in kind).
fn response_version(downstream: Version) -> Version {
    if downstream == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

trait UriLen {
    fn to_string_len_hint(&self) -> usize;
}

impl UriLen for http::Uri {
    fn to_string_len_hint(&self) -> usize {
        self.authority().map_or(0, |a| a.as_str().len())
            + self.path_and_query().map_or(1, |pq| pq.as_str().len())
    }
}

/// `Connection: upgrade` plus an `Upgrade` other than `h2c` (which hyper ignores and
/// we strip).
fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(UPGRADE) else {
        return false;
    };
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return false;
    }
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// Removes hop-by-hop headers: the fixed list (RFC 9110 §7.6.1) and every header named
/// in `Connection`. `TE: trailers` is end-to-end in practice (gRPC) and kept.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) header names, comparing standard names (an enum compare,
    // no hashing), then a removal only for those present: an upstream's response
    // usually carries just `Connection: keep-alive`.
    let present = headers
        .keys()
        .fold(Hop::empty(), |present, name| present | Hop::of(name));
    if present.contains(Hop::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    if name != X_REQUEST_ID && name != HOST {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for (flag, name) in [
        (Hop::KEEP_ALIVE, KEEP_ALIVE),
        // Answered by the proxy (hyper sends 100 Continue when the body is read).
        (Hop::EXPECT, EXPECT),
        (Hop::PROXY_CONNECTION, PROXY_CONNECTION),
        (Hop::TRANSFER_ENCODING, TRANSFER_ENCODING),
        (Hop::HTTP2_SETTINGS, HTTP2_SETTINGS),
    ] {
        if present.contains(flag) {
            headers.remove(name);
        }
    }
    if present.contains(Hop::TE) {
        if let Some(te) = headers.get(TE) {
            if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers") {
                headers.remove(TE);
            }
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present.contains(Hop::UPGRADE) {
        headers.remove(UPGRADE);
    }
}

/// The hop-by-hop headers a message carries, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop(u8);

impl Hop {
    const CONNECTION: Hop = Hop(1);
    const KEEP_ALIVE: Hop = Hop(1 << 1);
    const EXPECT: Hop = Hop(1 << 2);
    const PROXY_CONNECTION: Hop = Hop(1 << 3);
    const TRANSFER_ENCODING: Hop = Hop(1 << 4);
    const HTTP2_SETTINGS: Hop = Hop(1 << 5);
    const TE: Hop = Hop(1 << 6);
    const UPGRADE: Hop = Hop(1 << 7);

    fn empty() -> Hop {
        Hop(0)
    }

    fn of(name: &HeaderName) -> Hop {
        if name == CONNECTION {
            Hop::CONNECTION
        } else if name == KEEP_ALIVE {
            Hop::KEEP_ALIVE
        } else if name == EXPECT {
            Hop::EXPECT
        } else if name == PROXY_CONNECTION {
            Hop::PROXY_CONNECTION
        } else if name == TRANSFER_ENCODING {
            Hop::TRANSFER_ENCODING
        } else if name == HTTP2_SETTINGS {
            Hop::HTTP2_SETTINGS
        } else if name == TE {
            Hop::TE
        } else if name == UPGRADE {
            Hop::UPGRADE
        } else {
            Hop::empty()
        }
    }

    fn contains(self, other: Hop) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Hop {
    type Output = Hop;

    fn bitor(self, other: Hop) -> Hop {
        Hop(self.0 | other.0)
    }
}

/// Appends the peer to `x-forwarded-for` and `forwarded`; sets `x-forwarded-proto`
/// unless a proxy in front already set it. One hash per header (entry API).
fn append_forwarded(headers: &mut HeaderMap, conn: &ConnInfo) {
    append_list(headers, X_FORWARDED_FOR, &conn.xff);
    append_list(headers, FORWARDED, &conn.forwarded);
    let proto = if conn.tls { "https" } else { "http" };
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static(proto));
}

/// `name: existing, value` (all existing lines joined: header lines are equivalent to
/// a list), or just `value`, a refcount bump with no formatting.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert(value.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut joined = String::new();
            for existing in entry.iter() {
                if let Ok(existing) = existing.to_str() {
                    joined.push_str(existing);
                    joined.push_str(", ");
                }
            }
            joined.push_str(value.to_str().unwrap_or_default());
            if let Ok(joined) = HeaderValue::from_str(&joined) {
                // Replaces every previous line.
                entry.insert(joined);
            }
        }
    }
}

/// The client's `x-request-id` when it is sane, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN => id.clone(),
        _ => new_request_id(),
    }
}

/// `PPPPPPPP-NNNNNNNNNNNNNNNN`: a per-process random prefix and a counter, in hex.
/// Unique per process run, cheap, and sortable within a process.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}-{nanos}", std::process::id());
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) as u32
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 25];
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    for i in 0..16 {
        buf[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_syntax_follows_rfc_3986() {
        for valid in [
            "",
            "a",
            "a.example",
            "a.example:8080",
            "a.example:",
            "A-b_c~d.e",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "[fe80::1%25eth0]:80",
            "x!$&'()*+,;=y",
        ] {
            assert!(is_valid_authority(valid.as_bytes()), "{valid:?}");
        }
        for invalid in [
            "%41b",
            "a b",
            "a/b",
            "a b@c/d",
            "u@a",
            "u:p@a",
            "a?b",
            "a#b",
            "a:port",
            "a:123456",
            "[::1",
            "[]",
            "[::1]x",
            "a:1:2x",
            "%",
            "%4",
            "a%zz",
            "a\"b",
            "a\tb",
            "a<b",
            "a\\b",
            "é.example",
        ] {
            assert!(!is_valid_authority(invalid.as_bytes()), "{invalid:?}");
        }
    }

    proptest::proptest! {
        /// Whatever passes our check parses as a URI authority, so an HTTP/2 upstream
        /// always gets the client's authority, never the fallback.
        #[test]
        fn a_valid_authority_always_parses(s in "[a-zA-Z0-9.:\\[\\]@/ %_~-]{1,24}") {
            if is_valid_authority(s.as_bytes()) {
                proptest::prop_assert!(http::uri::Authority::try_from(s.as_str()).is_ok(), "{}", s);
            }
        }
    }

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert_eq!(a.as_bytes()[8], b'-');
    }

    #[test]
    fn client_request_id_is_kept_unless_absurd() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&headers), "abc");
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(200)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 25);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, Upgrade"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(HTTP2_SETTINGS, HeaderValue::from_static("AAMAAABkAAQAAP__"));
        headers.insert(TE, HeaderValue::from_static("gzip"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));

        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.contains_key(TE));
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_on_its_own() {
        for name in [
            CONNECTION,
            KEEP_ALIVE,
            EXPECT,
            PROXY_CONNECTION,
            TRANSFER_ENCODING,
            HTTP2_SETTINGS,
            TE,
            UPGRADE,
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            headers.insert(HOST, HeaderValue::from_static("example.com"));
            strip_hop_by_hop(&mut headers, false);
            assert!(!headers.contains_key(&name), "{name} kept");
            assert!(headers.contains_key(HOST), "{name}: host removed");
        }
    }

    #[test]
    fn upgrade_is_kept_for_websocket() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "upgrade");

        let mut h2c = HeaderMap::new();
        h2c.insert(
            CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h2c.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade_request(&h2c));
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let conn = ConnInfo::new("10.1.2.3:5555".parse().unwrap(), false);
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        append_forwarded(&mut headers, &conn);
        assert_eq!(headers[X_FORWARDED_FOR], "192.0.2.1, 10.1.2.3");
        assert_eq!(headers[FORWARDED], "for=10.1.2.3;proto=http");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");

        let conn = ConnInfo::new("[2001:db8::1]:5555".parse().unwrap(), true);
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED, HeaderValue::from_static("for=192.0.2.1"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        append_forwarded(&mut headers, &conn);
        assert_eq!(
            headers[FORWARDED],
            "for=192.0.2.1, for=\"[2001:db8::1]\";proto=https"
        );
        assert_eq!(headers[X_FORWARDED_FOR], "2001:db8::1");
    }

    #[test]
    fn head_checks() {
        let ok = Request::get("/x").header(HOST, "a").body(()).unwrap();
        assert_eq!(check_head(&ok, 1024).unwrap(), Some("a"));

        let no_host = Request::get("/x").body(()).unwrap();
        assert!(matches!(
            check_head(&no_host, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let two_hosts = Request::get("/x")
            .header(HOST, "a")
            .header(HOST, "b")
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&two_hosts, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let smuggle = Request::post("/x")
            .header(HOST, "a")
            .header(CONTENT_LENGTH, "3")
            .header(TRANSFER_ENCODING, "chunked")
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&smuggle, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let big = Request::get("/x")
            .header(HOST, "a")
            .header("x-big", "y".repeat(2000))
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&big, 1024),
            Err(ProxyError::HeadTooLarge { .. })
        ));

        let h2 = Request::get("http://b.example/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(check_head(&h2, 1024).unwrap(), Some("b.example"));
    }
}
