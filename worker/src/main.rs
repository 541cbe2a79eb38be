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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Cli::parse().worker.into_config();
    // The signal goes into the run rather than racing it, so that stopping
    // is the run's own way out: a close frame to the host, opencode stopped.
    tether_worker::run::run_until(config, tether_worker::run::shutdown_signal()).await
}
