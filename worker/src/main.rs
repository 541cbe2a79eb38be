//! `tether-worker`: drive a coding agent on this machine from anywhere.

use clap::Parser;
use tether_worker::cli::WorkerArgs;

#[derive(Debug, Parser)]
#[command(name = "tether-worker", version, about)]
struct Cli {
    #[command(flatten)]
    worker: WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Cli::parse().worker.into_config();
    tokio::select! {
        result = tether_worker::run::run(config) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
