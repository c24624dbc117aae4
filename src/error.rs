//! Leaf errors of the data path. Each maps to exactly one SPEC status in
//! `proxy::rescue`, the only place that builds proxy-made responses; [`classify`]
//! judges every outcome of an exchange (a failure, a response head, trailers, a body
//! error) for the rollout's judgement, wherever the data path sees it.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::header::{HeaderMap, CONTENT_TYPE};
use http::StatusCode;

use crate::telemetry::ErrorKind;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why the proxy answered a request itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("no route for this host and path")]
    NoRoute,
    #[error("no endpoint available")]
    NoEndpoint,
    #[error("upstream connect failed")]
    Connect(#[source] BoxError),
    #[error("upstream connect timed out")]
    ConnectTimeout(#[source] BoxError),
    #[error("upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("upstream closed or reset the connection")]
    Reset(#[source] BoxError),
    #[error("upstream protocol error")]
    Protocol(#[source] BoxError),
    #[error("client aborted the request")]
    ClientAborted(#[source] BoxError),
    #[error("internal error")]
    Internal(#[source] BoxError),
}

/// Who caused an error: decides the log level and whether it counts against an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    Downstream,
    Upstream,
    Internal,
}

// === impl ProxyError ===

impl ProxyError {
    /// The SPEC status of the proxy-made response for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) | ProxyError::ClientAborted(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Connect(_) | ProxyError::Reset(_) | ProxyError::Protocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::ConnectTimeout(_) | ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who caused the error (see [`ErrorSource`]).
    pub fn source_side(&self) -> ErrorSource {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge { .. }
            | ProxyError::NoRoute
            | ProxyError::ClientAborted(_) => ErrorSource::Downstream,
            ProxyError::NoEndpoint
            | ProxyError::Connect(_)
            | ProxyError::ConnectTimeout(_)
            | ProxyError::Timeout(_)
            | ProxyError::Reset(_)
            | ProxyError::Protocol(_) => ErrorSource::Upstream,
            ProxyError::Internal(_) => ErrorSource::Internal,
        }
    }

    /// Classifies a failure of the pooled upstream client.
    pub fn from_client(err: hyper_util::client::legacy::Error) -> ProxyError {
        if err.is_connect() {
            return if chain_has_io_kind(&err, io::ErrorKind::TimedOut) {
                ProxyError::ConnectTimeout(err.into())
            } else {
                ProxyError::Connect(err.into())
            };
        }
        if let Some(hyper_err) = find_in_chain::<hyper::Error>(&err) {
            let wrap = hyper_kind(hyper_err);
            return wrap(err.into());
        }
        if chain_has_io_kind(&err, io::ErrorKind::ConnectionReset)
            || chain_has_io_kind(&err, io::ErrorKind::BrokenPipe)
            || chain_has_io_kind(&err, io::ErrorKind::UnexpectedEof)
        {
            return ProxyError::Reset(err.into());
        }
        ProxyError::Protocol(err.into())
    }
}

impl ProxyError {
    /// Classifies a failure of an upstream HTTP/1.1 connection of our own pool.
    pub fn from_hyper(err: hyper::Error) -> ProxyError {
        let wrap = hyper_kind(&err);
        wrap(err.into())
    }
}

/// What the data path saw of one exchange, when it saw it. [`classify`] judges each
/// the same way wherever it is seen: the attempt, the response head, the body meter.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// The attempt ended without a response head.
    Failed(&'a ProxyError),
    /// The response head. `listed`: the route's `error_statuses` match its status.
    /// `grpc`: a gRPC response ([`is_grpc`]), whose head carries `grpc-status` when it
    /// is trailers-only.
    Head {
        listed: bool,
        grpc: bool,
        headers: &'a HeaderMap,
    },
    /// The trailers of a gRPC response.
    GrpcTrailers(&'a HeaderMap),
    /// The response body failed before its end: the upstream reset mid-stream.
    BodyFailed,
}

/// The failure `seen` counts as against the side that answered, or `None` when it
/// does not count: a success, or the client's doing (its body failed, its head was
/// bad). A listed status wins over a gRPC status in the same head. The failures
/// that count are also the ones that count towards an endpoint's ejection.
#[inline]
pub fn classify(seen: Seen<'_>) -> Option<ErrorKind> {
    match seen {
        Seen::Failed(error) => match error {
            ProxyError::Connect(_) | ProxyError::ConnectTimeout(_) => Some(ErrorKind::Connect),
            ProxyError::Timeout(_) => Some(ErrorKind::Timeout),
            ProxyError::Reset(_) => Some(ErrorKind::Reset),
            ProxyError::Protocol(_) => Some(ErrorKind::Protocol),
            ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge { .. }
            | ProxyError::NoRoute
            | ProxyError::NoEndpoint
            | ProxyError::ClientAborted(_)
            | ProxyError::Internal(_) => None,
        },
        Seen::Head { listed: true, .. } => Some(ErrorKind::Status),
        Seen::Head {
            grpc: true,
            headers,
            ..
        }
        | Seen::GrpcTrailers(headers)
            if grpc_failed(headers) =>
        {
            Some(ErrorKind::Grpc)
        }
        Seen::Head { .. } | Seen::GrpcTrailers(_) => None,
        Seen::BodyFailed => Some(ErrorKind::Reset),
    }
}

/// Whether a message is gRPC (`content-type: application/grpc…`, gRPC over HTTP/2
/// §Requests): its outcome is also in `grpc-status`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"))
}

/// Whether `grpc-status` names a failure that is the server's doing: UNKNOWN (2),
/// DEADLINE_EXCEEDED (4), UNIMPLEMENTED (12), INTERNAL (13), UNAVAILABLE (14),
/// DATA_LOSS (15).
fn grpc_failed(headers: &HeaderMap) -> bool {
    matches!(
        headers.get("grpc-status").map(|v| v.as_bytes()),
        Some(b"2" | b"4" | b"12" | b"13" | b"14" | b"15")
    )
}

/// The variant a hyper error from an upstream exchange maps to.
fn hyper_kind(err: &hyper::Error) -> fn(BoxError) -> ProxyError {
    if err.is_user() {
        // The request body (the client's) failed: not the upstream's fault.
        ProxyError::ClientAborted
    } else if err.is_parse() {
        ProxyError::Protocol
    } else if err.is_timeout() {
        |_| ProxyError::Timeout(Duration::ZERO)
    } else {
        ProxyError::Reset
    }
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

fn chain_has_io_kind(err: &(dyn StdError + 'static), kind: io::ErrorKind) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == kind {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The whole source chain on one line, for logs.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
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
            let trailers = classify(Seen::GrpcTrailers(&headers));
            assert_eq!(trailers, failed.then_some(ErrorKind::Grpc), "{code}");
        }
    }

    #[test]
    fn one_judgement_wherever_an_outcome_is_seen() {
        let failing = |error: ProxyError| classify(Seen::Failed(&error));
        assert_eq!(
            failing(ProxyError::Connect("x".into())),
            Some(ErrorKind::Connect)
        );
        assert_eq!(
            failing(ProxyError::ConnectTimeout("x".into())),
            Some(ErrorKind::Connect)
        );
        assert_eq!(
            failing(ProxyError::Timeout(Duration::ZERO)),
            Some(ErrorKind::Timeout)
        );
        assert_eq!(
            failing(ProxyError::Reset("x".into())),
            Some(ErrorKind::Reset)
        );
        assert_eq!(
            failing(ProxyError::Protocol("x".into())),
            Some(ErrorKind::Protocol)
        );
        // The client's doing, or no upstream at all: not the side's failure.
        assert_eq!(failing(ProxyError::ClientAborted("x".into())), None);
        assert_eq!(failing(ProxyError::NoEndpoint), None);
        assert_eq!(failing(ProxyError::BadRequest("x")), None);

        let mut grpc = HeaderMap::new();
        grpc.insert(CONTENT_TYPE, "application/grpc+proto".parse().unwrap());
        grpc.insert("grpc-status", "14".parse().unwrap());
        assert!(is_grpc(&grpc));
        let head = |listed, grpc_flag, headers| {
            classify(Seen::Head {
                listed,
                grpc: grpc_flag,
                headers,
            })
        };
        assert_eq!(head(true, true, &grpc), Some(ErrorKind::Status));
        assert_eq!(head(false, true, &grpc), Some(ErrorKind::Grpc));
        // `grpc-status` on a response that is not gRPC means nothing.
        assert_eq!(head(false, false, &grpc), None);
        assert_eq!(head(false, false, &HeaderMap::new()), None);
        assert_eq!(classify(Seen::BodyFailed), Some(ErrorKind::Reset));
    }
}
