//! A real gRPC client and server (C-core, Debian's `python3-grpcio`) through the proxy
//! with `protocol = "h2"` upstreams: the call works, the server sees the client's
//! authority as `:authority`, and a failing call counts as a gRPC error of its side.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/grpc_echo.py");

/// Debian's Python, where `python3-grpcio` installs, else the one on PATH.
fn python() -> Command {
    let debian = std::path::Path::new("/usr/bin/python3");
    Command::new(if debian.exists() {
        debian.as_os_str()
    } else {
        "python3".as_ref()
    })
}

fn start_server() -> (Killed, u16) {
    let mut child = python()
        .args([SCRIPT, "serve"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 not found");
    let stdout = child.stdout.take().unwrap();
    let server = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| {
        panic!("the gRPC server did not start (apt-get install python3-grpcio; .ci/run does): {line:?}")
    });
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_grpc_client_and_server_through_the_proxy() {
    let (_server, port) = tokio::task::spawn_blocking(start_server).await.unwrap();
    let upstream = format!("127.0.0.1:{port}");
    let proxy = TestProxy::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[route]]\nname = \"grpc\"\nstable = {{ endpoints = [\"{upstream}\"], protocol = \"h2\" }}\ncanary = {{ endpoints = [\"{upstream}\"], protocol = \"h2\" }}\ncanary_weight = 0\n"
    ))
    .await;
    let addr = proxy.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        python()
            .args([SCRIPT, "call", &addr])
            .output()
            .expect("python3 not found")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The client dialled the proxy; that is the authority the server must see.
    assert!(
        stdout.contains(&format!("authority:{}", proxy.addr)),
        "{stdout}"
    );
    assert!(stdout.contains("Fail UNAVAILABLE"), "{stdout}");
    wait_for("the gRPC error to be counted", Duration::from_secs(5), || async {
        proxy
            .metric("canary_proxy_upstream_errors_total{route=\"grpc\",upstream=\"stable\",kind=\"grpc\"}")
            .await
            == 1.0
    })
    .await;
}
