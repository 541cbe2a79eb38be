//! The AWS-shaped end-to-end tier: the scenarios of `tests/e2e/`, unchanged,
//! against the real Lambda binaries.
//!
//! Every `tether serve` the scenarios start is a `tether-testbed serve`,
//! which runs, with the settings that [`tier`] hands it
//! (`LAMBDA_TIER_CONFIG`), the gateway as API Gateway in front of
//! `tether-functions` under `cargo lambda watch`
//! (several instances per function, so a connection's frames run in
//! separate processes and finish in any order, as on AWS), with DynamoDB on
//! moto; `tether-testbed user add` writes to that host's table. The functions
//! push through the test bed's Management API (on loopback). Each scenario runs twice, with the
//! gateway handling a connection's frames in order and concurrently.
//!
//! The worker scenarios of `tests/agent/` (a real worker, real opencode on
//! the scripted fake LLM) run here too, unchanged, as the module `agent`.
//!
//! `cargo test -p tether-testbed --test e2e_lambda` (`scripts/test-aws`
//! runs it; it needs moto and cargo-lambda, which that script installs).

#[allow(dead_code, unused_imports)]
#[path = "../../../tests/e2e/helpers/mod.rs"]
mod helpers;

#[path = "../../../tests/e2e/bad_input.rs"]
mod bad_input;
#[path = "../../../tests/e2e/chat.rs"]
mod chat;
#[path = "../../../tests/e2e/isolation.rs"]
mod isolation;
#[path = "../../../tests/e2e/pairing.rs"]
mod pairing;
#[path = "../../../tests/e2e/resume.rs"]
mod resume;

/// The security suite's revocation scenarios (`tether-testbed user reset`
/// and `remove` close sockets with `DeleteConnection` here), unchanged.
#[path = "../../../tests/security/revocation.rs"]
mod revocation;
/// And its exposure scenarios: nothing but `/api/*` and `/ws` answers on
/// the tier's public listener (its Management API listens apart), and
/// connection ids stay out of the host's logs above debug.
#[path = "../../../tests/security/exposure.rs"]
mod exposure;
#[allow(dead_code, reason = "the TLS checks that read headers run locally only")]
#[path = "../../../tests/security/raw_http.rs"]
mod raw_http;

/// The tier serves no UI: on AWS, CloudFront serves it from S3.
const SERVES_UI: bool = false;

#[path = "../../../../functions/tests/support/moto.rs"]
mod moto;
mod tier;

/// The worker scenarios with real opencode (`tests/agent/`), unchanged:
/// `tether up` and `tether serve` run on the Lambda tier here.
#[path = "../../../tests/agent/scenarios.rs"]
mod agent;
#[path = "../../../tests/agent/support.rs"]
mod support;

/// The binary every scenario runs.
const TETHER_BIN: &str = env!("CARGO_BIN_EXE_tether-testbed");

fn before_scenario() {
    tier::ensure();
}

// The scenario list of `tests/e2e/`, each after the tier is up.
include!("../../../tests/e2e/scenarios.in.rs");
