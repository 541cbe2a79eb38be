//! The AWS-shaped end-to-end tier: the scenarios of `tests/e2e/`, unchanged,
//! against the real Lambda binaries.
//!
//! Every `tether serve` the scenarios start runs, through the hidden
//! `--lambda-tier` settings that [`tier`] hands it (`LAMBDA_TIER_CONFIG`),
//! as API Gateway in front of `tether-functions` under `cargo lambda watch`
//! (several instances per function, so a connection's frames run in
//! separate processes and finish in any order, as on AWS), with DynamoDB on
//! moto; `tether user add` writes to that host's table. The functions push
//! through the gateway's Management API. Each scenario runs twice, with the
//! gateway handling a connection's frames in order and concurrently.
//!
//! The worker scenarios of `tests/agent/` (a real worker, real opencode on
//! the scripted fake LLM) run here too, unchanged, as the module `agent`.
//!
//! Built only with the `lambda` feature: `cargo test -p tether-local
//! --features lambda --test e2e_lambda` (`scripts/test-aws` runs it).

#![cfg(feature = "lambda")]

#[allow(dead_code, unused_imports)]
#[path = "../e2e/helpers.rs"]
mod helpers;

#[path = "../e2e/bad_input.rs"]
mod bad_input;
#[path = "../e2e/chat.rs"]
mod chat;
#[path = "../e2e/isolation.rs"]
mod isolation;
#[path = "../e2e/pairing.rs"]
mod pairing;
#[path = "../e2e/resume.rs"]
mod resume;

#[path = "../../../functions/tests/support/moto.rs"]
mod moto;
mod tier;

/// The worker scenarios with real opencode (`tests/agent/`), unchanged:
/// `tether up` and `tether serve` run on the Lambda tier here.
#[path = "../agent/scenarios.rs"]
mod agent;
#[path = "../agent/support.rs"]
mod support;

fn before_scenario() {
    tier::ensure();
}

// The scenario list of `tests/e2e/`, each after the tier is up.
include!("../e2e/scenarios.in.rs");
