//! Keep-alive HTTP/1.1 connections to one plain-HTTP endpoint.
//!
//! This replaces hyper-util's legacy pool on the common path (plain `http://`
//! endpoints speaking HTTP/1.1), because that pool costs, per request: a SipHash of
//! the `(scheme, authority)` key, a mutex, a boxed checkout future and one spawned
//! task that waits for the connection to become idle again. Here each endpoint owns
//! its idle connections in a bounded lock-free queue, found without any lookup (the
//! route's `Target` holds the pool), and a connection goes back into the queue at the
//! moment its response head is in when the body came with it (the usual small
//! response), or when the downstream body is dropped otherwise.
//!
//! Checkout is FIFO: the connection idle the longest is used first, so it has had
//! the most time to be seen closed by the upstream. A connection that the upstream
//! closed before our request was written is skipped and the request is retried on the
//! next one (hyper hands the unsent request back); once a request is on the wire it is
//! never retried.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use http::uri::Authority;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Failed, RequestBody, Sent};
use crate::error::ProxyError;

/// Idle connections kept per endpoint (nginx's `keepalive` directive); one more is
/// closed when it would be pooled.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// A reused connection idle at least this long may meet the upstream's idle timeout as
/// we send on it (the keep-alive race), so a copy of the request is kept to send again.
/// Servers close idle connections after seconds (gunicorn 2 s, Node.js and Apache 5 s,
/// nginx 75 s), so one reused sooner was not closed for idleness; under load every
/// connection is reused within a few milliseconds, and copying the head for each
/// request (~1 000 instructions, two allocations) would buy nothing. What it leaves:
/// an upstream that shuts down under load and drops a request it had just read from a
/// busy connection; that request fails as before (502, charged to its side).
const REPLAY_AFTER_IDLE: Duration = Duration::from_millis(250);

/// TCP keepalive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The idle HTTP/1.1 connections of one endpoint.
#[derive(Debug)]
pub struct EndpointPool {
    /// `host:port`, as given to `TcpStream::connect`.
    addr: String,
    connect_timeout: Duration,
    /// An idle connection older than this is closed instead of used: below the
    /// upstream's own keep-alive timeout, so we drop it before the upstream does.
    idle_timeout: Duration,
    idle: ArrayQueue<Idle>,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A connection whose response body is still streaming. It goes back into its pool
/// when this is dropped (with the downstream body) and the connection is idle again.
#[derive(Debug)]
pub struct Lease {
    tx: Option<http1::SendRequest<RequestBody>>,
    pool: Arc<EndpointPool>,
}

// === impl EndpointPool ===

impl EndpointPool {
    pub fn new(
        authority: &Authority,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Arc<EndpointPool> {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{authority}:80"),
        };
        Arc::new(EndpointPool {
            addr,
            connect_timeout,
            idle_timeout,
            idle: ArrayQueue::new(MAX_IDLE_PER_ENDPOINT),
        })
    }

    /// Sends `req` (origin-form URI, Host set) on an idle connection, or on a new one
    /// when none is left. `now` is the request's start (the caller has read the clock
    /// already). The `Lease`, if any, must live as long as the response body.
    ///
    /// The keep-alive race (RFC 9112 §9.3.1): an idle connection can be closed by the
    /// upstream just as we reuse it. A request it hands back unsent goes on the next
    /// connection. One it took and then closed or reset on, before any response, is
    /// sent once more on a *fresh* connection when that is safe: the method is
    /// idempotent (RFC 9110 §9.2.2) and the body can be sent again (empty or held
    /// whole). `Sent::keepalive_retries` says it happened; it is no error of the
    /// upstream's.
    ///
    /// Not an `async fn`: that would copy `req` once more, into the future's locals.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        now: Instant,
    ) -> impl Future<Output = Result<Sent, Failed>> + Send + use<'_> {
        async move {
            while let Some(Idle { mut tx, since }) = self.idle.pop() {
                if !tx.is_ready() || now.saturating_duration_since(since) > self.idle_timeout {
                    continue; // closed by the upstream, or stale: dropping it closes it
                }
                // A copy to send again, kept only for a connection idle long enough to meet
                // an idle timeout (see REPLAY_AFTER_IDLE).
                let replay = if now.saturating_duration_since(since) >= REPLAY_AFTER_IDLE {
                    replayable(&req).map(Box::new)
                } else {
                    None
                };
                let again = match tx.try_send_request(req).await {
                    Ok(response) => return Ok(self.settle(tx, response, now, 0)),
                    Err(mut err) => match err.take_message() {
                        // The connection went away before the request was written.
                        Some(unsent) => {
                            req = unsent;
                            continue;
                        }
                        None => {
                            let err = err.into_error();
                            match replay {
                                Some(again) if lost_before_response(&err) => {
                                    tracing::debug!(endpoint = %self.addr, error = %err, "keep-alive race: the upstream closed a reused connection; retrying on a new one");
                                    again
                                }
                                _ => return Err(Failed::sent(ProxyError::from_hyper(err))),
                            }
                        }
                    },
                };
                // Out of the match, so that no error is held across this await.
                return Box::pin(self.send_fresh(*again, now, 1)).await;
            }
            // Boxed, as above: a new connection (connect, maybe TLS) is the rare path, and
            // this future is moved, whole, through every layer of the request's path.
            Box::pin(self.send_fresh(req, now, 0)).await
        }
    }

    /// Sends `req` on a new connection. A connection that cannot be made hands the
    /// request back (`Failed::unsent`): nothing was sent, so it may go elsewhere.
    async fn send_fresh(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        now: Instant,
        keepalive_retries: u8,
    ) -> Result<Sent, Failed> {
        let mut tx = match self.connect().await {
            Ok(tx) => tx,
            Err(error) => return Err(Failed::unsent(error, req)),
        };
        match tx.try_send_request(req).await {
            Ok(response) => Ok(self.settle(tx, response, now, keepalive_retries)),
            Err(mut err) => match err.take_message() {
                Some(unsent) => Err(Failed::unsent(
                    ProxyError::from_hyper(err.into_error()),
                    unsent,
                )),
                None => Err(Failed::sent(ProxyError::from_hyper(err.into_error()))),
            },
        }
    }

    /// Pools the connection now if its response is already complete (the body came in
    /// the same read as the head), else hands back a lease for the body's lifetime.
    /// Its idle time is counted from `now`, the request's start: a little early, which
    /// only errs towards closing it sooner.
    fn settle(
        self: &Arc<Self>,
        tx: http1::SendRequest<RequestBody>,
        response: Response<Incoming>,
        now: Instant,
        keepalive_retries: u8,
    ) -> Sent {
        let lease = if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgraded stream.
            None
        } else if tx.is_ready() {
            self.put(tx, now);
            None
        } else {
            Some(Lease {
                tx: Some(tx),
                pool: Arc::clone(self),
            })
        };
        Sent {
            response,
            lease,
            keepalive_retries,
        }
    }

    fn put(&self, tx: http1::SendRequest<RequestBody>, since: Instant) {
        let idle = Idle { tx, since };
        // A full pool drops (closes) the extra connection.
        drop(self.idle.push(idle));
    }

    async fn connect(&self) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let stream = connect_tcp(&self.addr, self.connect_timeout).await?;
        let (tx, conn) = http1::Builder::new()
            // One write(2) of head and body, as on the downstream side.
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(tx)
    }
}

/// A TCP connection to `addr` (`host:port`) within `timeout`, with TCP_NODELAY and
/// keepalive probes set. Errors are `Connect` or `ConnectTimeout`.
pub(super) async fn connect_tcp(addr: &str, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_elapsed) => {
            return Err(ProxyError::ConnectTimeout(
                format!("no connection to {addr} within {timeout:?}").into(),
            ))
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::TimedOut => {
            return Err(ProxyError::ConnectTimeout(err.into()))
        }
        Ok(Err(err)) => return Err(ProxyError::Connect(err.into())),
        Ok(Ok(stream)) => stream,
    };
    stream
        .set_nodelay(true)
        .map_err(|e| ProxyError::Connect(e.into()))?;
    SockRef::from(&stream)
        .set_tcp_keepalive(&TcpKeepalive::new().with_time(TCP_KEEPALIVE))
        .map_err(|e| ProxyError::Connect(e.into()))?;
    Ok(stream)
}

/// A copy of `req` to send again after the keep-alive race, when that is safe: an
/// idempotent method (RFC 9110 §9.2.2) and a body that can be sent again.
fn replayable(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    if !req.method().is_idempotent() {
        return None;
    }
    let body = req.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether a reused connection failed the way the keep-alive race does: closed or
/// reset before any response arrived (not a parse error, a timeout or the client's
/// body failing).
fn lost_before_response(err: &hyper::Error) -> bool {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return true;
    }
    if err.is_parse() || err.is_user() || err.is_timeout() {
        return false;
    }
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

// === impl Lease ===

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        if tx.is_ready() {
            self.pool.put(tx, Instant::now());
            return;
        }
        if tx.is_closed() {
            return;
        }
        // The connection is still reading the end of the body; wait for it off the
        // request's task. Outside a runtime (shutdown) the connection is just closed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = Arc::clone(&self.pool);
            runtime.spawn(async move {
                if tx.ready().await.is_ok() {
                    pool.put(tx, Instant::now());
                }
            });
        }
    }
}
