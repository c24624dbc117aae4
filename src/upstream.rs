//! Upstreams: pooled keep-alive clients and endpoint selection.
//!
//! One hyper-util pooled client per protocol (HTTP/1.1, HTTP/2 prior knowledge) is
//! shared by every plain-HTTP upstream of a snapshot; its pool is keyed by endpoint
//! authority, so each endpoint gets its own set of keep-alive connections. An upstream
//! with `https://` endpoints gets its own client carrying its TLS settings (CA, SNI,
//! client certificate; ALPN h2 when `protocol = "h2"`). An `Upstream` picks one of its
//! endpoints round robin and rewrites the request URI to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_rustls::{
    ConfigBuilderExt as _, FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Endpoint, Protocol, UpstreamConfig, UpstreamTls};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled client type every upstream request goes through (plain or TLS).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// The two pooled clients of a snapshot.
#[derive(Debug, Clone)]
pub struct Clients {
    http1: HttpClient,
    http2: HttpClient,
    connect_timeout: Duration,
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
}

// === impl Clients ===

impl Clients {
    pub fn new(connect_timeout: Duration) -> Self {
        Clients {
            http1: client(connect_timeout, Protocol::Http1, None),
            http2: client(connect_timeout, Protocol::Http2, None),
            connect_timeout,
        }
    }

    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn for_protocol(&self, protocol: Protocol) -> &HttpClient {
        match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
        }
    }
}

// === impl Upstream ===

impl Upstream {
    pub fn new(config: &UpstreamConfig, clients: &Clients) -> Self {
        let client = match &config.tls {
            None => clients.for_protocol(config.protocol).clone(),
            Some(tls) => client(clients.connect_timeout, config.protocol, Some(tls)),
        };
        Upstream {
            targets: config.endpoints.iter().map(Target::from).collect(),
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

    /// Sends `req` (its URI already pointing at a target) through the pool.
    pub fn send(&self, req: Request<Incoming>) -> hyper_util::client::legacy::ResponseFuture {
        self.client.request(req)
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
    /// `scheme://authority` + the request's path and query.
    pub fn uri(&self, path_and_query: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
        let pq = match path_and_query {
            Some(pq) => pq.clone(),
            None => PathAndQuery::from_static("/"),
        };
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
        }
    }
}
