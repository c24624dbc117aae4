//! Upstreams: pooled keep-alive clients and endpoint selection.
//!
//! Plain `http://` endpoints speaking HTTP/1.1 (the common case) each own an
//! [`EndpointPool`] of keep-alive connections, held by the route's `Target` so a
//! request finds its pool without a lookup. Pools outlive snapshots: a reload that
//! keeps an endpoint keeps its connections.
//!
//! `protocol = "h2"` endpoints, plain or `https://`, each own one multiplexed
//! [`H2Endpoint`] connection (plain ones survive reloads like the pools). The
//! remaining case, `https://` endpoints speaking HTTP/1.1, goes through hyper-util's
//! pooled client, one per upstream, carrying its TLS settings (CA, SNI, client
//! certificate). An `Upstream` picks one of its endpoints round robin.
//!
//! What the upstream is told the request's authority is (`Host` for HTTP/1.1,
//! `:authority` for HTTP/2) is the caller's choice, never the endpoint's address:
//! see `Target::uri`.

mod h2;
mod pool;

pub use h2::H2Endpoint;
pub use pool::{EndpointPool, Lease};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{
    ConfigBuilderExt as _, FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Protocol, UpstreamConfig, UpstreamTls};
use crate::error::ProxyError;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled client type every upstream request goes through (plain or TLS).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// The upstream connections a snapshot sends through; cloned into the next snapshot
/// when the connect timeout is unchanged, so pooled connections survive reloads.
#[derive(Debug, Clone)]
pub struct Clients {
    connect_timeout: Duration,
    /// Plain HTTP/1.1 endpoint pools by authority, held by the snapshots' targets: the
    /// last snapshot using an endpoint drops its pool, which closes its idle
    /// connections. Looked up only when a snapshot is built, never per request.
    pools: Arc<Mutex<HashMap<Authority, Weak<EndpointPool>>>>,
    /// Same for plain HTTP/2 endpoints.
    h2: Arc<Mutex<HashMap<Authority, Weak<H2Endpoint>>>>,
}

/// One side of a route: its endpoints, balanced round robin.
#[derive(Debug)]
pub struct Upstream {
    targets: Box<[Target]>,
    next: AtomicUsize,
    /// Only for `https://` HTTP/1.1 endpoints.
    client: Option<HttpClient>,
    protocol: Protocol,
}

/// One endpoint, ready to be put in a URI.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// How requests reach this endpoint.
    via: Via,
}

/// The connection (pool) a target's requests go through.
#[derive(Debug, Clone)]
enum Via {
    /// Plain HTTP/1.1: our keep-alive pool, origin-form URIs.
    Pool(Arc<EndpointPool>),
    /// HTTP/2, plain or TLS: one multiplexed connection, absolute URIs carrying the
    /// request's authority.
    H2(Arc<H2Endpoint>),
    /// `https://` HTTP/1.1: the upstream's hyper-util client, absolute URIs naming the
    /// endpoint (the client picks its connection by them).
    Client,
}

// === impl Clients ===

impl Clients {
    pub fn new(connect_timeout: Duration) -> Self {
        Clients {
            connect_timeout,
            pools: Arc::default(),
            h2: Arc::default(),
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The pool of a plain HTTP/1.1 endpoint, shared with the snapshots still alive.
    fn pool(&self, authority: &Authority) -> Arc<EndpointPool> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, pool| pool.strong_count() > 0);
        if let Some(pool) = pools.get(authority).and_then(Weak::upgrade) {
            return pool;
        }
        let pool = EndpointPool::new(authority, self.connect_timeout);
        pools.insert(authority.clone(), Arc::downgrade(&pool));
        pool
    }

    /// The connection of a plain HTTP/2 endpoint, shared with the snapshots still alive.
    fn h2(&self, authority: &Authority) -> Arc<H2Endpoint> {
        let mut conns = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|_, conn| conn.strong_count() > 0);
        if let Some(conn) = conns.get(authority).and_then(Weak::upgrade) {
            return conn;
        }
        let conn = H2Endpoint::new(authority, self.connect_timeout, None);
        conns.insert(authority.clone(), Arc::downgrade(&conn));
        conn
    }
}

// === impl Upstream ===

impl Upstream {
    pub fn new(config: &UpstreamConfig, clients: &Clients) -> Self {
        let https_h1 = config.protocol == Protocol::Http1
            && config
                .endpoints
                .iter()
                .any(|e| e.scheme == crate::config::Scheme::Https);
        let client = https_h1.then(|| client(clients.connect_timeout, config.tls.as_ref()));
        let targets = config.endpoints.iter().map(|endpoint| {
            let scheme = match endpoint.scheme {
                crate::config::Scheme::Http => Scheme::HTTP,
                crate::config::Scheme::Https => Scheme::HTTPS,
            };
            let authority = endpoint.authority.clone();
            let https = scheme == Scheme::HTTPS;
            let via = match config.protocol {
                Protocol::Http1 if !https => Via::Pool(clients.pool(&authority)),
                Protocol::Http1 => Via::Client,
                Protocol::Http2 if !https => Via::H2(clients.h2(&authority)),
                Protocol::Http2 => Via::H2(H2Endpoint::new(
                    &authority,
                    clients.connect_timeout,
                    config.tls.as_ref(),
                )),
            };
            Target {
                scheme,
                authority,
                via,
            }
        });
        Upstream {
            targets: targets.collect(),
            next: AtomicUsize::new(0),
            client,
            protocol: config.protocol,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The next endpoint, round robin. `None` only if there are no endpoints.
    pub fn pick(&self) -> Option<&Target> {
        if self.targets.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.targets.get(n % self.targets.len())
    }

    /// Sends `req` (its URI made by `target.uri`) to `target`; `now` is the request's
    /// start. The `Lease`, if any, must live as long as the response body: it returns
    /// the connection to its pool.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<Incoming>,
        now: tokio::time::Instant,
    ) -> Result<(Response<Incoming>, Option<Lease>), ProxyError> {
        match &target.via {
            Via::Pool(pool) => pool.send(req, now).await,
            Via::H2(conn) => conn.send(req).await.map(|response| (response, None)),
            Via::Client => {
                let client = self.client.as_ref().ok_or_else(|| {
                    ProxyError::Internal("https upstream without a client".into())
                })?;
                match client.request(req).await {
                    Ok(response) => Ok((response, None)),
                    Err(err) => Err(ProxyError::from_client(err)),
                }
            }
        }
    }
}

/// A pooled HTTP/1.1 client for `https://` endpoints: TCP_NODELAY, connect timeout,
/// and the upstream's TLS settings (webpki roots when it has none).
fn client(connect_timeout: Duration, tls: Option<&UpstreamTls>) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(connect_timeout));
    tcp.set_keepalive(Some(Duration::from_secs(60)));
    // https:// URIs go through TLS, http:// ones do not.
    tcp.enforce_http(false);

    let mut tls_config = match tls {
        Some(tls) => (*tls.config).clone(),
        // Plain-HTTP upstreams never handshake; the connector still wants a config.
        None => rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the pinned ring provider supports TLS 1.2 and 1.3")
            .with_webpki_roots()
            .with_no_client_auth(),
    };
    tls_config.alpn_protocols.clear();
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config)
        .https_or_http();
    let builder = match tls.and_then(|t| t.server_name.clone()) {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    let connector = builder.enable_http1().wrap_connector(tcp);
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // The proxy sets Host itself (the client's authority).
        .set_host(false);
    client.build(connector)
}

// === impl Target ===

impl Target {
    /// The URI to send a request for `path_and_query` with, where `authority` is what
    /// the upstream must see as the request's authority (RFC 9110 §7.2: the client's,
    /// so virtual hosts and strict HTTP/2 servers work):
    /// - pooled HTTP/1.1: origin form (the authority goes in `Host`);
    /// - HTTP/2: `scheme://authority/path`, which becomes `:authority` (RFC 9113 §8.3.1);
    ///   the caller sends no `host` header;
    /// - `https://` HTTP/1.1 through hyper-util: `https://endpoint/path` (the client
    ///   picks its connection by it; the authority goes in `Host`).
    pub fn uri(
        &self,
        path_and_query: Option<&PathAndQuery>,
        authority: &Authority,
    ) -> Result<Uri, http::Error> {
        let pq = match path_and_query {
            Some(pq) => pq.clone(),
            None => PathAndQuery::from_static("/"),
        };
        let authority = match &self.via {
            Via::Pool(_) => return Ok(Uri::from(pq)),
            Via::H2(_) => authority.clone(),
            Via::Client => self.authority.clone(),
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority)
            .path_and_query(pq)
            .build()
    }
}
