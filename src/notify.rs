//! The webhook notifier (SPEC §9): POSTs each chosen event as JSON to `[notify] webhook`,
//! in order, from its own tasks, so the data path never waits on a receiver.
//!
//! # Pipeline
//!
//! ```text
//! Events::record ──unbounded──▶ intake ──bounded (QUEUE_CAPACITY)──▶ delivery ──▶ POST
//!                               filter by kind,                       retries with
//!                               render the body,                      backoff, sign,
//!                               drop when full                        headers, TLS
//! ```
//!
//! `Events::record` only pushes into an unbounded channel; `intake` drains it at once
//! (filtering and rendering are microseconds), so what waits is the bounded queue: at
//! most [`QUEUE_CAPACITY`] events behind a slow or dead receiver. One more is dropped
//! and counted in `webhook_dropped_total{reason="queue_full"}`. `delivery` sends one
//! event at a time, up to `max_attempts` POSTs of at most `timeout` each, `backoff`
//! apart and doubling (capped at [`MAX_BACKOFF`]); an event whose attempts all fail is
//! dropped and counted in `webhook_dropped_total{reason="retries_exhausted"}`. Each
//! attempt is counted in `webhook_deliveries_total{result}`.
//!
//! # The body and its signature
//!
//! The body is the event as `/api/v1/events` shows it, plus `canary_version` (when the
//! route has one) and `text`, one human line for chat receivers (Slack's incoming
//! webhooks read `text`). With `secret_file`, [`SIGNATURE_HEADER`] carries
//! `sha256=<hex of HMAC-SHA256(secret, body)>` over the exact bytes sent; a receiver
//! recomputes it over the raw body before parsing it, compares in constant time, and
//! may reject an old `time` (inside the signed body) to stop replays.
//!
//! The target (URL, TLS, headers, secret, filter, retry policy) is read from a cell a
//! reload swaps: the filter and text at intake, the rest at each delivery.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::{Config, NotifyConfig};
use crate::events::Event;
use crate::telemetry::WebhookMeters;

#[cfg(test)]
mod tests;
mod text;

/// Events waiting for delivery; one more is dropped (`reason="queue_full"`).
pub const QUEUE_CAPACITY: usize = 1000;
/// The retry delay doubles up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// `sha256=<lower-case hex HMAC-SHA256 of the body>`, with `secret_file`.
pub const SIGNATURE_HEADER: &str = "x-canary-proxy-signature";
/// A keep-alive connection to the receiver is kept this long: below the common 5 s
/// server keep-alive (Node.js), so the receiver seldom closes one under a new POST.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// The receiver's answer is read (so its connection can be reused) up to this size.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where and how events are delivered: one config generation's `[notify]`, and each
/// route's canary version (for the `text` line). A reload swaps it.
#[derive(Debug)]
pub struct Target {
    pub config: NotifyConfig,
    /// Route name → `canary.version`.
    versions: HashMap<String, String>,
}

/// One rendered event waiting in the queue.
#[derive(Debug)]
struct Job {
    kind: &'static str,
    route: Option<String>,
    body: Bytes,
}

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Starts the notifier; events sent on the returned channel are delivered to the
/// current target (a reload may set, change or remove it; none: they are dropped).
pub fn spawn(
    target: Arc<ArcSwapOption<Target>>,
    meters: WebhookMeters,
) -> mpsc::UnboundedSender<Event> {
    spawn_with(target, meters, QUEUE_CAPACITY)
}

fn spawn_with(
    target: Arc<ArcSwapOption<Target>>,
    meters: WebhookMeters,
    capacity: usize,
) -> mpsc::UnboundedSender<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    let (queue_tx, queue_rx) = mpsc::channel(capacity);
    tokio::spawn(intake(Arc::clone(&target), rx, queue_tx, meters.clone()));
    tokio::spawn(delivery(target, queue_rx, meters));
    tx
}

/// `sha256=<hex>`: HMAC-SHA256 of `body` keyed with `secret` (the value of
/// [`SIGNATURE_HEADER`]).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

// === impl Target ===

impl Target {
    /// `None` without `[notify]`.
    pub fn from_config(config: &Config) -> Option<Arc<Target>> {
        let notify = config.notify.clone()?;
        let versions = config
            .routes
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.canary_version.clone()?)))
            .collect();
        Some(Arc::new(Target {
            config: notify,
            versions,
        }))
    }

    /// The JSON body: the event, its route's `canary_version`, and the `text` line.
    fn render(&self, event: &Event) -> serde_json::Result<Bytes> {
        let version = event
            .route
            .as_deref()
            .and_then(|route| self.versions.get(route))
            .map(String::as_str);
        let mut value = serde_json::to_value(event)?;
        if let Value::Object(map) = &mut value {
            if let Some(version) = version {
                map.entry("canary_version").or_insert(version.into());
            }
            map.insert("text".into(), text::line(event, version).into());
        }
        serde_json::to_vec(&value).map(Bytes::from)
    }

    /// One POST of `body`: JSON, the configured headers, the signature.
    fn request(&self, body: &Bytes) -> Result<Request<Full<Bytes>>, http::Error> {
        let config = &self.config;
        let mut request = Request::post(config.webhook.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("canary-proxy/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()))?;
        let headers = request.headers_mut();
        for (name, value) in &config.headers {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(secret) = &config.secret {
            let signature = HeaderValue::try_from(signature(secret.as_bytes(), body))?;
            headers.insert(SIGNATURE_HEADER, signature);
        }
        Ok(request)
    }
}

/// Filters and renders each event, then queues it without waiting.
async fn intake(
    target: Arc<ArcSwapOption<Target>>,
    mut events: mpsc::UnboundedReceiver<Event>,
    queue: mpsc::Sender<Job>,
    meters: WebhookMeters,
) {
    // Warn once per run of drops, not once per dropped event.
    let mut dropping = false;
    while let Some(event) = events.recv().await {
        let Some(target) = target.load_full() else {
            continue;
        };
        if !target.config.events.contains(&event.kind) {
            continue;
        }
        let body = match target.render(&event) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(error = %err, kind = event.kind, "cannot encode event for the webhook");
                continue;
            }
        };
        let job = Job {
            kind: event.kind,
            route: event.route,
            body,
        };
        match queue.try_send(job) {
            Ok(()) => dropping = false,
            Err(mpsc::error::TrySendError::Full(job)) => {
                meters.queue_full.increment(1);
                if !dropping {
                    tracing::warn!(
                        kind = job.kind,
                        route = job.route.as_deref(),
                        capacity = queue.max_capacity(),
                        "webhook queue full; dropping events until it drains"
                    );
                }
                dropping = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// Delivers queued events one at a time, in order.
async fn delivery(
    target: Arc<ArcSwapOption<Target>>,
    mut queue: mpsc::Receiver<Job>,
    meters: WebhookMeters,
) {
    // Rebuilt when a reload swaps the target (its TLS settings may have changed).
    let mut cached: Option<(Arc<Target>, WebhookClient)> = None;
    while let Some(job) = queue.recv().await {
        let Some(current) = target.load_full() else {
            tracing::info!(
                kind = job.kind,
                "webhook removed by a reload; event not sent"
            );
            continue;
        };
        let client = match &cached {
            Some((built_for, client)) if Arc::ptr_eq(built_for, &current) => client.clone(),
            _ => match client(&current.config) {
                Ok(client) => {
                    cached = Some((Arc::clone(&current), client.clone()));
                    client
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot build the webhook client; event dropped");
                    meters.retries_exhausted.increment(1);
                    continue;
                }
            },
        };
        deliver(&client, &current, &job, &meters).await;
    }
}

/// Up to `max_attempts` POSTs of one event.
async fn deliver(client: &WebhookClient, target: &Target, job: &Job, meters: &WebhookMeters) {
    let config = &target.config;
    let mut delay = config.backoff;
    for attempt in 1..=config.max_attempts {
        let result = match target.request(&job.body) {
            Ok(request) => post(client, request, config.timeout).await,
            Err(err) => Err(format!("cannot build the request: {err}")),
        };
        let failure = match result {
            Ok(()) => {
                meters.success.increment(1);
                tracing::debug!(kind = job.kind, attempt, "webhook delivered");
                return;
            }
            Err(failure) => failure,
        };
        meters.failure.increment(1);
        if attempt == config.max_attempts {
            meters.retries_exhausted.increment(1);
            tracing::error!(
                webhook = %config.webhook,
                kind = job.kind,
                route = job.route.as_deref(),
                attempts = attempt,
                error = %failure,
                "webhook delivery failed; event dropped"
            );
            return;
        }
        tracing::warn!(
            webhook = %config.webhook,
            kind = job.kind,
            attempt,
            retry_in_ms = delay.as_millis() as u64,
            error = %failure,
            "webhook delivery failed; retrying"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
    }
}

/// One attempt: `Ok` on a 2xx head within `timeout`.
async fn post(
    client: &WebhookClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<(), String> {
    let response = match tokio::time::timeout(timeout, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(err)) => return Err(error_chain(&err)),
        Err(_) => {
            return Err(format!(
                "no response within {}",
                humantime::format_duration(timeout)
            ))
        }
    };
    let status = response.status();
    // Read the (small) answer so the connection goes back to the pool; its content and
    // any error reading it do not matter: the status decided.
    let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES);
    let _ = tokio::time::timeout(timeout, body.collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("status {status}"))
    }
}

/// A pooled HTTP/1.1 client for the webhook: TLS verified against the webhook's CA or
/// the webpki roots, with the pinned ring provider.
fn client(config: &NotifyConfig) -> Result<WebhookClient, crate::tls::TlsError> {
    let mut tcp = HttpConnector::new();
    tcp.set_nodelay(true);
    // https:// URIs go through TLS, http:// ones do not.
    tcp.enforce_http(false);
    let mut tls = match &config.tls {
        Some(tls) => (*tls.config).clone(),
        // An http:// webhook never handshakes; the connector still wants a config.
        None => crate::tls::client_config(None, None)?,
    };
    tls.alpn_protocols.clear();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector))
}

/// `err` and its sources, `: `-separated (hyper's own message is only "client error").
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let _ = write!(out, ": {err}");
        source = err.source();
    }
    out
}
