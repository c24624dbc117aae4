//! Per-request pure pieces: sticky key extraction + assignment, and route lookup.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};

use canary_proxy::config::{StickySource, Weight};
use canary_proxy::routing::split::{assign, with_sticky_key};
use canary_proxy::routing::table::RouteTable;

fn split(c: &mut Criterion) {
    let weight = Weight::from_percent(10.0).unwrap();
    c.bench_function("assign/short_key", |b| {
        b.iter(|| assign(black_box(b"checkout"), black_box(b"user-123456"), weight))
    });

    let sources = [
        StickySource::Header(HeaderName::from_static("x-user-id")),
        StickySource::Cookie("session".into()),
        StickySource::ClientIp,
    ];
    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    let mut with_header = HeaderMap::new();
    with_header.insert("x-user-id", HeaderValue::from_static("user-123456"));
    with_header.insert("accept", HeaderValue::from_static("*/*"));
    c.bench_function("sticky+assign/header", |b| {
        b.iter(|| {
            with_sticky_key(&sources, black_box(&with_header), peer, |k| {
                assign(b"checkout", k, weight)
            })
        })
    });
    let mut with_cookie = HeaderMap::new();
    with_cookie.insert(
        COOKIE,
        HeaderValue::from_static("theme=dark; session=abcdef0123; lang=en"),
    );
    c.bench_function("sticky+assign/cookie", |b| {
        b.iter(|| {
            with_sticky_key(&sources, black_box(&with_cookie), peer, |k| {
                assign(b"checkout", k, weight)
            })
        })
    });
    let empty = HeaderMap::new();
    c.bench_function("sticky+assign/client_ip", |b| {
        b.iter(|| {
            with_sticky_key(&sources, black_box(&empty), peer, |k| {
                assign(b"checkout", k, weight)
            })
        })
    });
}

fn lookup(c: &mut Criterion) {
    let prefixes: Vec<String> = (0..20).map(|i| format!("/service-{i}/api")).collect();
    let hosts: Vec<String> = (0..20).map(|i| format!("svc{i}.example.com")).collect();
    let mut routes: Vec<(Option<&str>, &str)> =
        prefixes.iter().map(|p| (None, p.as_str())).collect();
    routes.extend(hosts.iter().map(|h| (Some(h.as_str()), "/")));
    routes.push((None, "/"));
    let table = RouteTable::build(routes);
    c.bench_function("route/host_match", |b| {
        b.iter(|| table.find(black_box(Some("svc7.example.com:8080")), black_box("/x/y")))
    });
    c.bench_function("route/prefix_match_41_routes", |b| {
        b.iter(|| {
            table.find(
                black_box(Some("other.example.com")),
                black_box("/service-13/api/v1"),
            )
        })
    });
}

criterion_group!(benches, split, lookup);
criterion_main!(benches);
