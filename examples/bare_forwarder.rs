//! Reference point for benchmarks: the thinnest hyper 1.x forwarder (hyper-util auto
//! server + stock pooled client, fixed upstream, no features). compare.sh runs it as a
//! peer so the cost of canary-proxy's features can be told apart from the stack's.
//!
//! `cargo build --release --example bare_forwarder`
//! `compare.sh -p bare=target/release/examples/bare_forwarder -- target/release/canary-proxy run -c config/bench.toml`

use std::convert::Infallible;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080")
        .await
        .unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    *req.uri_mut() = format!("http://127.0.0.1:9001{pq}").parse().unwrap();
                    let resp = client.request(req).await.unwrap();
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
