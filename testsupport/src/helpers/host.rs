//! The host a suite runs against: which binary, what it serves, what it
//! needs first; and the commands of that binary a scenario runs.

use std::future::Future;
use std::process::Command;

use super::{run, Mode};

/// A host the scenarios run against: `tether` (the local host) or the test
/// bed's `tether-testbed`, which takes the same commands (`serve`, `up`,
/// `user`, `worker`) and runs them against the AWS-shaped tier. A test
/// binary names its host once, as a constant its tests pass on.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    /// The binary (`env!("CARGO_BIN_EXE_…")` of the test's crate).
    pub bin: &'static str,
    /// Whether it serves the web UI (on AWS, CloudFront serves it from S3).
    pub serves_ui: bool,
    /// Run before every scenario (the test bed starts its tier, once per
    /// process; the local host needs nothing).
    pub set_up: fn(),
}

impl Host {
    /// `tether` (the binary's path): it serves the UI and needs nothing set
    /// up first.
    pub const fn local(bin: &'static str) -> Self {
        fn nothing() {}
        Self {
            bin,
            serves_ui: true,
            set_up: nothing,
        }
    }

    /// Sets the host up, then runs a scenario within
    /// [`SCENARIO_LIMIT`](super::SCENARIO_LIMIT).
    pub async fn run<F: Future<Output = ()>>(self, name: &str, mode: Mode, scenario: F) {
        (self.set_up)();
        run(name, mode, scenario).await;
    }

    /// The binary as a command, without the `TETHER_*` variables of this
    /// environment: its settings come from its flags alone.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(self.bin);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(&key);
            }
        }
        cmd
    }
}
