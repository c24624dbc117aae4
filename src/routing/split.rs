//! The split: which side a request goes to. Pure functions over bytes and a weight.
//!
//! `H(salt, key) = xxh3_64_with_seed(salt ‖ 0xFF ‖ key, HASH_SEED)`, and
//! `bucket = H mod 10 000`; a key goes to the canary iff `bucket < weight_bp`.
//! The `0xFF` separator never occurs in UTF-8, so (salt, key) pairs cannot collide by
//! concatenation. xxh3 is specified byte-for-byte and platform independent, so every
//! instance and every version of the proxy puts a key on the same side; the golden
//! vectors in the tests pin this.

use std::io::Write as _;
use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, COOKIE, FORWARDED};

use crate::config::{StickySource, Weight};

/// Seed of the sticky hash: the ASCII bytes "canarypx" read as a big-endian u64.
pub const HASH_SEED: u64 = 0x6361_6e61_7279_7078;

/// Number of buckets; a weight in basis points compares directly against a bucket.
pub const BUCKETS: u64 = 10_000;

const SEPARATOR: u8 = 0xFF;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which upstream serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Stable,
    Canary,
}

impl Side {
    /// `stable` or `canary`, as in metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Stable => "stable",
            Side::Canary => "canary",
        }
    }
}

/// `H(salt, key) mod 10 000`.
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    let len = salt.len() + 1 + key.len();
    let hash = if len <= 256 {
        let mut buf = [0u8; 256];
        buf[..salt.len()].copy_from_slice(salt);
        buf[salt.len()] = SEPARATOR;
        buf[salt.len() + 1..len].copy_from_slice(key);
        xxhash_rust::xxh3::xxh3_64_with_seed(&buf[..len], HASH_SEED)
    } else {
        let mut hasher = xxhash_rust::xxh3::Xxh3::with_seed(HASH_SEED);
        hasher.update(salt);
        hasher.update(&[SEPARATOR]);
        hasher.update(key);
        hasher.digest()
    };
    (hash % BUCKETS) as u16
}

/// The side of `key` at `weight`: canary iff `bucket(salt, key) < weight`.
pub fn assign(salt: &[u8], key: &[u8], weight: Weight) -> Side {
    side_of_bucket(bucket(salt, key), weight)
}

/// Canary iff `bucket < weight` (in basis points). Monotone in the weight.
pub fn side_of_bucket(bucket: u16, weight: Weight) -> Side {
    if bucket < weight.basis_points() {
        Side::Canary
    } else {
        Side::Stable
    }
}

/// Calls `f` with the sticky key of a request: the first present source in `sources`,
/// else the peer address. Allocates nothing.
pub fn with_sticky_key<R>(
    sources: &[StickySource],
    headers: &HeaderMap,
    peer: IpAddr,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    for source in sources {
        match source {
            StickySource::Header(name) => {
                if let Some(value) = headers.get(name) {
                    if !value.is_empty() {
                        return f(value.as_bytes());
                    }
                }
            }
            StickySource::Cookie(name) => {
                if let Some(value) = find_cookie(headers, name.as_bytes()) {
                    return f(value);
                }
            }
            StickySource::ClientIp => break,
            StickySource::ForwardedFor(hops) => {
                if let Some(ip) = forwarded_for(headers, hops.get()) {
                    return with_ip_bytes(ip, f);
                }
            }
        }
    }
    with_ip_bytes(peer, f)
}

/// The client address as the `hops`th trusted proxy in front saw it: the `hops`th
/// address from the end of `X-Forwarded-For` (all its lines, in order), or, when that
/// header is absent, the `for=` of the `hops`th element from the end of `Forwarded`
/// (RFC 7239). `None` when the list is shorter, or the entry is not an IP address
/// (`unknown`, an obfuscated `_name`, garbage): only the entries the trusted proxies
/// wrote are read, so a client cannot choose its key by sending a list of its own.
/// Empty list elements are skipped (RFC 9110 §5.6.1). Allocates nothing.
pub fn forwarded_for(headers: &HeaderMap, hops: u8) -> Option<IpAddr> {
    let hops = usize::from(hops);
    if headers.contains_key(X_FORWARDED_FOR) {
        let lines = || headers.get_all(X_FORWARDED_FOR).into_iter();
        let entries = || {
            lines()
                .flat_map(|line| line.as_bytes().split(|&b| b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|entry| !entry.is_empty())
        };
        let index = entries().count().checked_sub(hops)?;
        return entries().nth(index).and_then(parse_node);
    }
    let elements = || {
        headers
            .get_all(FORWARDED)
            .into_iter()
            .flat_map(|line| QuotedSplit::new(line.as_bytes(), b','))
            .map(<[u8]>::trim_ascii)
            .filter(|element| !element.is_empty())
    };
    let index = elements().count().checked_sub(hops)?;
    let element = elements().nth(index)?;
    let node = QuotedSplit::new(element, b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let name = pair[..eq].trim_ascii();
        name.eq_ignore_ascii_case(b"for").then(|| &pair[eq + 1..])
    })?;
    parse_node(unquote(node.trim_ascii()))
}

/// An address as proxies write it: `192.0.2.7`, `2001:db8::1`, `[2001:db8::1]`, and
/// each with a port (`192.0.2.7:4711`, `[2001:db8::1]:4711`).
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// `"value"` → `value` (RFC 7239 quotes IPv6 literals and ports; the proxy's own
/// addresses contain no escapes).
fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// Splits on `sep` outside double quotes (a quoted-string may hold `,` and `;`).
#[derive(Debug)]
struct QuotedSplit<'a> {
    rest: Option<&'a [u8]>,
    sep: u8,
}

impl<'a> QuotedSplit<'a> {
    fn new(bytes: &'a [u8], sep: u8) -> QuotedSplit<'a> {
        QuotedSplit {
            rest: Some(bytes),
            sep,
        }
    }
}

impl<'a> Iterator for QuotedSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in rest.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == self.sep && !quoted => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(&rest[..i]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(rest)
    }
}

/// The textual form of the address (`203.0.113.7`, `2001:db8::1`), as bytes.
fn with_ip_bytes<R>(ip: IpAddr, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; 48];
    let mut cursor = &mut buf[..];
    // An IPv6 address is at most 45 characters: the write cannot fail.
    let _ = write!(cursor, "{ip}");
    let written = 48 - cursor.len();
    f(&buf[..written])
}

/// The value of cookie `name` in any `Cookie` header, if present and non-empty.
fn find_cookie<'h>(headers: &'h HeaderMap, name: &[u8]) -> Option<&'h [u8]> {
    for header in headers.get_all(COOKIE) {
        for pair in header.as_bytes().split(|&b| b == b';') {
            let pair = trim(pair);
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            if trim(&pair[..eq]) == name {
                let value = trim(&pair[eq + 1..]);
                if !value.is_empty() {
                    return Some(value);
                }
            }
        }
    }
    None
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return &[];
    };
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .unwrap_or(start);
    &bytes[start..=end]
}

#[cfg(test)]
mod tests;
