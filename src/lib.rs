//! canary-proxy: a reverse proxy that splits each route's traffic between a stable and a
//! canary upstream by sticky hash and weight.
//!
//! # Layout
//! - `config`: the TOML file → validated domain types (`Config`), every error located.
//! - `routing`: a `Snapshot` per config generation; pure route lookup (`table`) and
//!   sticky split (`split`).
//! - `upstream`: pooled keep-alive clients, endpoint selection.
//! - `proxy`: the data path (accept, head checks, forward, stream, rescue).
//! - `error`: the data path's leaf errors, mapped to statuses in `proxy::rescue` only.
//! - `app`: wiring for the binary: load, bind, serve until a signal, drain.

pub mod app;
pub mod config;
pub mod error;
pub mod proxy;
pub mod routing;
pub mod upstream;
