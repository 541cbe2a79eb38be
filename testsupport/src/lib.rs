//! # tether-testsupport
//!
//! What the suites that run a host as a process share, whichever host it
//! is: `tether` (the local host's `tests/e2e`, `tests/security` and
//! `tests/agent`) or `tether-testbed` (the AWS-shaped tier's
//! `tests/e2e_lambda`, which runs the same scenarios against the real
//! Lambda functions). Not shipped: only tests and `xtask` depend on it.
//!
//! - [`helpers`]: the [`Host`](helpers::Host) a suite runs against, a host
//!   process on a fresh data directory, HTTP and websocket clients for both
//!   roles, and flows several scenarios share; one concern a file.
//! - [`e2e`]: the protocol scenarios, each run once per handling mode.
//! - [`security`]: what the host serves to anyone ([`security::exposure`]),
//!   revocation ending access at once ([`security::revocation`]), and a raw
//!   HTTP client ([`security::raw_http`]).
//! - [`agent`]: a real worker driving real opencode on the scripted fake
//!   LLM.
//! - [`moto`]: moto's DynamoDB server for a test process (the functions'
//!   tests, the test bed, `cargo xtask lambda-init`).
//!
//! A test binary is a thin `main.rs`: it names its host and lists the
//! scenarios with this crate's macros ([`e2e_scenarios!`],
//! [`exposure_scenarios!`], [`revocation_scenarios!`],
//! [`agent_scenarios!`]), one `#[tokio::test]` per scenario.

pub mod agent;
pub mod e2e;
pub mod helpers;
pub mod moto;
pub mod security;
