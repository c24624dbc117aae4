//! Upstreams: pooled keep-alive clients and endpoint selection.
//!
//! One hyper-util pooled client per protocol (HTTP/1.1, HTTP/2 prior knowledge) is
//! shared by every upstream of a snapshot; its pool is keyed by endpoint authority, so
//! each endpoint gets its own set of keep-alive connections. An `Upstream` picks one of
//! its endpoints round robin and rewrites the request URI to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Endpoint, Protocol, UpstreamConfig};

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The pooled client type every upstream request goes through.
pub type HttpClient = Client<HttpConnector, Incoming>;

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
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));

        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            // The proxy sets Host itself (it keeps the client's Host).
            .set_host(false)
            .build(connector.clone());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timer(TokioTimer::new())
            .http2_only(true)
            .set_host(false)
            .build(connector);
        Clients {
            http1,
            http2,
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
        Upstream {
            targets: config.endpoints.iter().map(Target::from).collect(),
            next: AtomicUsize::new(0),
            client: clients.for_protocol(config.protocol).clone(),
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
