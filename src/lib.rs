//! canary-proxy: a reverse proxy that splits each route's traffic between a stable and a
//! canary upstream by sticky hash and weight.
//!
//! # Layout
//! - `config`: the TOML file → validated domain types (`Config`), every error located.
//! - `routing`: a `Snapshot` per config generation; pure route lookup (`table`) and
//!   sticky split (`split`).
//! - `upstream`: keep-alive pools (`pool`, HTTP/1.1; `h2`, one multiplexed HTTP/2
//!   connection per endpoint), the request body sent upstream (`body`: streamed, or
//!   held for a retry), endpoint selection with passive health, the shield's retry
//!   budget (`retry_budget`).
//! - `tls`: rustls server and client configs (ring provider, PEM via pki-types).
//! - `proxy`: the data path as named phases: accept (`server`), `request_id`, head
//!   checks (`head`), header rewriting (`rewrite`), `upgrade`/tunnel, the forward
//!   itself (`forward`: route, side, the shield's retry on stable), one attempt per
//!   side with endpoint failover (`attempt`), the metered response (`body`), `rescue`.
//! - `error`: the data path's leaf errors, mapped to statuses in `proxy::rescue` only,
//!   and `classify`, the one judge of an exchange's outcome (failure, head, trailers).
//! - `rollout`: the canary's runtime: the window (`window`), the pure budget verdict
//!   and state machine (`machine`), persisted decisions (`store`), the driver.
//! - `telemetry`: metric names, buckets and pre-resolved handles.
//! - `access_log`: `[log] access`, one JSON line per request, written by its own
//!   thread off the request path; the side header.
//! - `events`: decision events (log, `/api/v1/events`, webhook); `notify`: the webhook.
//! - `history`: the last 15 minutes of every route, sampled every 5 s
//!   (`/api/v1/history`, the dashboard's charts).
//! - `reload`: watch the config (directory + SIGHUP), validate whole, swap.
//! - `admin`: the admin listener (metrics, health, API, commands).
//! - `demo`: the self-contained `demo` command.
//! - `client`: the admin API's command-line client (`status`, `rollback`, …).
//! - `app`: wiring for the binary: load, bind, serve until a signal, drain.

pub mod access_log;
pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod events;
pub mod fleet;
pub mod history;
pub mod notify;
pub mod proxy;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod telemetry;
pub mod tls;
pub mod upstream;
