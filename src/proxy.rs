//! The data path. A request flows
//! `server` (accept, h1/h2, limits, drain) → `forward::proxy` (head checks, route,
//! split, rewrite, send, stream back) → `rescue` for any error on the way.

pub mod attempt;
pub mod body;
pub mod forward;
pub mod rescue;
pub mod server;

pub use forward::ConnInfo;
pub use server::{listen, serve};
