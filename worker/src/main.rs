//! `tether-worker`: drive a coding agent on this machine from anywhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tether_worker::run::{run, WorkerConfig};

/// Keeps an outbound connection to a Tether host and answers its sessions
/// with opencode, in this directory.
#[derive(Debug, Parser)]
#[command(name = "tether-worker", version)]
struct Args {
    /// The host: its web address (http://127.0.0.1:8787) or websocket URL (wss://…).
    #[arg(long, env = "TETHER_SERVER")]
    server: String,
    /// The directory opencode works in.
    #[arg(long, env = "TETHER_WORKDIR", default_value = ".")]
    dir: PathBuf,
    /// This machine's name as the owner sees it (default: the hostname).
    #[arg(long, env = "TETHER_MACHINE")]
    machine: Option<String>,
    /// This worker's name (default: the directory's name).
    #[arg(long, env = "TETHER_WORKER_NAME")]
    name: Option<String>,
    /// The opencode binary to run (default: on PATH, else installed from npm
    /// into the cache directory).
    #[arg(long, env = "TETHER_OPENCODE")]
    opencode: Option<PathBuf>,
    /// Where the worker keeps its credential (default: ~/.config/tether).
    #[arg(long, env = "TETHER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Seconds between heartbeats to the host.
    #[arg(long, env = "TETHER_HEARTBEAT_SECS", default_value_t = 60.0)]
    heartbeat_secs: f64,
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
    let args = Args::parse();
    let mut config = WorkerConfig::new(args.server, args.dir);
    if let Some(m) = args.machine {
        config.machine = m;
    }
    config.name = args.name;
    config.opencode = args.opencode;
    if let Some(dir) = args.config_dir {
        config.config_dir = dir;
    }
    config.heartbeat = Duration::from_secs_f64(args.heartbeat_secs.max(1.0));
    tokio::select! {
        result = run(config) => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
