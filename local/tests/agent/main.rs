//! The worker with real opencode, end to end: a scripted fake LLM (the only
//! stand-in), real `opencode serve`, the real worker and host, and a
//! browser-like client speaking the protocol over real websockets.

#[allow(dead_code, unused_imports)]
#[path = "../e2e/helpers/mod.rs"]
mod helpers;
mod scenarios;
mod support;

/// The binary the scenarios run (`tether-testbed` on the AWS-shaped tier).
const TETHER_BIN: &str = env!("CARGO_BIN_EXE_tether");

/// Nothing to set up before a scenario on the local host.
fn before_scenario() {}
