//! The one place that turns an error into a proxy-made response: its status
//! (`ProxyError::status`), log line, body, headers, and whether the client's
//! connection closes after it.

use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use http::{Response, Version};

use crate::error::{chain, ErrorSource, ProxyError};
use crate::proxy::body::ProxyBody;
use crate::proxy::request_id::X_REQUEST_ID;

/// A short plain-text response for `err` to a client that spoke `version`, carrying
/// the request id. After a malformed head an HTTP/1 connection is closed: its framing
/// cannot be trusted (RFC 9112 §11.2); HTTP/2 frames each request on its own.
pub fn rescue(
    err: &ProxyError,
    route: Option<&str>,
    request_id: &HeaderValue,
    version: Version,
) -> Response<ProxyBody> {
    let status = err.status();
    let id = request_id.to_str().unwrap_or("-");
    match err.source_side() {
        ErrorSource::Upstream => {
            tracing::warn!(status = status.as_u16(), route, request_id = id, error = %chain(err), "upstream failure")
        }
        ErrorSource::Internal => {
            tracing::error!(status = status.as_u16(), route, request_id = id, error = %chain(err), "internal error")
        }
        ErrorSource::Downstream => {
            tracing::debug!(status = status.as_u16(), route, request_id = id, error = %chain(err), "rejected request")
        }
    }
    let body = format!(
        "{} {}: {err}\nrequest id: {id}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error"),
    );
    let mut response = Response::new(ProxyBody::text(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_REQUEST_ID, request_id.clone());
    let malformed = matches!(
        err,
        ProxyError::BadRequest(_) | ProxyError::HeadTooLarge { .. }
    );
    if malformed && version < Version::HTTP_2 {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
