//! canary-proxy: a reverse proxy that splits each route's traffic between a stable and a
//! canary upstream by sticky hash and weight.
//!
//! # Layout
//! Imports run one way, from the ground floor up (no module imports one above it, no
//! circles):
//! 1. `telemetry` (metric names, buckets, the recorder, closed label enums; imports
//!    nothing of the domain), `config`, `events`, `error`, `tls`.
//! 2. `routing` (pure: route lookup `table`, sticky `split`, `decide` with the weight
//!    as a value, the `EffectiveWeight` cell, the data path's meters), `upstream`.
//! 3. `rollout` (the judgement: writes the `EffectiveWeight` cell).
//! 4. `snapshot` (a config generation: joins each route's split parameters, runtime
//!    and upstreams), then `proxy`, `fleet`, `history`, `reload`, `admin`, `app`.
//!
//! - `config`: the TOML file → validated domain types (`Config`), every error located.
//! - `routing`: pure route lookup (`table`) and sticky split (`split`), and `decide`:
//!   rollback > override > cohort > hash, on values.
//! - `snapshot`: a `Snapshot` per config generation, built once, read by requests
//!   without a lock.
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
//! - `rollout`: the canary's runtime: the judge (`judge`: the window `window` and the
//!   sequential tests `sequential`, taking outcomes or counts), the pure state machine
//!   (`machine`), persisted decisions (`store`), the route's meters, the driver.
//! - `fleet`: many instances, one judgement, on etcd (SPEC §10); the client task is
//!   behind the `fleet` cargo feature.
//! - `telemetry`: metric names, buckets, descriptions, the recorder, closed label enums.
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
pub mod listen;
pub mod notify;
pub mod proxy;
pub mod publish;
pub mod reload;
pub mod rollout;
pub mod routing;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod upstream;
