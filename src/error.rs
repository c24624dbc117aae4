//! Leaf errors of the data path. Each maps to exactly one SPEC status in
//! `proxy::rescue`, the only place that builds proxy-made responses.

use std::error::Error as StdError;
use std::io;
use std::time::Duration;

use http::StatusCode;

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
