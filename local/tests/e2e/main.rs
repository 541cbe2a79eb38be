//! End-to-end tests: `tether serve` as a process, real websockets and HTTP.
//!
//! Every scenario of `tether_testsupport::e2e` runs twice, each time on its
//! own server process: once with the frames of a connection handled in
//! order, once with `--concurrent-frames` (handled concurrently, so replies
//! and effects may reorder, as with API Gateway and Lambda). The AWS-shaped
//! tier (`local/testbed/tests/e2e_lambda`) runs the same list.

use tether_testsupport::helpers::Host;

/// `tether serve`.
const HOST: Host = Host::local(env!("CARGO_BIN_EXE_tether"));

tether_testsupport::e2e_scenarios!(crate::HOST);
