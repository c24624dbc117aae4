//! The webhook notifier: POSTs each event as JSON, in order, retrying with backoff, on
//! its own task. The data path only pushes into an unbounded channel.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use crate::events::Event;

/// Attempts per event before it is dropped (with an error log).
pub const ATTEMPTS: u32 = 5;
/// First retry delay; doubles each attempt (0.2, 0.4, 0.8, 1.6 s).
pub const BACKOFF: Duration = Duration::from_millis(200);
/// Per-attempt limit, connect to response head.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts the notifier; events sent on the returned channel are delivered to the
/// current `webhook` (a reload may set, change or remove it; none: dropped).
pub fn spawn(webhook: Arc<ArcSwapOption<Uri>>) -> mpsc::UnboundedSender<Event> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(webhook, rx));
    tx
}

async fn run(webhooks: Arc<ArcSwapOption<Uri>>, mut rx: mpsc::UnboundedReceiver<Event>) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    while let Some(event) = rx.recv().await {
        let Some(webhook) = webhooks.load_full() else {
            continue;
        };
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(err) => {
                tracing::error!(error = %err, "cannot encode event");
                continue;
            }
        };
        let mut delay = BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let request = Request::post((*webhook).clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()));
            let request = match request {
                Ok(request) => request,
                Err(err) => {
                    tracing::error!(error = %err, "cannot build webhook request");
                    break;
                }
            };
            let result = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await;
            let failure = match result {
                Ok(Ok(response)) if response.status().is_success() => None,
                Ok(Ok(response)) => Some(format!("status {}", response.status())),
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => Some("timed out".to_string()),
            };
            let Some(failure) = failure else {
                break;
            };
            if attempt == ATTEMPTS {
                tracing::error!(webhook = %webhook, kind = event.kind, error = %failure, "webhook delivery failed; event dropped");
            } else {
                tracing::warn!(webhook = %webhook, attempt, error = %failure, "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
}
