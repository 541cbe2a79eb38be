//! `tether-worker`: runs on a laptop or workstation, keeps an outbound
//! websocket to a Tether host, and drives opencode in its working directory.
//!
//! This binary so far only parses its command line; the relay client and the
//! opencode driver come next (see the worker issue).

use clap::Parser;

/// Drive a coding agent on this machine from anywhere.
#[derive(Debug, Parser)]
#[command(name = "tether-worker", version)]
struct Args {
    /// The Tether host to connect to, e.g. ws://127.0.0.1:8787 or wss://….
    #[arg(long, env = "TETHER_SERVER")]
    server: String,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    tracing::error!(server = %args.server, "the worker's relay client is not built yet");
    anyhow::bail!("tether-worker cannot connect yet: its relay client is not built")
}
