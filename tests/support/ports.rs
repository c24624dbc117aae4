//! Addresses for tests: a free port, and one that refuses connections.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A free ephemeral port, released for the caller to listen on.
pub async fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A port nobody listens on, for the rest of the test process: a socket bound to it
/// (without SO_REUSEADDR) and never listening, so connections are refused and no other
/// test's listener can take the port (a released port could be, by a test running in
/// parallel, and answer).
pub async fn refused_addr() -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    // Held until the test process exits.
    std::mem::forget(socket);
    addr
}
