//! One multiplexed HTTP/2 connection per endpoint (`protocol = "h2"`), plain (prior
//! knowledge) or TLS (ALPN `h2`).
//!
//! Our own rather than hyper-util's pooled client, because that client chooses its
//! connection by the request URI's authority, while HTTP/2 carries the request's host
//! in that same authority (`:authority`, RFC 9113 §8.3.1). The upstream must get the
//! client's authority there, exactly what an HTTP/1.1 upstream gets as `Host`, and no
//! separate `host` header (a strict server such as python-h2 refuses a `host` that
//! differs from `:authority`). So the connection is chosen by the `Target`, which holds
//! this, and the URI is free to carry the client's authority.
//!
//! The connection is shared by every request to the endpoint (streams are
//! multiplexed); a closed one is replaced on the next request. A request that the
//! connection handed back unsent (it was closing) is sent once more on a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::pool::connect_tcp;
use super::{Failed, RequestBody};
use crate::config::UpstreamTls;
use crate::error::ProxyError;

type Sender = http2::SendRequest<RequestBody>;

/// The HTTP/2 connection to one endpoint.
#[derive(Debug)]
pub struct H2Endpoint {
    /// `host:port`, as given to `TcpStream::connect`.
    addr: String,
    connect_timeout: Duration,
    /// Set for `https://` endpoints: the TLS client (ALPN `h2`) and the name to verify.
    tls: Option<Tls>,
    current: ArcSwapOption<Sender>,
    /// Connection attempts made; a waiter that sees it move found a failed attempt.
    attempts: AtomicU64,
    /// Taken only to replace a closed connection, so a burst opens one, not many.
    connecting: tokio::sync::Mutex<()>,
}

struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

// === impl H2Endpoint ===

impl H2Endpoint {
    /// An endpoint at `authority` (port 80, or 443 with `tls`, when absent). With
    /// `tls`, the server name verified is `tls.server_name` or the authority's host.
    pub fn new(
        authority: &Authority,
        connect_timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> Arc<H2Endpoint> {
        let default_port = if tls.is_some() { 443 } else { 80 };
        let addr = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{authority}:{default_port}"),
        };
        let tls = tls.map(|tls| {
            let mut config = (*tls.config).clone();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let server_name = tls.server_name.clone().unwrap_or_else(|| {
                ServerName::try_from(host.to_owned())
                    .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("valid"))
            });
            Tls {
                connector: TlsConnector::from(Arc::new(config)),
                server_name,
            }
        });
        Arc::new(H2Endpoint {
            addr,
            connect_timeout,
            tls,
            current: ArcSwapOption::empty(),
            attempts: AtomicU64::new(0),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends `req` (absolute URI: scheme, the client's authority, path) as one stream.
    /// A connection that cannot be made hands the request back (`Failed::unsent`).
    pub async fn send(&self, mut req: Request<RequestBody>) -> Result<Response<Incoming>, Failed> {
        for _ in 0..2 {
            let shared = match self.sender().await {
                Ok(shared) => shared,
                Err(error) => return Err(Failed::unsent(error, req)),
            };
            let mut tx = (*shared).clone();
            match tx.try_send_request(req).await {
                Ok(response) => return Ok(response),
                Err(mut err) => match err.take_message() {
                    // The connection was going away before our stream was opened:
                    // once more on a new one.
                    Some(unsent) => {
                        self.forget(&shared);
                        req = unsent;
                    }
                    None => return Err(Failed::sent(ProxyError::from_hyper(err.into_error()))),
                },
            }
        }
        Err(Failed::unsent(
            ProxyError::Reset(format!("{}: HTTP/2 connection kept closing", self.addr).into()),
            req,
        ))
    }

    /// The live connection, or a new one. Requests that queued behind a connection
    /// attempt share its outcome: when it failed they fail at once as `Connect`
    /// (unsent, so they can go to another endpoint) rather than each waiting out its
    /// own connect timeout in turn.
    async fn sender(&self) -> Result<Arc<Sender>, ProxyError> {
        if let Some(tx) = self.live() {
            return Ok(tx);
        }
        let attempts_seen = self.attempts.load(Ordering::Acquire);
        let _connecting = self.connecting.lock().await;
        if let Some(tx) = self.live() {
            return Ok(tx); // another request connected while we waited
        }
        if self.attempts.load(Ordering::Acquire) != attempts_seen {
            return Err(ProxyError::Connect(
                format!("{}: a concurrent connection attempt just failed", self.addr).into(),
            ));
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        let tx = Arc::new(self.connect().await?);
        self.current.store(Some(Arc::clone(&tx)));
        Ok(tx)
    }

    fn live(&self) -> Option<Arc<Sender>> {
        self.current.load_full().filter(|tx| !tx.is_closed())
    }

    /// Drops the shared connection if it is still the one `tx` came from (a newer one,
    /// made since, is kept).
    fn forget(&self, tx: &Arc<Sender>) {
        let current = self.current.load_full();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, tx)) {
            self.current.compare_and_swap(&current, None);
        }
    }

    async fn connect(&self) -> Result<Sender, ProxyError> {
        let stream = connect_tcp(&self.addr, self.connect_timeout).await?;
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        match &self.tls {
            None => {
                let (tx, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ProxyError::Connect(e.into()))?;
                spawn_conn(conn);
                Ok(tx)
            }
            Some(tls) => {
                let handshake = tls.connector.connect(tls.server_name.clone(), stream);
                let stream = match tokio::time::timeout(self.connect_timeout, handshake).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(err)) => return Err(ProxyError::Connect(err.into())),
                    Err(_elapsed) => {
                        return Err(ProxyError::ConnectTimeout(
                            format!(
                                "no TLS handshake with {} within {:?}",
                                self.addr, self.connect_timeout
                            )
                            .into(),
                        ))
                    }
                };
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(ProxyError::Connect(
                        format!("{} did not agree to HTTP/2 (ALPN h2)", self.addr).into(),
                    ));
                }
                let (tx, conn) = builder
                    .handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| ProxyError::Connect(e.into()))?;
                spawn_conn(conn);
                Ok(tx)
            }
        }
    }
}

fn spawn_conn<T>(conn: http2::Connection<TokioIo<T>, RequestBody, TokioExecutor>)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            tracing::debug!(error = %err, "upstream HTTP/2 connection ended with an error");
        }
    });
}
