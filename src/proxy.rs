//! The data path. A request flows
//! `server` (accept, h1/h2, limits, drain) → `forward::proxy` (head checks, route,
//! split, rewrite) → `attempt::send` (one side: endpoint, authority, send; a failed
//! canary attempt may go to stable once, `forward::shielded`) → the response streamed
//! back through `body` → `rescue` for any error on the way.

pub mod attempt;
pub mod body;
pub mod forward;
pub mod rescue;
pub mod server;

pub use forward::ConnInfo;
pub use server::{listen, serve};
