//! The response body the proxy sends downstream: the upstream's, streamed frame by
//! frame and metered, or a short proxy-made one.
//!
//! The meter settles the exchange's outcome when the body ends: at its last frame, at
//! its trailers (where gRPC puts `grpc-status`), on a body error (the upstream reset
//! mid-stream), or when the body is dropped early (the client went away: not the
//! upstream's fault, so the status seen at the head stands).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::access_log::Pending;
use crate::rollout::{Outcome, RouteRuntime};
use crate::routing::Side;
use crate::telemetry::{Class, ErrorKind};
use crate::upstream::Lease;

pin_project! {
    /// A downstream response body. Never buffers the upstream's body.
    #[project = ProxyBodyProj]
    #[derive(Debug)]
    pub enum ProxyBody {
        Upstream {
            #[pin] body: Incoming,
            meter: Option<Meter>,
            // Returns the upstream connection to its pool when the body is dropped.
            lease: Option<Lease>,
            // The access log line (`[log] access`), sent when the body is dropped.
            log: Option<Pending>,
        },
        Synthetic { #[pin] body: Full<Bytes>, log: Option<Pending> },
    }
}

/// Records one exchange's outcome exactly once.
#[derive(Debug)]
pub struct Meter {
    runtime: Arc<RouteRuntime>,
    side: Side,
    class: Class,
    error: Option<ErrorKind>,
    latency: Duration,
    grpc: bool,
    done: bool,
}

// === impl ProxyBody ===

impl ProxyBody {
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Synthetic {
            body: Full::new(text.into()),
            log: None,
        }
    }

    pub fn empty() -> ProxyBody {
        ProxyBody::Synthetic {
            body: Full::new(Bytes::new()),
            log: None,
        }
    }

    pub fn upstream(body: Incoming, meter: Option<Meter>, lease: Option<Lease>) -> ProxyBody {
        ProxyBody::Upstream {
            body,
            meter,
            lease,
            log: None,
        }
    }

    /// Counts the bytes this body passes on into `pending`, the request's access log
    /// line, which is sent when the body is dropped (at its end, or when the client
    /// goes away).
    pub fn with_access_log(mut self, pending: Pending) -> ProxyBody {
        match &mut self {
            ProxyBody::Upstream { log, .. } | ProxyBody::Synthetic { log, .. } => {
                *log = Some(pending);
            }
        }
        self
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ProxyBodyProj::Upstream {
                mut body,
                meter,
                log,
                ..
            } => {
                let polled = body.as_mut().poll_frame(cx);
                if let Some(log) = log {
                    count(log, &polled);
                }
                if let Some(meter) = meter {
                    match &polled {
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(trailers) = frame.trailers_ref() {
                                meter.trailers(trailers);
                                meter.finish(None);
                            } else if body.is_end_stream() {
                                meter.finish(None);
                            }
                        }
                        Poll::Ready(Some(Err(_))) => meter.finish(Some(ErrorKind::Reset)),
                        Poll::Ready(None) => meter.finish(None),
                        Poll::Pending => {}
                    }
                }
                polled
            }
            ProxyBodyProj::Synthetic { body, log } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let (Some(log), Some(data)) = (log, frame.data_ref()) {
                        log.add_bytes(data.len());
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Synthetic { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Synthetic { body, .. } => body.size_hint(),
        }
    }
}

// === impl Meter ===

impl Meter {
    /// An exchange whose response head arrived after `latency`.
    pub fn new(
        runtime: Arc<RouteRuntime>,
        side: Side,
        class: Class,
        error: Option<ErrorKind>,
        latency: Duration,
        grpc: bool,
    ) -> Meter {
        Meter {
            runtime,
            side,
            class,
            error,
            latency,
            grpc,
            done: false,
        }
    }

    /// Marks the exchange as failed with `kind` unless it already is.
    pub fn fail(&mut self, kind: ErrorKind) {
        self.error.get_or_insert(kind);
    }

    fn trailers(&mut self, trailers: &HeaderMap) {
        if self.grpc && self.error.is_none() && grpc_failed(trailers) {
            self.error = Some(ErrorKind::Grpc);
        }
    }

    fn finish(&mut self, error: Option<ErrorKind>) {
        if self.done {
            return;
        }
        self.done = true;
        let outcome = Outcome {
            class: self.class,
            error: self.error.or(error),
            latency: self.latency,
        };
        self.runtime.record(self.side, outcome, Instant::now());
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(None);
    }
}

/// Adds a data frame's length to the access log line.
fn count(log: &mut Pending, polled: &Poll<Option<Result<Frame<Bytes>, hyper::Error>>>) {
    if let Poll::Ready(Some(Ok(frame))) = polled {
        if let Some(data) = frame.data_ref() {
            log.add_bytes(data.len());
        }
    }
}

/// Whether `grpc-status` names a failure that is the server's doing: UNKNOWN (2),
/// DEADLINE_EXCEEDED (4), UNIMPLEMENTED (12), INTERNAL (13), UNAVAILABLE (14),
/// DATA_LOSS (15).
pub fn grpc_failed(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"2" | b"4" | b"12" | b"13" | b"14" | b"15")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_statuses_that_count() {
        let mut headers = HeaderMap::new();
        assert!(!grpc_failed(&headers));
        for (code, failed) in [
            ("0", false),
            ("1", false),
            ("2", true),
            ("3", false),
            ("4", true),
            ("5", false),
            ("12", true),
            ("13", true),
            ("14", true),
            ("15", true),
            ("16", false),
        ] {
            headers.insert("grpc-status", code.parse().unwrap());
            assert_eq!(grpc_failed(&headers), failed, "grpc-status {code}");
        }
    }
}
