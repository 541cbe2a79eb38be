//! The AWS-shaped end-to-end tier: the scenarios of
//! `tether_testsupport::e2e`, unchanged, against the real Lambda binaries.
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
//! The worker scenarios of `tether_testsupport::agent` (a real worker, real
//! opencode on the scripted fake LLM) run here too, unchanged, as the module
//! `agent`; and the security suite's revocation and exposure scenarios.
//!
//! `cargo test -p tether-testbed --test e2e_lambda` (`scripts/test-aws`
//! runs it; it needs moto and cargo-lambda, which that script installs).

use tether_testsupport::helpers::Host;

mod tier;

/// `tether-testbed`, after the tier is up. It serves no UI: on AWS,
/// CloudFront serves it from S3.
const HOST: Host = Host {
    bin: env!("CARGO_BIN_EXE_tether-testbed"),
    serves_ui: false,
    set_up: tier::ensure,
};

tether_testsupport::e2e_scenarios!(crate::HOST);

/// The security suite's revocation scenarios (`tether-testbed user reset`
/// and `remove` close sockets with `DeleteConnection` here), unchanged.
mod revocation {
    tether_testsupport::revocation_scenarios!(crate::HOST);
}

/// And its exposure scenarios: nothing but `/api/*` and `/ws` answers on
/// the tier's public listener (its Management API listens apart), and
/// connection ids stay out of the host's logs above debug.
mod exposure {
    tether_testsupport::exposure_scenarios!(crate::HOST);
}

/// The worker scenarios with real opencode: `tether up` and `tether serve`
/// run on the Lambda tier here.
mod agent {
    tether_testsupport::agent_scenarios!(crate::HOST);
}
