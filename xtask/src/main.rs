//! `cargo xtask`: project chores (benchmarks, fixtures, deployed smoke tests).
//! Nothing depends on it.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "xtask")]
enum Task {
    /// Print the workspace's crates and what each owns.
    Crates,
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::Crates => {
            for (name, what) in [
                ("tether-domain", "protocol, entities, store and push ports, handlers"),
                ("tether-local", "SQLite store, local gateway, the `tether` binary"),
                ("tether-worker", "the worker binary: relay client and opencode driver"),
                ("tether-functions", "Lambda entry points, DynamoDB store, Management API push"),
            ] {
                println!("{name:18} {what}");
            }
        }
    }
    Ok(())
}
