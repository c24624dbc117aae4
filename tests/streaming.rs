//! Bodies stream through; they are never buffered whole. Its own test binary so that
//! no other test's allocations disturb the RSS figure.

mod support;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;

const SIZE: u64 = 256 * 1024 * 1024;
const MAX_GROWTH: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_and_download_stream_with_bounded_memory() {
    let stable = MockUpstream::start("stable").await;
    let proxy = TestProxy::start(&route_toml("r", stable.addr, stable.addr, 0.0, "")).await;
    let client = client();
    // Warm up pools and allocator before measuring.
    let (status, _, _) = get(&client, &proxy.url("/"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let before = rss_bytes();

    let upload = Request::post(proxy.url("/upload"))
        .body(http_body_util::BodyExt::boxed(Generated::new(SIZE)))
        .unwrap();
    let response = client.request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        SIZE.to_string().as_bytes(),
        "upstream received every byte"
    );
    let after_upload = rss_bytes();

    let response = client
        .request(
            Request::get(proxy.url(&format!("/download/{SIZE}")))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);
    let after_download = rss_bytes();

    let growth = after_upload.max(after_download).saturating_sub(before);
    println!(
        "rss before {} MiB, after upload {} MiB, after download {} MiB",
        before >> 20,
        after_upload >> 20,
        after_download >> 20
    );
    assert!(growth < MAX_GROWTH, "RSS grew by {} MiB", growth >> 20);
}
