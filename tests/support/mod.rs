//! Shared end-to-end harness: mock upstreams and an in-process proxy, all on
//! 127.0.0.1:0.
//!
//! Every test binary compiles this module on its own and uses part of it, hence the
//! `dead_code` allowance. Tests name everything as `support::X`: the submodules are
//! re-exported here (`unused_imports`: for the binaries that use only some of them).
#![allow(dead_code, unreachable_pub, unused_imports)]

/// Boxed and generated bodies.
mod body;
/// Clients: hyper's, `get`, raw bytes.
mod client;
/// Free and refusing addresses.
mod ports;
/// Child processes and this process's memory.
mod process;
/// The proxy under test and its admin API.
mod proxy;
/// Mock upstreams.
mod upstream;
/// Polling for a condition.
mod wait;

pub use body::{empty, full, Generated, TestBody};
pub use client::{client, get, h2_client, raw, Client};
pub use ports::{free_addr, refused_addr};
pub use process::{rss_bytes, Killed};
pub use proxy::{route_toml, AdminApi, TestProxy};
pub use upstream::{MockUpstream, Seen};
pub use wait::wait_for;
