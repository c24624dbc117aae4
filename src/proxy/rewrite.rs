//! Phase 3, header rewriting: the head the upstream gets, and the head the client
//! gets back.
//!
//! Hop-by-hop headers go (RFC 9110 §7.6.1: the fixed list and whatever `Connection`
//! names), in both directions. The request gains the client in `x-forwarded-for` and
//! `forwarded` (RFC 7239 §4, §5.2), and `x-forwarded-proto` unless a proxy in front
//! set it. The response speaks the client's version, not the upstream's (RFC 9110
//! §6.2).

use std::net::{IpAddr, SocketAddr};

use http::header::{
    Entry, HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, FORWARDED, HOST, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use http::response::Parts;
use http::Version;

use crate::proxy::request_id::X_REQUEST_ID;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// What the proxy knows about the downstream connection, with the forwarding header
/// values precomputed once per connection rather than formatted per request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (the `client_ip` sticky key, the forwarding headers).
    pub peer: SocketAddr,
    /// Whether the client connected over TLS (`proto=https`).
    pub tls: bool,
    /// The peer address as text: `x-forwarded-for` when the client sent none.
    xff: HeaderValue,
    /// `for=…;proto=…`: `forwarded` when the client sent none.
    forwarded: HeaderValue,
}

// === impl ConnInfo ===

impl ConnInfo {
    /// The connection from `peer`, over TLS when `tls`, its forwarding values
    /// formatted once.
    pub fn new(peer: SocketAddr, tls: bool) -> ConnInfo {
        let ip = peer.ip();
        let proto = if tls { "https" } else { "http" };
        let forwarded = match ip {
            IpAddr::V4(v4) => format!("for={v4};proto={proto}"),
            IpAddr::V6(v6) => format!("for=\"[{v6}]\";proto={proto}"),
        };
        ConnInfo {
            peer,
            tls,
            xff: HeaderValue::from_str(&ip.to_string())
                .unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::from_str(&forwarded)
                .unwrap_or(HeaderValue::from_static("for=unknown")),
        }
    }
}

/// Rewrites a request's headers for the upstream: no hop-by-hop headers (but the
/// `Upgrade` of an upgrade the client asked for, `keep_upgrade`), the client in the
/// forwarding headers, and the request id.
pub fn request_head(
    headers: &mut HeaderMap,
    conn: &ConnInfo,
    request_id: &HeaderValue,
    keep_upgrade: bool,
) {
    strip_hop_by_hop(headers, keep_upgrade);
    append_forwarded(headers, conn);
    headers.insert(X_REQUEST_ID, request_id.clone());
}

/// Rewrites an upstream's response head for the client: our own version, whatever
/// the upstream spoke (an HTTP/1.0 upstream must not make an HTTP/1.1 client's
/// connection close), and no hop-by-hop headers.
pub fn response_head(parts: &mut Parts, downstream: Version) {
    parts.version = response_version(downstream);
    strip_hop_by_hop(&mut parts.headers, false);
}

/// The version of a response to a client that spoke `downstream`: ours, HTTP/1.1 or
/// HTTP/2 (hyper itself answers an HTTP/1.0 client in kind).
pub fn response_version(downstream: Version) -> Version {
    if downstream == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

/// Removes hop-by-hop headers: the fixed list (RFC 9110 §7.6.1) and every header named
/// in `Connection`. `TE: trailers` is end-to-end in practice (gRPC) and kept.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the (few) header names, comparing standard names (an enum compare,
    // no hashing), then a removal only for those present: an upstream's response
    // usually carries just `Connection: keep-alive`.
    let present = headers
        .keys()
        .fold(Hop::empty(), |present, name| present | Hop::of(name));
    if present.contains(Hop::CONNECTION) {
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(CONNECTION) {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.is_empty()
                    || token.eq_ignore_ascii_case(b"close")
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"upgrade")
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token) {
                    if name != X_REQUEST_ID && name != HOST {
                        named.push(name);
                    }
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
        headers.remove(CONNECTION);
    }
    for (flag, name) in [
        (Hop::KEEP_ALIVE, KEEP_ALIVE),
        // Answered by the proxy (hyper sends 100 Continue when the body is read).
        (Hop::EXPECT, EXPECT),
        (Hop::PROXY_CONNECTION, PROXY_CONNECTION),
        (Hop::TRANSFER_ENCODING, TRANSFER_ENCODING),
        (Hop::HTTP2_SETTINGS, HTTP2_SETTINGS),
    ] {
        if present.contains(flag) {
            headers.remove(name);
        }
    }
    if present.contains(Hop::TE) {
        if let Some(te) = headers.get(TE) {
            if !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"trailers") {
                headers.remove(TE);
            }
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present.contains(Hop::UPGRADE) {
        headers.remove(UPGRADE);
    }
}

/// The hop-by-hop headers a message carries, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hop(u8);

impl Hop {
    const CONNECTION: Hop = Hop(1);
    const KEEP_ALIVE: Hop = Hop(1 << 1);
    const EXPECT: Hop = Hop(1 << 2);
    const PROXY_CONNECTION: Hop = Hop(1 << 3);
    const TRANSFER_ENCODING: Hop = Hop(1 << 4);
    const HTTP2_SETTINGS: Hop = Hop(1 << 5);
    const TE: Hop = Hop(1 << 6);
    const UPGRADE: Hop = Hop(1 << 7);

    fn empty() -> Hop {
        Hop(0)
    }

    fn of(name: &HeaderName) -> Hop {
        if name == CONNECTION {
            Hop::CONNECTION
        } else if name == KEEP_ALIVE {
            Hop::KEEP_ALIVE
        } else if name == EXPECT {
            Hop::EXPECT
        } else if name == PROXY_CONNECTION {
            Hop::PROXY_CONNECTION
        } else if name == TRANSFER_ENCODING {
            Hop::TRANSFER_ENCODING
        } else if name == HTTP2_SETTINGS {
            Hop::HTTP2_SETTINGS
        } else if name == TE {
            Hop::TE
        } else if name == UPGRADE {
            Hop::UPGRADE
        } else {
            Hop::empty()
        }
    }

    fn contains(self, other: Hop) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Hop {
    type Output = Hop;

    fn bitor(self, other: Hop) -> Hop {
        Hop(self.0 | other.0)
    }
}

/// Appends the peer to `x-forwarded-for` and `forwarded`; sets `x-forwarded-proto`
/// unless a proxy in front already set it. One hash per header (entry API).
pub fn append_forwarded(headers: &mut HeaderMap, conn: &ConnInfo) {
    append_list(headers, X_FORWARDED_FOR, &conn.xff);
    append_list(headers, FORWARDED, &conn.forwarded);
    let proto = if conn.tls { "https" } else { "http" };
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static(proto));
}

/// `name: existing, value` (all existing lines joined: header lines are equivalent to
/// a list), or just `value`, a refcount bump with no formatting.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert(value.clone());
        }
        Entry::Occupied(mut entry) => {
            let mut joined = String::new();
            for existing in entry.iter() {
                if let Ok(existing) = existing.to_str() {
                    joined.push_str(existing);
                    joined.push_str(", ");
                }
            }
            joined.push_str(value.to_str().unwrap_or_default());
            if let Ok(joined) = HeaderValue::from_str(&joined) {
                // Replaces every previous line.
                entry.insert(joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret, Upgrade"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
        headers.insert(HTTP2_SETTINGS, HeaderValue::from_static("AAMAAABkAAQAAP__"));
        headers.insert(TE, HeaderValue::from_static("gzip"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));

        let mut headers = HeaderMap::new();
        headers.insert(TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.contains_key(TE));
    }

    #[test]
    fn each_hop_by_hop_header_is_removed_on_its_own() {
        for name in [
            CONNECTION,
            KEEP_ALIVE,
            EXPECT,
            PROXY_CONNECTION,
            TRANSFER_ENCODING,
            HTTP2_SETTINGS,
            TE,
            UPGRADE,
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            headers.insert(HOST, HeaderValue::from_static("example.com"));
            strip_hop_by_hop(&mut headers, false);
            assert!(!headers.contains_key(&name), "{name} kept");
            assert!(headers.contains_key(HOST), "{name}: host removed");
        }
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let conn = ConnInfo::new("10.1.2.3:5555".parse().unwrap(), false);
        let mut headers = HeaderMap::new();
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.1"));
        append_forwarded(&mut headers, &conn);
        assert_eq!(headers[X_FORWARDED_FOR], "192.0.2.1, 10.1.2.3");
        assert_eq!(headers[FORWARDED], "for=10.1.2.3;proto=http");
        assert_eq!(headers[X_FORWARDED_PROTO], "http");

        let conn = ConnInfo::new("[2001:db8::1]:5555".parse().unwrap(), true);
        let mut headers = HeaderMap::new();
        headers.insert(FORWARDED, HeaderValue::from_static("for=192.0.2.1"));
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        append_forwarded(&mut headers, &conn);
        assert_eq!(
            headers[FORWARDED],
            "for=192.0.2.1, for=\"[2001:db8::1]\";proto=https"
        );
        assert_eq!(headers[X_FORWARDED_FOR], "2001:db8::1");
    }
}
