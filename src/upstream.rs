//! Upstreams: pooled keep-alive clients and endpoint selection.
//!
//! Plain `http://` endpoints speaking HTTP/1.1 (the common case) each own an
//! [`EndpointPool`] of keep-alive connections, held by the route's `Target` so a
//! request finds its pool without a lookup. Pools outlive snapshots: a reload that
//! keeps an endpoint keeps its connections.
//!
//! Everything else goes through hyper-util's pooled client: one per protocol for
//! plain HTTP/2 (prior knowledge), shared by every upstream of a snapshot, and one per
//! upstream with `https://` endpoints, carrying its TLS settings (CA, SNI, client
//! certificate; ALPN h2 when `protocol = "h2"`). An `Upstream` picks one of its
//! endpoints round robin.

mod pool;

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

use crate::config::{Endpoint, Protocol, UpstreamConfig, UpstreamTls};
use crate::error::ProxyError;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled client type every upstream request goes through (plain or TLS).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// The upstream connections a snapshot sends through; cloned into the next snapshot
/// when the connect timeout is unchanged, so pooled connections survive reloads.
#[derive(Debug, Clone)]
pub struct Clients {
    http2: HttpClient,
    connect_timeout: Duration,
    /// Plain HTTP/1.1 endpoint pools by authority, held by the snapshots' targets: the
    /// last snapshot using an endpoint drops its pool, which closes its idle
    /// connections. Looked up only when a snapshot is built, never per request.
    pools: Arc<Mutex<HashMap<Authority, Weak<EndpointPool>>>>,
}

/// One side of a route: its endpoints, balanced round robin.
#[derive(Debug)]
pub struct Upstream {
    targets: Box<[Target]>,
    next: AtomicUsize,
    client: HttpClient,
    protocol: Protocol,
}

/// One endpoint, ready to be put in a URI.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Set for plain HTTP/1.1 endpoints: requests go through this pool with an
    /// origin-form URI. `None`: through the upstream's hyper-util client.
    pool: Option<Arc<EndpointPool>>,
}

// === impl Clients ===

impl Clients {
    pub fn new(connect_timeout: Duration) -> Self {
        Clients {
            http2: client(connect_timeout, Protocol::Http2, None),
            connect_timeout,
            pools: Arc::default(),
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
}

// === impl Upstream ===

impl Upstream {
    pub fn new(config: &UpstreamConfig, clients: &Clients) -> Self {
        let client = match &config.tls {
            None => clients.http2.clone(),
            Some(tls) => client(clients.connect_timeout, config.protocol, Some(tls)),
        };
        let own_pool = config.tls.is_none() && config.protocol == Protocol::Http1;
        let targets = config.endpoints.iter().map(|endpoint| {
            let mut target = Target::from(endpoint);
            if own_pool && target.scheme == Scheme::HTTP {
                target.pool = Some(clients.pool(&target.authority));
            }
            target
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
        match &target.pool {
            Some(pool) => pool.send(req, now).await,
            None => match self.client.request(req).await {
                Ok(response) => Ok((response, None)),
                Err(err) => Err(ProxyError::from_client(err)),
            },
        }
    }
}

/// A pooled client: TCP_NODELAY, connect timeout, and (for `https://` endpoints) the
/// upstream's TLS settings. Plain `http://` endpoints pass through the TLS layer
/// untouched.
fn client(connect_timeout: Duration, protocol: Protocol, tls: Option<&UpstreamTls>) -> HttpClient {
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
    // ALPN offers exactly the protocol this upstream speaks.
    let connector = match protocol {
        Protocol::Http1 => builder.enable_http1().wrap_connector(tcp),
        Protocol::Http2 => builder.enable_http2().wrap_connector(tcp),
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // The proxy sets Host itself (it keeps the client's Host).
        .set_host(false);
    if protocol == Protocol::Http2 {
        client.timer(TokioTimer::new()).http2_only(true);
    }
    client.build(connector)
}

// === impl Target ===

impl Target {
    /// The request's path and query for a pooled HTTP/1.1 endpoint (origin form, as
    /// sent on the wire); `scheme://authority` + path and query for the hyper-util
    /// client, which picks its connection by the URI.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = match path_and_query {
            Some(pq) => pq.clone(),
            None => PathAndQuery::from_static("/"),
        };
        if self.pool.is_some() {
            return Ok(Uri::from(pq));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
    }
}

impl From<&Endpoint> for Target {
    fn from(endpoint: &Endpoint) -> Self {
        let scheme = match endpoint.scheme {
            crate::config::Scheme::Http => Scheme::HTTP,
            crate::config::Scheme::Https => Scheme::HTTPS,
        };
        Target {
            scheme,
            authority: endpoint.authority.clone(),
            pool: None,
        }
    }
}
