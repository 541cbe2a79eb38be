//! `tether-fakellm`: the scripted fake OpenAI-compatible server as a binary.
//! See the library docs for the directives it understands.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tether_fakellm::{Config, FakeLlm};

#[derive(Parser, Debug)]
#[command(name = "tether-fakellm", about = "A scripted fake OpenAI-compatible LLM server")]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Append every request received to this file, one JSON object a line.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Milliseconds to pause before each streamed piece (unless `[delay MS]`).
    #[arg(long, default_value_t = 2)]
    delay: u64,
    /// The model id `GET /v1/models` lists.
    #[arg(long, default_value = "fake-model")]
    model: String,
    /// Send `retry-after-ms: MS` with scripted errors (opencode then retries
    /// after MS instead of backing off for over a minute in all).
    #[arg(long)]
    retry_after_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let server = FakeLlm::start(Config {
        addr: SocketAddr::new(args.host, args.port),
        log: args.log,
        delay: Duration::from_millis(args.delay),
        model: args.model,
        retry_after_ms: args.retry_after_ms,
    })
    .await?;
    println!("fakellm listening on {}", server.url());
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
