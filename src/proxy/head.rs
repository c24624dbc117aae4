//! Phase 2, head checks: reject what hyper lets through but a proxy must not forward,
//! and find the authority to route on.
//!
//! One `Host` (RFC 9112 §3.2: exactly one on HTTP/1.1), a `Host` and request-target
//! authority of `host [":" port]` with no userinfo (RFC 3986 §3.2, RFC 9110 §4.2.4),
//! one message framing (RFC 9112 §6.3), a head within `max_header_bytes`. The
//! authority the route was chosen by becomes the upstream's `Host` (RFC 9112 §3.2.2,
//! RFC 9113 §8.3.1).

use http::header::{HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::request::Parts;
use http::{Request, Version};

use crate::error::ProxyError;

/// Rejects heads that hyper lets through but a proxy must not forward, and returns
/// the host to route on.
pub fn check_head<B>(req: &Request<B>, limit: usize) -> Result<Option<&str>, ProxyError> {
    let headers = req.headers();
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if req.version() == Version::HTTP_11 && host.is_none() {
        return Err(ProxyError::BadRequest(
            "HTTP/1.1 request without a Host header",
        ));
    }
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        // Request smuggling: two framings. hyper's HTTP/1.1 parser already drops
        // Content-Length in this case and closes after the response (RFC 9112 §6.3);
        // this catches any other path that would hand us both.
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    let mut size = req.method().as_str().len() + req.uri().to_string_len_hint() + 12;
    for (name, value) in headers {
        size += name.as_str().len() + value.len() + 4;
    }
    if size > limit {
        return Err(ProxyError::HeadTooLarge { limit });
    }
    if let Some(host) = host {
        if !is_valid_authority(host.as_bytes()) {
            return Err(ProxyError::BadRequest("invalid Host header"));
        }
    }
    let host = match req.uri().authority() {
        Some(authority) => {
            if !is_valid_authority(authority.as_str().as_bytes()) {
                // Userinfo (`http://user:pass@host/`) is never sent by a client
                // (RFC 9110 §4.2.4); anything else that fails is malformed.
                return Err(ProxyError::BadRequest(
                    "invalid authority in the request target",
                ));
            }
            Some(authority.as_str())
        }
        None => host.and_then(|h| h.to_str().ok()),
    };
    Ok(host)
}

/// Whether `value` is `host [ ":" port ]` as RFC 9112 §3.2 and RFC 3986 §3.2 allow it
/// in `Host` and a request target: a reg-name (unreserved, pct-encoded, sub-delims),
/// an IPv4 address or a bracketed IP literal, then an optional decimal port. No
/// userinfo (`@`), no whitespace, no `/`, `?` or `#`. The empty value is valid (a
/// `Host` for a target without an authority).
fn is_valid_authority(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        let ok = !literal.is_empty()
            && literal
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b":.%-_~".contains(&b));
        if !ok {
            return false;
        }
        (&[][..], &rest[end + 1..])
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &[][..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    port_ok && is_reg_name(host)
}

/// RFC 3986 §3.2.2 `reg-name` (which also covers IPv4 addresses): unreserved and
/// sub-delims. Percent-encoding, which the RFC also allows there, is refused, as the
/// `http` crate refuses it: no DNS name needs it, and an authority that would not
/// parse as a URI authority could not be sent to an HTTP/2 upstream.
fn is_reg_name(host: &[u8]) -> bool {
    host.iter().all(|&b| REG_NAME[b as usize])
}

/// The bytes `is_reg_name` allows, as a table: one load per byte on the request path.
static REG_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let allowed = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=";
    let mut i = 0;
    while i < allowed.len() {
        table[allowed[i] as usize] = true;
        i += 1;
    }
    table
};

/// Makes `Host` the authority the route was chosen by: a request target with an
/// authority (absolute form, or HTTP/2 `:authority`) wins over any `Host` (RFC 9112
/// §3.2.2, RFC 9113 §8.3.1). A request with neither gets one per attempt (see
/// `attempt::retarget`).
pub fn authority_to_host(parts: &mut Parts) -> Result<(), ProxyError> {
    if let Some(authority) = parts.uri.authority() {
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| ProxyError::BadRequest("invalid authority in the request target"))?;
        parts.headers.insert(HOST, value);
    }
    Ok(())
}

/// The length of a URI as text, without formatting it.
trait UriLen {
    fn to_string_len_hint(&self) -> usize;
}

impl UriLen for http::Uri {
    fn to_string_len_hint(&self) -> usize {
        self.authority().map_or(0, |a| a.as_str().len())
            + self.path_and_query().map_or(1, |pq| pq.as_str().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_syntax_follows_rfc_3986() {
        for valid in [
            "",
            "a",
            "a.example",
            "a.example:8080",
            "a.example:",
            "A-b_c~d.e",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:443",
            "[fe80::1%25eth0]:80",
            "x!$&'()*+,;=y",
        ] {
            assert!(is_valid_authority(valid.as_bytes()), "{valid:?}");
        }
        for invalid in [
            "%41b",
            "a b",
            "a/b",
            "a b@c/d",
            "u@a",
            "u:p@a",
            "a?b",
            "a#b",
            "a:port",
            "a:123456",
            "[::1",
            "[]",
            "[::1]x",
            "a:1:2x",
            "%",
            "%4",
            "a%zz",
            "a\"b",
            "a\tb",
            "a<b",
            "a\\b",
            "é.example",
        ] {
            assert!(!is_valid_authority(invalid.as_bytes()), "{invalid:?}");
        }
    }

    proptest::proptest! {
        /// Whatever passes our check parses as a URI authority, so an HTTP/2 upstream
        /// always gets the client's authority, never the fallback.
        #[test]
        fn a_valid_authority_always_parses(s in "[a-zA-Z0-9.:\\[\\]@/ %_~-]{1,24}") {
            if is_valid_authority(s.as_bytes()) {
                proptest::prop_assert!(http::uri::Authority::try_from(s.as_str()).is_ok(), "{}", s);
            }
        }
    }

    #[test]
    fn head_checks() {
        let ok = Request::get("/x").header(HOST, "a").body(()).unwrap();
        assert_eq!(check_head(&ok, 1024).unwrap(), Some("a"));

        let no_host = Request::get("/x").body(()).unwrap();
        assert!(matches!(
            check_head(&no_host, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let two_hosts = Request::get("/x")
            .header(HOST, "a")
            .header(HOST, "b")
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&two_hosts, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let smuggle = Request::post("/x")
            .header(HOST, "a")
            .header(CONTENT_LENGTH, "3")
            .header(TRANSFER_ENCODING, "chunked")
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&smuggle, 1024),
            Err(ProxyError::BadRequest(_))
        ));

        let big = Request::get("/x")
            .header(HOST, "a")
            .header("x-big", "y".repeat(2000))
            .body(())
            .unwrap();
        assert!(matches!(
            check_head(&big, 1024),
            Err(ProxyError::HeadTooLarge { .. })
        ));

        let h2 = Request::get("http://b.example/x")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(check_head(&h2, 1024).unwrap(), Some("b.example"));
    }
}
