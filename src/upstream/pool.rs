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

use crate::error::ProxyError;

/// Idle connections kept per endpoint (nginx's `keepalive` directive); one more is
/// closed when it would be pooled.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// An idle connection older than this is closed instead of used.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TCP keepalive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// The idle HTTP/1.1 connections of one endpoint.
#[derive(Debug)]
pub struct EndpointPool {
    /// `host:port`, as given to `TcpStream::connect`.
    addr: String,
    connect_timeout: Duration,
    idle: ArrayQueue<Idle>,
}

#[derive(Debug)]
struct Idle {
    tx: http1::SendRequest<Incoming>,
    since: Instant,
}

/// A connection whose response body is still streaming. It goes back into its pool
/// when this is dropped (with the downstream body) and the connection is idle again.
#[derive(Debug)]
pub struct Lease {
    tx: Option<http1::SendRequest<Incoming>>,
    pool: Arc<EndpointPool>,
}

// === impl EndpointPool ===

impl EndpointPool {
    pub fn new(authority: &Authority, connect_timeout: Duration) -> Arc<EndpointPool> {
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{authority}:80"),
        };
        Arc::new(EndpointPool {
            addr,
            connect_timeout,
            idle: ArrayQueue::new(MAX_IDLE_PER_ENDPOINT),
        })
    }

    /// Sends `req` (origin-form URI, Host set) on an idle connection, or on a new one
    /// when none is left. `now` is the request's start (the caller has read the clock
    /// already). The `Lease`, if any, must live as long as the response body.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        now: Instant,
    ) -> Result<(Response<Incoming>, Option<Lease>), ProxyError> {
        while let Some(Idle { mut tx, since }) = self.idle.pop() {
            if !tx.is_ready() || now.saturating_duration_since(since) > IDLE_TIMEOUT {
                continue; // closed by the upstream, or stale: dropping it closes it
            }
            match tx.try_send_request(req).await {
                Ok(response) => return Ok(self.settle(tx, response, now)),
                Err(mut err) => match err.take_message() {
                    // The connection went away before the request was written.
                    Some(unsent) => req = unsent,
                    None => return Err(ProxyError::from_hyper(err.into_error())),
                },
            }
        }
        let mut tx = self.connect().await?;
        let response = tx.send_request(req).await.map_err(ProxyError::from_hyper)?;
        Ok(self.settle(tx, response, now))
    }

    /// Pools the connection now if its response is already complete (the body came in
    /// the same read as the head), else hands back a lease for the body's lifetime.
    /// Its idle time is counted from `now`, the request's start: a little early, which
    /// only errs towards closing it sooner.
    fn settle(
        self: &Arc<Self>,
        tx: http1::SendRequest<Incoming>,
        response: Response<Incoming>,
        now: Instant,
    ) -> (Response<Incoming>, Option<Lease>) {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            // The connection now belongs to the upgraded stream.
            return (response, None);
        }
        if tx.is_ready() {
            self.put(tx, now);
            return (response, None);
        }
        let lease = Lease {
            tx: Some(tx),
            pool: Arc::clone(self),
        };
        (response, Some(lease))
    }

    fn put(&self, tx: http1::SendRequest<Incoming>, since: Instant) {
        let idle = Idle { tx, since };
        // A full pool drops (closes) the extra connection.
        drop(self.idle.push(idle));
    }

    async fn connect(&self) -> Result<http1::SendRequest<Incoming>, ProxyError> {
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
