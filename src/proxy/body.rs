//! The response body the proxy sends downstream: the upstream's, streamed frame by
//! frame and metered, or a short proxy-made one.
//!
//! The meter settles the exchange's outcome when the body ends: at its last frame, at
//! its trailers (where gRPC puts `grpc-status`), on a body error (the upstream reset
//! mid-stream), or when the body is dropped early (the client went away: not the
//! upstream's fault, so the status seen at the head stands). What each of those counts
//! as is `error::classify`'s call, the same as for the head and for a failed attempt.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::access_log::Pending;
use crate::error::{classify, is_grpc, Seen};
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
    /// A proxy-made body of `text` (see `rescue`).
    pub fn text(text: impl Into<Bytes>) -> ProxyBody {
        ProxyBody::Synthetic {
            body: Full::new(text.into()),
            log: None,
        }
    }

    /// No body (the answer to an upgrade).
    pub fn empty() -> ProxyBody {
        ProxyBody::Synthetic {
            body: Full::new(Bytes::new()),
            log: None,
        }
    }

    /// The upstream's `body`, settled by `meter` when it ends, holding `lease` (its
    /// connection) until it is dropped.
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
                        Poll::Ready(Some(Err(_))) => meter.finish(classify(Seen::BodyFailed)),
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
    /// An exchange whose response head (`status`, `headers`) arrived after `latency`.
    /// `listed`: the route's `error_statuses` match `status`. The head is classified
    /// now (a listed status, a trailers-only gRPC failure); the body may add a failure
    /// when it ends.
    pub fn at_head(
        runtime: Arc<RouteRuntime>,
        side: Side,
        status: StatusCode,
        listed: bool,
        headers: &HeaderMap,
        latency: Duration,
    ) -> Meter {
        let grpc = is_grpc(headers);
        Meter {
            runtime,
            side,
            class: Class::of(status),
            error: classify(Seen::Head {
                listed,
                grpc,
                headers,
            }),
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
        if self.grpc && self.error.is_none() {
            self.error = classify(Seen::GrpcTrailers(trailers));
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
