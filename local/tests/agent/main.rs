//! The worker with real opencode, end to end (`tether_testsupport::agent`):
//! a scripted fake LLM (the only stand-in), real `opencode serve`, the real
//! worker and host, and a browser-like client speaking the protocol over
//! real websockets. The AWS-shaped tier runs the same scenarios.

use tether_testsupport::helpers::Host;

/// `tether up` and `tether serve`.
const HOST: Host = Host::local(env!("CARGO_BIN_EXE_tether"));

mod scenarios {
    tether_testsupport::agent_scenarios!(crate::HOST);
}
