//! The one place that turns an error into a proxy-made response.

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;

use crate::error::{chain, ErrorSource, ProxyError};
use crate::proxy::body::ProxyBody;
use crate::proxy::forward::X_REQUEST_ID;

/// A short plain-text response for `err`, carrying the request id.
pub fn rescue(
    err: &ProxyError,
    route: Option<&str>,
    request_id: &HeaderValue,
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
    response
}
