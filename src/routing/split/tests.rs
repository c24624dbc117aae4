use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};
use proptest::prelude::*;

use super::*;

fn w(percent: f64) -> Weight {
    Weight::from_percent(percent).unwrap()
}

/// Pinned (salt, key) → bucket pairs, cross-checked with Python's `xxhash` package:
/// `xxh3_64_intdigest(salt + b'\xff' + key, seed=0x63616e6172797078) % 10000`. If this test fails, a change (a dependency bump,
/// a refactor) would move users between stable and canary: do not update the numbers,
/// fix the code.
#[test]
fn golden_vectors() {
    let cases: &[(&str, &str, u16)] = &[
        ("checkout", "user-1", 9841),
        ("checkout", "user-2", 2639),
        ("checkout", "alice@example.com", 5588),
        ("checkout", "", 7704),
        ("search", "user-1", 9067),
        ("search", "203.0.113.7", 5198),
        ("", "user-1", 9440),
        (
            "a-very-long-salt-that-is-still-fine",
            "0123456789abcdef0123456789abcdef",
            6481,
        ),
    ];
    for &(salt, key, expected) in cases {
        assert_eq!(
            bucket(salt.as_bytes(), key.as_bytes()),
            expected,
            "salt={salt:?} key={key:?}"
        );
    }
    // Longer than the 256-byte stack buffer: the streaming path.
    assert_eq!(bucket("x".repeat(300).as_bytes(), b"user-1"), 1996);
}

#[test]
fn long_inputs_hash_like_short_ones() {
    // The stack-buffer fast path and the streaming path must agree.
    let salt = "s".repeat(100);
    let key = "k".repeat(155); // 100 + 1 + 155 = 256: fast path
    let mut joined = salt.clone().into_bytes();
    joined.push(0xFF);
    joined.extend_from_slice(key.as_bytes());
    let expected = (xxhash_rust::xxh3::xxh3_64_with_seed(&joined, HASH_SEED) % BUCKETS) as u16;
    assert_eq!(bucket(salt.as_bytes(), key.as_bytes()), expected);
    let key = "k".repeat(156); // 257: streaming path
    let mut joined = salt.clone().into_bytes();
    joined.push(0xFF);
    joined.extend_from_slice(key.as_bytes());
    let expected = (xxhash_rust::xxh3::xxh3_64_with_seed(&joined, HASH_SEED) % BUCKETS) as u16;
    assert_eq!(bucket(salt.as_bytes(), key.as_bytes()), expected);
}

#[test]
fn edge_weights() {
    for key in 0..1000 {
        let key = format!("k{key}");
        assert_eq!(assign(b"s", key.as_bytes(), Weight::ZERO), Side::Stable);
        assert_eq!(assign(b"s", key.as_bytes(), Weight::FULL), Side::Canary);
    }
}

#[test]
fn share_follows_weight() {
    for (percent, tolerance) in [(10.0, 1.0), (0.5, 0.2), (50.0, 1.5), (99.0, 0.5)] {
        let n = 20_000;
        let canary = (0..n)
            .filter(|i| {
                assign(b"route", format!("user-{i}").as_bytes(), w(percent)) == Side::Canary
            })
            .count();
        let share = canary as f64 * 100.0 / n as f64;
        assert!(
            (share - percent).abs() <= tolerance,
            "weight {percent}%: canary share {share}%"
        );
    }
}

#[test]
fn salt_draws_a_new_cohort() {
    let a: Vec<Side> = (0..2000)
        .map(|i| assign(b"one", format!("u{i}").as_bytes(), w(10.0)))
        .collect();
    let b: Vec<Side> = (0..2000)
        .map(|i| assign(b"two", format!("u{i}").as_bytes(), w(10.0)))
        .collect();
    assert_ne!(a, b);
}

#[test]
fn sticky_key_sources_in_order() {
    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    let sources = [
        StickySource::Header(HeaderName::from_static("x-user-id")),
        StickySource::Cookie("session".into()),
        StickySource::ClientIp,
    ];
    let key = |headers: &HeaderMap| with_sticky_key(&sources, headers, peer, |k| k.to_vec());

    let mut headers = HeaderMap::new();
    assert_eq!(key(&headers), b"203.0.113.7");
    headers.insert(COOKIE, HeaderValue::from_static("a=1; session=abc ; b=2"));
    assert_eq!(key(&headers), b"abc");
    headers.insert("x-user-id", HeaderValue::from_static("u42"));
    assert_eq!(key(&headers), b"u42");
    // An empty header is absent.
    headers.insert("x-user-id", HeaderValue::from_static(""));
    assert_eq!(key(&headers), b"abc");
}

#[test]
fn cookie_parsing() {
    let mut headers = HeaderMap::new();
    headers.append(COOKIE, HeaderValue::from_static("x=1;y=2"));
    headers.append(
        COOKIE,
        HeaderValue::from_static("sessionid=nope; session=yes"),
    );
    assert_eq!(find_cookie(&headers, b"session"), Some(&b"yes"[..]));
    assert_eq!(find_cookie(&headers, b"y"), Some(&b"2"[..]));
    assert_eq!(find_cookie(&headers, b"z"), None);
    headers.insert(COOKIE, HeaderValue::from_static("session=; other"));
    assert_eq!(find_cookie(&headers, b"session"), None);
}

#[test]
fn client_ip_key_is_textual() {
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    let got = with_sticky_key(&[], &HeaderMap::new(), v6, |k| k.to_vec());
    assert_eq!(got, b"2001:db8::1");
    let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
        .parse()
        .unwrap();
    let got = with_sticky_key(&[], &HeaderMap::new(), long, |k| k.to_vec());
    assert_eq!(got, long.to_string().as_bytes());
}

proptest! {
    /// Raising the weight never moves a key from canary to stable, and lowering it
    /// never moves a key from stable to canary.
    #[test]
    fn assignment_is_monotone(
        key in proptest::collection::vec(any::<u8>(), 0..64),
        salt in "[a-z0-9-]{0,24}",
        a in 0u16..=10_000,
        b in 0u16..=10_000,
    ) {
        let (low, high) = if a <= b { (a, b) } else { (b, a) };
        let low = Weight::from_basis_points(low).unwrap();
        let high = Weight::from_basis_points(high).unwrap();
        if assign(salt.as_bytes(), &key, low) == Side::Canary {
            prop_assert_eq!(assign(salt.as_bytes(), &key, high), Side::Canary);
        }
        if assign(salt.as_bytes(), &key, high) == Side::Stable {
            prop_assert_eq!(assign(salt.as_bytes(), &key, low), Side::Stable);
        }
    }

    #[test]
    fn bucket_is_in_range(key in proptest::collection::vec(any::<u8>(), 0..600), salt in ".{0,40}") {
        prop_assert!(bucket(salt.as_bytes(), &key) < 10_000);
    }
}
