//! # tether-domain
//!
//! The one domain both Tether hosts run: the local embedded host
//! (`tether-local`) and the AWS host (`tether-functions`).
//!
//! - [`protocol`]: every JSON frame on the websocket, versioned.
//! - [`ids`]: identifier newtypes, parsed at the edge.
//! - [`model`]: entities and their state machines.
//! - [`auth`]: secrets (stored hashed), tickets and pairing codes.
//! - [`store`] and [`push`]: the two ports a host provides.
//! - [`handlers`]: `$connect`, `$disconnect`, one function per action, and
//!   the two HTTP endpoints (ticket, pairing). They keep no state between
//!   calls: everything lives in the store, because the AWS host runs each
//!   frame as its own Lambda invocation, possibly concurrently and out of order.
//! - [`edge`]: what a host does between its request and the domain (bearer
//!   headers, connection ids, the HTTP routes, error bodies, the clock),
//!   written once, so the hosts only translate event shapes.
//! - [`error`]: the protocol's stable error codes.
//!
//! No AWS, SQL or HTTP crate is a dependency of this crate.

pub mod auth;
pub mod edge;
pub mod error;
pub mod handlers;
pub mod ids;
pub mod model;
pub mod protocol;
pub mod push;
pub mod store;
#[cfg(any(test, feature = "testkit"))]
pub mod fakes;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{ApiError, ErrorCode};
pub use handlers::{Config, Domain};
