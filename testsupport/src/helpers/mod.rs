//! What every scenario needs, one concern a file:
//!
//! - this file: the bounds on waits, the handling [`Mode`] and [`run`];
//! - [`host`]: the [`Host`] a suite runs against, and its commands;
//! - [`server`]: a `tether serve` (or `tether up`) process on a fresh data
//!   directory, and users made with `tether user add`;
//! - [`http`]: a small HTTP client for `/api/ticket` and `/api/pair`;
//! - [`upgrade`]: opening a websocket, and what a refused upgrade says;
//! - [`reply`]: replies matched to their requests by id;
//! - [`socket`]: one websocket connection: requests, replies, pushed events;
//! - [`user`] and [`worker`]: the clients of both roles;
//! - [`flows`]: what several scenarios do the same way (pairing, a ready
//!   session, a whole exchange).
//!
//! Every wait is bounded by [`WAIT`] and fails with a message naming what was
//! awaited and what arrived meanwhile.

use std::time::Duration;

mod flows;
mod host;
mod http;
mod reply;
mod server;
mod socket;
mod upgrade;
mod user;
mod worker;

pub use flows::*;
pub use host::*;
pub use http::*;
pub use reply::*;
pub use server::*;
pub use socket::*;
pub use upgrade::*;
pub use user::*;
pub use worker::*;

/// The bound on every single wait of the suite.
pub const WAIT: Duration = Duration::from_secs(30);
/// The bound on a whole scenario.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// How the server handles the frames of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One after another, in order (the default).
    Sequential,
    /// `--concurrent-frames`: each in its own task, so replies and effects may reorder.
    Concurrent,
}

/// Wall-clock milliseconds since the Unix epoch, as the server counts time.
pub fn now_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970");
    i64::try_from(since.as_millis()).expect("a sane clock")
}

/// Runs a scenario within [`SCENARIO_LIMIT`].
pub async fn run<F: std::future::Future<Output = ()>>(name: &str, mode: Mode, scenario: F) {
    if tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .is_err()
    {
        panic!("scenario {name} ({mode:?}) did not finish within {SCENARIO_LIMIT:?}");
    }
}
