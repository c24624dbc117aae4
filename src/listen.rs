//! Binding listeners: the traffic listener, the admin listener, and the ones a reload
//! binds before it swaps (ground floor: no domain imports).

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// Pending connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). std's and mio's 128 drops SYNs under a connection burst, and
/// a dropped SYN costs the client a one-second retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with SO_REUSEADDR and a [`LISTEN_BACKLOG`]-deep accept queue.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
