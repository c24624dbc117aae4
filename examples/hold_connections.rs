//! Idle keep-alive connections for memory measurements: opens N connections to ADDR,
//! sends one proxied request on each (distinct x-user-id), reads the response, then
//! holds every connection open and idle for SECONDS.
//!
//! `cargo run --release --example hold_connections -- ADDR N SECONDS`
//! (benches/idle_connections.sh runs it against the proxy and reports RSS.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once.
const BATCH: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(addr), Some(n), Some(seconds)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("usage: hold_connections ADDR N SECONDS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("N is a number");
    let seconds: u64 = seconds.parse().expect("SECONDS is a number");
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for batch in (0..n).collect::<Vec<_>>().chunks(BATCH) {
        let mut tasks = Vec::new();
        for &i in batch {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move { one(&addr, i).await }));
        }
        for task in tasks {
            match task.await {
                Ok(Ok(stream)) => held.push(stream),
                _ => failed += 1,
            }
        }
    }
    println!("holding {} connections ({failed} failed)", held.len());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
}

/// Connects, makes one request, reads the whole (small) response, returns the socket.
async fn one(addr: &str, i: usize) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET / HTTP/1.1\r\nhost: bench\r\nx-user-id: user-{i}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return Ok(stream);
            }
        }
    }
}
