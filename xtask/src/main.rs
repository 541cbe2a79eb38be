//! `cargo xtask`: project chores. Nothing depends on it.
//!
//! - `cargo xtask bench`: streaming figures of the whole product (see
//!   `docs/PERFORMANCE.md`).
//! - `cargo xtask lambda-init`: the Lambda functions' start-up times under
//!   the Lambda emulator (see `infra/COST.md`).
//! - `cargo xtask load`: one host under many fake workers and watchers
//!   (see `docs/PERFORMANCE.md`).
//! - `cargo xtask crates`: the workspace's crates and what each owns.

mod bench;
mod lambda_init;
mod load;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "xtask")]
enum Task {
    /// Print the workspace's crates and what each owns.
    Crates,
    /// Measure frames, store writes and latency per streamed answer, with
    /// real opencode against the scripted fake LLM.
    Bench(bench::Args),
    /// Measure the Lambda functions' cold and warm starts under `cargo
    /// lambda watch`, DynamoDB on moto.
    LambdaInit(lambda_init::Args),
    /// Load one `tether serve` with fake workers and watchers speaking the
    /// protocol: throughput, latency, loss, CPU, memory, storage.
    Load(load::Args),
}

fn main() -> anyhow::Result<()> {
    match Task::parse() {
        Task::Crates => {
            for (name, what) in [
                ("tether-domain", "protocol, entities, store and push ports, handlers"),
                ("tether-local", "SQLite store, local gateway, the `tether` binary"),
                ("tether-worker", "the worker: relay client, outbox, opencode driver"),
                ("tether-functions", "the AWS host: DynamoDB store, Lambda entry points"),
                ("tether-fakellm", "a scripted OpenAI-compatible model server for tests"),
            ] {
                println!("{name:18} {what}");
            }
            Ok(())
        }
        Task::Bench(args) => tokio::runtime::Runtime::new()?.block_on(bench::run(args)),
        Task::LambdaInit(args) => tokio::runtime::Runtime::new()?.block_on(lambda_init::run(args)),
        Task::Load(args) => tokio::runtime::Runtime::new()?.block_on(load::run(args)),
    }
}
