//! Phase 4, upgrade and tunnel: an HTTP/1.1 request that asks to switch protocols
//! (WebSocket, RFC 6455 §4) keeps its `Upgrade` on the way up; a `101 Switching
//! Protocols` from the upstream (RFC 9110 §7.8, §15.2.2) splices the two connections
//! until either side closes. `h2c` (RFC 7540 §3.2, removed in RFC 9113) is not an
//! upgrade here: it is stripped like any hop-by-hop header.

use http::header::{HeaderMap, CONNECTION, UPGRADE};
use http::{Response, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::error::ProxyError;
use crate::proxy::body::ProxyBody;
use crate::proxy::rewrite::response_version;

/// `Connection: upgrade` plus an `Upgrade` other than `h2c` (which hyper ignores and
/// we strip).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(UPGRADE) else {
        return false;
    };
    if upgrade.as_bytes().eq_ignore_ascii_case(b"h2c") {
        return false;
    }
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// The client's side of an upgrade it asked for: taken from the request before its
/// extensions are dropped, `None` when the request is no upgrade (or not HTTP/1.1:
/// HTTP/2 has no `Upgrade`, RFC 9113 §8.6).
pub fn downstream(
    version: Version,
    headers: &HeaderMap,
    extensions: &mut http::Extensions,
) -> Option<OnUpgrade> {
    if version == Version::HTTP_11 && is_upgrade_request(headers) {
        extensions.remove::<OnUpgrade>()
    } else {
        None
    }
}

/// Answers a `101` from the upstream: spawns the tunnel and returns the head the
/// client gets (no body: the connection is the tunnel's from here). A `101` the client
/// did not ask for is a protocol error.
pub fn switch(
    downstream: Option<OnUpgrade>,
    mut response: Response<Incoming>,
    downstream_version: Version,
) -> Result<Response<ProxyBody>, ProxyError> {
    let Some(downstream) = downstream else {
        return Err(ProxyError::Protocol(
            "upstream switched protocols without being asked".into(),
        ));
    };
    let upstream_io = hyper::upgrade::on(&mut response);
    tokio::spawn(tunnel(downstream, upstream_io));
    let (mut parts, _) = response.into_parts();
    parts.version = response_version(downstream_version);
    Ok(Response::from_parts(parts, ProxyBody::empty()))
}

/// Splices an upgraded (e.g. WebSocket) connection to the upstream's until either
/// side closes.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(err) => {
            tracing::debug!(error = %err, "upgrade failed");
            return;
        }
    };
    let mut downstream = TokioIo::new(downstream);
    let mut upstream = TokioIo::new(upstream);
    if let Err(err) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        tracing::debug!(error = %err, "upgraded connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;
    use crate::proxy::rewrite::strip_hop_by_hop;

    #[test]
    fn upgrade_is_kept_for_websocket() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade_request(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[CONNECTION], "upgrade");

        let mut h2c = HeaderMap::new();
        h2c.insert(
            CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h2c.insert(UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade_request(&h2c));
    }
}
