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

mod body;
mod h2;
mod pool;
pub mod retry_budget;

pub use body::RequestBody;
pub use h2::H2Endpoint;
pub use pool::{EndpointPool, Lease};

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{
    ConfigBuilderExt as _, FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder,
};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use tokio::time::Instant;

use crate::config::{Protocol, UpstreamConfig, UpstreamTls};
use crate::error::ProxyError;

/// The pooled client type every upstream request goes through (plain or TLS).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// A plain HTTP/1.1 endpoint and the idle timeout of its connections.
type PoolKey = (Authority, Duration);

/// An attempt that got no response.
#[derive(Debug)]
pub struct Failed {
    pub error: ProxyError,
    /// The request, handed back when it was provably never sent (no connection could
    /// be made, or the connection refused it): it may go to another endpoint.
    pub unsent: Option<Request<RequestBody>>,
}

/// An upstream's answer, as far as its head.
#[derive(Debug)]
pub struct Sent {
    pub response: Response<Incoming>,
    /// Returns the connection to its pool; must live as long as the response body.
    pub lease: Option<Lease>,
    /// 1 when the request was sent again after the keep-alive race (see
    /// `EndpointPool::send`).
    pub keepalive_retries: u8,
}

/// The upstream connections a snapshot sends through; cloned into the next snapshot
/// when the connect timeout is unchanged, so pooled connections survive reloads.
#[derive(Debug, Clone)]
pub struct Clients {
    connect_timeout: Duration,
    /// Plain HTTP/1.1 endpoint pools by authority, held by the snapshots' targets: the
    /// last snapshot using an endpoint drops its pool, which closes its idle
    /// connections. Looked up only when a snapshot is built, never per request.
    pools: Arc<Mutex<HashMap<PoolKey, Weak<EndpointPool>>>>,
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
    /// Passive health: see [`Health`].
    pub max_fails: u32,
    pub fail_timeout: Duration,
}

/// One endpoint, ready to be put in a URI.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// How requests reach this endpoint.
    via: Via,
    health: Arc<Health>,
}

/// Passive health of one endpoint, from the requests that go to it (nginx
/// `max_fails`/`fail_timeout`, Envoy's outlier detection): after `max_fails`
/// consecutive connect failures or resets the endpoint is left out of the rotation for
/// `fail_timeout`; then it is tried again, and one more failure ejects it again.
/// Atomics only; the request path never locks.
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: AtomicU32,
    /// Milliseconds since [`clock_origin`]; 0 when in rotation.
    ejected_until: AtomicU64,
}

/// What a reported outcome did to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    Ejected,
    Restored,
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
    fn pool(&self, authority: &Authority, idle_timeout: Duration) -> Arc<EndpointPool> {
        let key = (authority.clone(), idle_timeout);
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|_, pool| pool.strong_count() > 0);
        if let Some(pool) = pools.get(&key).and_then(Weak::upgrade) {
            return pool;
        }
        let pool = EndpointPool::new(authority, self.connect_timeout, idle_timeout);
        pools.insert(key, Arc::downgrade(&pool));
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
        let client = https_h1.then(|| {
            client(
                clients.connect_timeout,
                config.idle_timeout,
                config.tls.as_ref(),
            )
        });
        let targets = config.endpoints.iter().map(|endpoint| {
            let scheme = match endpoint.scheme {
                crate::config::Scheme::Http => Scheme::HTTP,
                crate::config::Scheme::Https => Scheme::HTTPS,
            };
            let authority = endpoint.authority.clone();
            let https = scheme == Scheme::HTTPS;
            let via = match config.protocol {
                Protocol::Http1 if !https => {
                    Via::Pool(clients.pool(&authority, config.idle_timeout))
                }
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
                health: Arc::default(),
            }
        });
        Upstream {
            targets: targets.collect(),
            next: AtomicUsize::new(0),
            client,
            protocol: config.protocol,
            max_fails: config.max_fails,
            fail_timeout: config.fail_timeout,
        }
    }

    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The next endpoint in rotation, round robin, skipping ejected ones (when every
    /// endpoint is ejected, the next one regardless: better a likely failure than a
    /// certain one). `None` only if there are no endpoints.
    pub fn pick(&self, now: Instant) -> Option<&Target> {
        let len = self.targets.len();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if len > 1 {
            let now_ms = millis_since_origin(now);
            for i in 0..len {
                let target = &self.targets[(n + i) % len];
                if target.health.ejected_until.load(Ordering::Relaxed) <= now_ms {
                    return Some(target);
                }
            }
        }
        self.targets.get(n % len.max(1))
    }

    /// How many endpoints this side has.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Reports an attempt's outcome to `target`'s passive health: `failed` for a
    /// connect failure or a reset, else `false`. Returns the change it caused, which
    /// the caller counts and logs.
    pub fn report(&self, target: &Target, failed: bool, now: Instant) -> Option<HealthChange> {
        let health = &target.health;
        if !failed {
            health.consecutive_failures.store(0, Ordering::Relaxed);
            let was = health.ejected_until.swap(0, Ordering::Relaxed);
            return (was != 0).then_some(HealthChange::Restored);
        }
        if self.targets.len() < 2 || self.max_fails == 0 {
            return None; // nowhere else to send its requests, or ejection is off
        }
        let failures = health.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.max_fails {
            return None;
        }
        // Back in rotation after the ejection, one more failure is enough.
        health
            .consecutive_failures
            .store(self.max_fails - 1, Ordering::Relaxed);
        let until = millis_since_origin(now + self.fail_timeout).max(1);
        health.ejected_until.store(until, Ordering::Relaxed);
        Some(HealthChange::Ejected)
    }

    /// Sends `req` (its URI made by `target.uri`) to `target`; `now` is the request's
    /// start. The `Lease`, if any, must live as long as the response body: it returns
    /// the connection to its pool.
    ///
    /// Not an `async fn`: the common path returns the pool's future itself, so the
    /// request is not moved through one more state machine (issue 17); HTTP/2 and
    /// https go through a boxed future of their own.
    pub fn send<'a>(
        &'a self,
        target: &'a Target,
        req: Request<RequestBody>,
        now: Instant,
    ) -> impl Future<Output = Result<Sent, Failed>> + Send + 'a {
        match &target.via {
            Via::Pool(pool) => Either::Left(pool.send(req, now)),
            via => Either::Right(Box::pin(self.send_other(via, req, now))),
        }
    }

    /// [`Upstream::send`] to an HTTP/2 or https endpoint (and, complete, to a pool).
    async fn send_other(
        &self,
        via: &Via,
        req: Request<RequestBody>,
        now: Instant,
    ) -> Result<Sent, Failed> {
        let sent = |response| Sent {
            response,
            lease: None,
            keepalive_retries: 0,
        };
        match via {
            Via::H2(conn) => conn.send(req).await.map(sent),
            Via::Client => {
                let Some(client) = self.client.as_ref() else {
                    let error = ProxyError::Internal("https upstream without a client".into());
                    return Err(Failed::unsent(error, req));
                };
                match client.request(req).await {
                    Ok(response) => Ok(sent(response)),
                    Err(err) => Err(Failed::sent(ProxyError::from_client(err))),
                }
            }
            Via::Pool(pool) => pool.send(req, now).await,
        }
    }
}

/// A pooled HTTP/1.1 client for `https://` endpoints: TCP_NODELAY, connect timeout,
/// and the upstream's TLS settings (webpki roots when it has none).
fn client(
    connect_timeout: Duration,
    idle_timeout: Duration,
    tls: Option<&UpstreamTls>,
) -> HttpClient {
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
        .pool_idle_timeout(idle_timeout)
        // The proxy sets Host itself (the client's authority).
        .set_host(false);
    client.build(connector)
}

/// Milliseconds from a process-wide origin, for instants kept in atomics.
fn millis_since_origin(now: Instant) -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(|| now);
    now.saturating_duration_since(origin).as_millis() as u64 + 1
}

// === impl Failed ===

impl Failed {
    pub fn sent(error: ProxyError) -> Failed {
        Failed {
            error,
            unsent: None,
        }
    }

    pub fn unsent(error: ProxyError, req: Request<RequestBody>) -> Failed {
        Failed {
            error,
            unsent: Some(req),
        }
    }
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
