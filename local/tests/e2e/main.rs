//! End-to-end tests: `tether serve` as a process, real websockets and HTTP.
//!
//! Every scenario runs twice, each time on its own server process: once with
//! the frames of a connection handled in order, once with
//! `--concurrent-frames` (handled concurrently, so replies and effects may
//! reorder, as with API Gateway and Lambda).

mod bad_input;
mod chat;
mod helpers;
mod isolation;
mod pairing;
mod resume;

/// The binary the scenarios run (`tether-testbed` on the AWS-shaped tier).
const TETHER_BIN: &str = env!("CARGO_BIN_EXE_tether");

/// Nothing to set up before a scenario against `tether serve`.
fn before_scenario() {}

include!("scenarios.in.rs");
