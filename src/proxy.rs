//! The data path. A request flows `server` (accept, h1/h2, limits, drain; plain
//! HTTP/1.1 connections swept by `deadline` for their header timeout) →
//! `forward::proxy`, which runs the phases in order: `request_id`, `head` (checks),
//! route and split, `rewrite` (the head for the upstream), `attempt::send` (one side:
//! endpoint, authority, send; a failed canary attempt may go to stable once,
//! `forward::shielded`), then `upgrade` for a `101`, or the response streamed back
//! through `body`, whose meter settles the outcome; `rescue` answers any error on the
//! way. Every outcome is judged by `error::classify`.

pub mod attempt;
pub mod body;
pub mod deadline;
pub mod forward;
pub mod head;
pub mod request_id;
pub mod rescue;
pub mod rewrite;
pub mod server;
pub mod upgrade;

pub use forward::DownstreamBody;
pub use rewrite::ConnInfo;
pub use server::serve;
