//! The security suite: what an attacker on the network, another user or a
//! careless deployment would try, against a real `tether serve` process.
//! One module per concern of `docs/SECURITY.md`:
//!
//! - `exposure` (in `tether_testsupport::security`, which the AWS-shaped
//!   tier runs too): nothing but `/`, the UI's files, `/api/*` and `/ws` is
//!   served; no route reaches a connection; connection ids stay out of the
//!   logs at `info`.
//! - [`bounds`]: a watcher that stops reading is closed (4008) while the
//!   host's memory stays bounded; half-open connections are closed within
//!   the header timeout.
//! - [`caps`]: open websockets per user, per worker (one while pending) and
//!   per source address, a user's live sessions and messages waiting for an
//!   answer are capped, each refusal with its own code and no effect.
//! - [`files`]: the data directory and the database are private; the page's
//!   content security policy talks to its own origin only.
//! - [`pairing`]: pairing is bound to whoever approves it: a real worker
//!   prints (and keeps) its approver; another user can neither reject nor
//!   revoke it; code guessing is rate-limited per user and pending workers
//!   capped per address; a headless worker pairs once with a token.
//! - `revocation` (shared likewise): `tether user reset` and `tether user
//!   remove` close the user's open websockets (and the removed user's
//!   workers') within a second, and the old secret's tickets are refused.
//! - [`tls`]: HTTPS and WSS with a certificate the test makes, reloaded when
//!   it changes; plain HTTP refused beyond loopback; the worker's
//!   `--ca-cert` and its refusal of plain HTTP to a remote host.

use tether_testsupport::helpers::Host;

mod bounds;
mod caps;
mod files;
mod pairing;
mod tls;

/// The binary the suite runs.
const TETHER_BIN: &str = env!("CARGO_BIN_EXE_tether");

/// `tether serve` (on the Lambda tier, CloudFront would serve the UI).
const HOST: Host = Host::local(TETHER_BIN);

mod exposure {
    tether_testsupport::exposure_scenarios!(crate::HOST);
}

mod revocation {
    tether_testsupport::revocation_scenarios!(crate::HOST);
}
