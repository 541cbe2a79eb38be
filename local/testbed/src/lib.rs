//! # tether-testbed
//!
//! The AWS-shaped test bed. Not shipped: nothing in the `tether` binary
//! depends on it, and the product's router has none of its routes.
//!
//! - [`lambda`]: the local gateway acting as API Gateway in front of the
//!   real Lambda functions (`tether-functions`) under `cargo lambda watch`,
//!   with DynamoDB on a local server (moto in the tests).
//! - [`management`]: API Gateway's Management API over the gateway's hub,
//!   which the functions push through; served on a loopback listener of its
//!   own.
//!
//! The `tether-testbed` binary takes the `tether` command line unchanged
//! (`serve`, `up`, `user`, `worker`) and runs it on this tier; the settings
//! of the tier come from the file named by `LAMBDA_TIER_CONFIG` (see
//! [`lambda::emulator::TierConfig`]). The end-to-end scenarios of
//! `local/tests/` run against it unchanged (`tests/e2e_lambda`).

pub mod lambda;
pub mod management;
