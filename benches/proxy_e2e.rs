//! One request through the whole proxy, in process: a hyper client → canary-proxy
//! (sticky split, metrics, budget) → a hyper upstream, all on 127.0.0.1 over real
//! sockets, keep-alive on both hops. Compare with `direct` (client → upstream) to see
//! what the proxy adds.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use canary_proxy::app::App;
use canary_proxy::config::parse_str;

async fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok\n"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn e2e(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (proxy, direct) = runtime.block_on(async {
        let up = upstream().await;
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"bench\"\nstable = {{ endpoints = [\"{up}\"] }}\ncanary = {{ endpoints = [\"{up}\"] }}\ncanary_weight = 10\nsticky = [\"header:x-user-id\"]\n"
        );
        let app = App::bind(parse_str(&toml, Path::new("bench.toml")).unwrap()).await.unwrap();
        let addr = app.local_addr().unwrap();
        tokio::spawn(app.serve(std::future::pending()));
        (addr, up)
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let get = |addr: SocketAddr| {
        let client = client.clone();
        async move {
            let req = Request::get(format!("http://{addr}/"))
                .header("x-user-id", "user-42")
                .body(Empty::new())
                .unwrap();
            let response = client.request(req).await.unwrap();
            assert!(response.status().is_success());
            response.into_body().collect().await.unwrap();
        }
    };
    c.bench_function("e2e/direct", |b| b.to_async(&runtime).iter(|| get(direct)));
    c.bench_function("e2e/through_proxy", |b| {
        b.to_async(&runtime).iter(|| get(proxy))
    });
}

criterion_group!(benches, e2e);
criterion_main!(benches);
