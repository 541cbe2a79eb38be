//! The worker's command line, shared by `tether-worker` and `tether worker`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::run::WorkerConfig;

/// Keeps an outbound connection to a Tether host and answers its sessions
/// with opencode, in this directory.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The host: its web address (http://127.0.0.1:8787) or websocket URL (wss://…).
    #[arg(long, env = "TETHER_SERVER")]
    pub server: String,
    /// The directory opencode works in.
    #[arg(long, env = "TETHER_WORKDIR", default_value = ".")]
    pub dir: PathBuf,
    /// This machine's name as the owner sees it [default: the hostname].
    #[arg(long, env = "TETHER_MACHINE")]
    pub machine: Option<String>,
    /// This worker's name [default: the directory's name].
    #[arg(long, env = "TETHER_WORKER_NAME")]
    pub name: Option<String>,
    /// The opencode binary to run [default: on PATH, else installed from npm
    /// into the cache directory].
    #[arg(long, env = "TETHER_OPENCODE")]
    pub opencode: Option<PathBuf>,
    /// Where the worker keeps its credential [default: ~/.config/tether].
    #[arg(long, env = "TETHER_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// A PEM file of one or more certificates to trust for the host, besides
    /// the usual web authorities: for a host whose certificate comes from a
    /// private CA (e.g. one made for a home server).
    #[arg(long, env = "TETHER_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Allow a plain http:// or ws:// host on another machine. The credential
    /// and every prompt and answer then cross the network in clear text: use
    /// it only on a network you trust. It never turns off certificate checks.
    // Boolish, so `TETHER_INSECURE=1` (or `yes`, `true`) reads as meant.
    #[arg(long, env = "TETHER_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    /// A one-time pairing token from Tether (Machines, "Pair a headless
    /// machine"): the worker is approved for the token's owner at once, with
    /// no code to type. Needed the first time only; once paired it is
    /// ignored. It goes in the pairing request's body, never in a URL. On a
    /// machine others use, prefer the environment variable: a command line
    /// shows in `ps`.
    #[arg(long, env = "TETHER_PAIRING_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Seconds between heartbeats to the host.
    /// (`TETHER_WORKER_HEARTBEAT_SECS`, as `tether up`'s worker: the host's
    /// `TETHER_HEARTBEAT_SECS` is what it tells its clients.)
    #[arg(long, env = "TETHER_WORKER_HEARTBEAT_SECS", default_value_t = 60.0)]
    pub heartbeat_secs: f64,
    /// Seconds the host may leave a frame unanswered before the worker
    /// takes the connection for dead and makes a new one (a network that
    /// dropped without a reset).
    #[arg(long, env = "TETHER_ACK_TIMEOUT_SECS", default_value_t = 8.0)]
    pub ack_timeout_secs: f64,
    /// Run opencode on this port with the password in
    /// `TETHER_OPENCODE_PASSWORD` instead of random ones (benchmarks).
    #[arg(long, env = "TETHER_OPENCODE_PORT", hide = true)]
    pub opencode_port: Option<u16>,
}

impl WorkerArgs {
    pub fn into_config(self) -> WorkerConfig {
        let mut config = WorkerConfig::new(self.server, self.dir);
        if let Some(m) = self.machine {
            config.machine = m;
        }
        config.name = self.name;
        config.opencode = self.opencode;
        if let Some(dir) = self.config_dir {
            config.config_dir = dir;
        }
        config.heartbeat = Duration::from_secs_f64(self.heartbeat_secs.max(1.0));
        config.ack_timeout = Duration::from_secs_f64(self.ack_timeout_secs.max(0.1));
        config.ca_cert = self.ca_cert;
        config.insecure = self.insecure;
        config.pairing_token = self
            .token
            .as_deref()
            .map(str::trim)
            .and_then(tether_domain::auth::Secret::from_client);
        // The password comes from the environment only: never on a command line.
        config.opencode_access = self.opencode_port.and_then(|port| {
            let password = std::env::var("TETHER_OPENCODE_PASSWORD").ok()?;
            Some(crate::opencode::process::FixedAccess {
                port,
                password: tether_domain::auth::Secret::from_client(password)?,
            })
        });
        config
    }
}
