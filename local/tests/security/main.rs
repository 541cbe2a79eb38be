//! The security suite: what an attacker on the network, another user or a
//! careless deployment would try, against a real `tether serve` process.
//! One module per concern of `docs/SECURITY.md`:
//!
//! - [`exposure`]: nothing but `/`, the UI's files, `/api/*` and `/ws` is
//!   served; no route reaches a connection; connection ids stay out of the
//!   logs at `info`.
//! - [`files`]: the data directory and the database are private; the page's
//!   content security policy talks to its own origin only.

#[allow(dead_code, unused_imports)]
#[path = "../e2e/helpers.rs"]
mod helpers;

mod exposure;
mod files;
mod raw_http;

/// The binary the suite runs.
const TETHER_BIN: &str = env!("CARGO_BIN_EXE_tether");
