//! `sticky = ["forwarded_for:N"]`: the client address as the Nth trusted proxy in front
//! saw it, from `X-Forwarded-For` (or `Forwarded: for=` when that is absent).

mod support;

use std::net::IpAddr;
use std::num::NonZeroU8;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use canary_proxy::config::StickySource;
use canary_proxy::routing::split::{bucket, forwarded_for, with_sticky_key};
use support::{client, get, route_toml, MockUpstream, TestProxy};

/// Header lines, in order: (name, value).
type Headers<'a> = &'a [(&'static str, &'static str)];

fn headers(list: Headers<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in list {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers
}

#[test]
fn the_nth_address_from_the_end_is_the_key() {
    const XFF: &str = "x-forwarded-for";
    const FWD: &str = "forwarded";
    #[rustfmt::skip]
    let cases: &[(Headers<'_>, u8, Option<&str>)] = &[
        // One load balancer in front: the address it appended.
        (&[(XFF, "203.0.113.7")], 1, Some("203.0.113.7")),
        (&[(XFF, "198.51.100.1, 203.0.113.7")], 1, Some("203.0.113.7")),
        // Two trusted hops (CDN, then LB): the address the CDN saw.
        (&[(XFF, "198.51.100.1, 203.0.113.7")], 2, Some("198.51.100.1")),
        (&[(XFF, "spoofed, 198.51.100.1, 203.0.113.7")], 2, Some("198.51.100.1")),
        // Several header lines are one list, in order.
        (&[(XFF, "198.51.100.1"), (XFF, "203.0.113.7")], 1, Some("203.0.113.7")),
        (&[(XFF, "198.51.100.1"), (XFF, "203.0.113.7")], 2, Some("198.51.100.1")),
        // Whitespace, empty elements, ports and brackets.
        (&[(XFF, "  198.51.100.1 ,, 203.0.113.7 ,")], 2, Some("198.51.100.1")),
        (&[(XFF, "203.0.113.7:4711")], 1, Some("203.0.113.7")),
        (&[(XFF, "2001:db8::7")], 1, Some("2001:db8::7")),
        (&[(XFF, "[2001:db8::7]")], 1, Some("2001:db8::7")),
        (&[(XFF, "[2001:db8::7]:4711")], 1, Some("2001:db8::7")),
        // IPv6 in canonical text form, as `client_ip` would give it.
        (&[(XFF, "2001:0db8:0000::0007")], 1, Some("2001:db8::7")),
        // Too short, malformed, unknown: no key from this source.
        (&[(XFF, "203.0.113.7")], 2, None),
        (&[(XFF, "")], 1, None),
        (&[(XFF, "not-an-ip")], 1, None),
        (&[(XFF, "unknown")], 1, None),
        (&[(XFF, "203.0.113.7, garbage")], 1, None),
        (&[(XFF, "203.0.113.999")], 1, None),
        // Garbage a client put before the trusted entries does not matter.
        (&[(XFF, "<script>, 203.0.113.7")], 1, Some("203.0.113.7")),
        // Forwarded (RFC 7239), used when X-Forwarded-For is absent.
        (&[(FWD, "for=203.0.113.7")], 1, Some("203.0.113.7")),
        (&[(FWD, "for=198.51.100.1;proto=https, for=203.0.113.7;proto=http")], 2, Some("198.51.100.1")),
        (&[(FWD, "proto=http;For=\"203.0.113.7:80\";by=10.0.0.1")], 1, Some("203.0.113.7")),
        (&[(FWD, "for=\"[2001:db8::7]:4711\"")], 1, Some("2001:db8::7")),
        (&[(FWD, "for=\"[2001:db8::7]\""), (FWD, "for=203.0.113.7")], 2, Some("2001:db8::7")),
        // A quoted comma does not split the list.
        (&[(FWD, "for=198.51.100.1;x=\"a,b\", for=203.0.113.7")], 2, Some("198.51.100.1")),
        (&[(FWD, "for=_hidden")], 1, None),
        (&[(FWD, "for=unknown")], 1, None),
        (&[(FWD, "proto=https")], 1, None),
        (&[(FWD, "for=203.0.113.7")], 2, None),
        // X-Forwarded-For, when present, is the one read.
        (&[(XFF, "203.0.113.7"), (FWD, "for=198.51.100.1")], 1, Some("203.0.113.7")),
        (&[(XFF, "garbage"), (FWD, "for=198.51.100.1")], 1, None),
        (&[], 1, None),
    ];
    for (list, hops, expected) in cases {
        let got = forwarded_for(&headers(list), *hops);
        let expected: Option<IpAddr> = expected.map(|ip| ip.parse().unwrap());
        assert_eq!(got, expected, "{list:?} hops={hops}");
    }
}

#[test]
fn a_missing_or_malformed_list_falls_through_to_the_next_source() {
    let peer: IpAddr = "10.0.0.9".parse().unwrap();
    let hops = |n| StickySource::ForwardedFor(NonZeroU8::new(n).unwrap());
    let sources = [
        hops(1),
        StickySource::Header(HeaderName::from_static("x-user-id")),
        StickySource::ClientIp,
    ];
    let key = |list: Headers<'_>| {
        with_sticky_key(&sources, &headers(list), peer, |k| {
            String::from_utf8(k.to_vec()).unwrap()
        })
    };
    assert_eq!(key(&[("x-forwarded-for", "203.0.113.7")]), "203.0.113.7");
    assert_eq!(
        key(&[("x-forwarded-for", "garbage"), ("x-user-id", "u1")]),
        "u1"
    );
    assert_eq!(key(&[("x-user-id", "u1")]), "u1");
    assert_eq!(key(&[]), "10.0.0.9");
    // Same key as `client_ip` would give for that address: moving the proxy behind a
    // load balancer keeps every user on their side.
    let v6 = [("x-forwarded-for", "2001:db8:0:0::7")];
    assert_eq!(key(&v6), "2001:db8::7");
    let deep = [hops(2), StickySource::ClientIp];
    let got = with_sticky_key(
        &deep,
        &headers(&[("x-forwarded-for", "203.0.113.7")]),
        peer,
        |k| k.to_vec(),
    );
    assert_eq!(got, b"10.0.0.9", "too short: the peer");
}

/// Two addresses that land on different sides of route `app` at 50 %.
fn one_per_side() -> (String, String) {
    let mut canary = None;
    let mut stable = None;
    for i in 1..=254 {
        let ip = format!("203.0.113.{i}");
        if bucket(b"app", ip.as_bytes()) < 5000 {
            canary.get_or_insert(ip);
        } else {
            stable.get_or_insert(ip);
        }
        if canary.is_some() && stable.is_some() {
            break;
        }
    }
    (canary.unwrap(), stable.unwrap())
}

#[tokio::test]
async fn clients_behind_a_load_balancer_land_on_their_own_sides() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&route_toml(
        "app",
        stable.addr,
        canary.addr,
        50.0,
        "sticky = [\"forwarded_for:1\"]",
    ))
    .await;
    let (to_canary, to_stable) = one_per_side();
    let client = client();
    // Every request comes from 127.0.0.1 (the "load balancer"); only the address it
    // appended tells the clients apart. What a client put first is ignored.
    for round in 0..10 {
        for (ip, side) in [(&to_canary, "canary"), (&to_stable, "stable")] {
            let xff = format!("10.{round}.0.1, {ip}");
            let (status, headers, body) =
                get(&client, &proxy.url("/"), &[("x-forwarded-for", &xff)]).await;
            assert_eq!(status, 200);
            assert_eq!(body, side, "{xff}");
            assert_eq!(headers["x-served-by"], side);
        }
        // The same clients through RFC 7239 `Forwarded`.
        for (ip, side) in [(&to_canary, "canary"), (&to_stable, "stable")] {
            let forwarded = format!("for=\"{ip}:5{round}000\";proto=https");
            let (_, _, body) = get(&client, &proxy.url("/"), &[("forwarded", &forwarded)]).await;
            assert_eq!(body, side, "{forwarded}");
        }
    }
    assert_eq!(canary.requests(), 20);
    assert_eq!(stable.requests(), 20);
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_usable_list_the_next_source_decides() {
    let stable = MockUpstream::start("stable").await;
    let canary = MockUpstream::start("canary").await;
    let proxy = TestProxy::start(&route_toml(
        "app",
        stable.addr,
        canary.addr,
        50.0,
        "sticky = [\"forwarded_for:2\", \"header:x-user-id\"]",
    ))
    .await;
    let (to_canary, to_stable) = one_per_side();
    let client = client();
    // One entry where two trusted hops are expected: too short, so `x-user-id`
    // decides, and it names the other side's address.
    for (ip, user, side) in [
        (&to_canary, &to_stable, "stable"),
        (&to_stable, &to_canary, "canary"),
    ] {
        let (_, _, body) = get(
            &client,
            &proxy.url("/"),
            &[("x-forwarded-for", ip), ("x-user-id", user)],
        )
        .await;
        assert_eq!(body, side);
        // Long enough: the second entry from the end decides.
        let xff = format!("{user}, 192.0.2.1");
        let (_, _, body) = get(
            &client,
            &proxy.url("/"),
            &[("x-forwarded-for", &xff), ("x-user-id", ip)],
        )
        .await;
        assert_eq!(body, side);
    }
    proxy.stop().await;
}
