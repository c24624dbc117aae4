//! Phase 1, the request id: every request gets an `x-request-id` before anything else
//! happens, so every answer (the upstream's or a proxy-made one, see `rescue`) and
//! every log line can name it.
//!
//! `x-request-id` is a de-facto header, not an RFC one. A client's id is kept when it
//! is a sane field value (RFC 9110 §5.5: `HeaderValue` has checked it) of at most
//! [`MAX_REQUEST_ID_LEN`] bytes; otherwise the proxy makes one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the request id, upstream and downstream.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `x-request-id` we pass through, in bytes; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client's `x-request-id` when it is sane, else a new one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    match headers.get(X_REQUEST_ID) {
        Some(id) if !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN => id.clone(),
        _ => new_request_id(),
    }
}

/// `PPPPPPPP-NNNNNNNNNNNNNNNN`: a per-process random prefix and a counter, in hex.
/// Unique per process run, cheap, and sortable within a process.
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{}-{nanos}", std::process::id());
        xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) as u32
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 25];
    for i in 0..8 {
        buf[i] = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    buf[8] = b'-';
    for i in 0..16 {
        buf[9 + i] = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_well_formed() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 25);
        assert_eq!(a.as_bytes()[8], b'-');
    }

    #[test]
    fn client_request_id_is_kept_unless_absurd() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&headers), "abc");
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(200)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 25);
    }
}
