//! The `tether` command line, and how its settings resolve: a flag, else
//! its `TETHER_*` environment variable, else the `--config` file, else the
//! default.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use crate::gateway::GatewayConfig;
use crate::listen::{HttpOptions, Limits, TlsFiles};

/// Default port of `tether up`.
pub const DEFAULT_PORT: u16 = 8787;

/// Tether: chat with the coding agents on your machines from a browser.
#[derive(Debug, Parser)]
#[command(name = "tether", version, propagate_version = true)]
pub struct Cli {
    /// Where Tether keeps its database [default: $XDG_DATA_HOME/tether, or
    /// ~/.local/share/tether].
    #[arg(long, global = true, env = "TETHER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// A JSON file of settings, keyed like the long flags with underscores,
    /// e.g. {"port": 8787, "idle_timeout_secs": 600}. Flags and TETHER_*
    /// variables take precedence over it.
    #[arg(long, global = true, env = "TETHER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Tether on this machine: the host on 127.0.0.1 and a worker for
    /// this directory. On the first start it creates the user `owner` and
    /// prints how to sign in.
    Up(UpArgs),
    /// Run only the host, on any address (for a shared server).
    Serve(ServeArgs),
    /// Add, list, reset or remove users (works on the database directly;
    /// the host may be running).
    #[command(subcommand)]
    User(UserCommand),
    /// Run only a worker (as `tether-worker` does): connect to a host and
    /// answer its sessions with opencode in a directory.
    Worker(tether_worker::cli::WorkerArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Port on 127.0.0.1 (0 picks a free one) [default: 8787].
    #[arg(long, env = "TETHER_PORT")]
    pub port: Option<u16>,

    /// The directory this machine's worker runs opencode in [default: the current one].
    #[arg(long, env = "TETHER_WORKDIR")]
    pub dir: Option<std::path::PathBuf>,

    /// Start only the host, without this machine's worker.
    #[arg(long, env = "TETHER_NO_WORKER")]
    pub no_worker: bool,

    /// The opencode binary the worker runs [default: on PATH, else installed from npm].
    #[arg(long, env = "TETHER_OPENCODE")]
    pub opencode: Option<std::path::PathBuf>,

    /// Seconds between the worker's heartbeats [default: 60].
    #[arg(long, env = "TETHER_WORKER_HEARTBEAT_SECS", value_parser = parse_secs)]
    pub worker_heartbeat_secs: Option<f64>,

    #[command(flatten)]
    pub tuning: Tuning,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8787]. Any address
    /// but loopback needs HTTPS (--tls-cert and --tls-key) or --insecure-http.
    #[arg(long, env = "TETHER_BIND", value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,

    /// Serve HTTPS (and WSS) with this certificate chain (PEM, leaf first).
    /// Read again when it changes, so a renewal needs no restart.
    #[arg(long, env = "TETHER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "TETHER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Serve plain HTTP on an address other machines can reach. Only for a
    /// TLS proxy on a network you trust; anyone on the path reads and
    /// changes everything otherwise.
    #[arg(long, env = "TETHER_INSECURE_HTTP")]
    pub insecure_http: bool,

    #[command(flatten)]
    pub tuning: Tuning,
}

/// The local host's frame interval (see `--frame-interval-ms`).
const LOCAL_FRAME_INTERVAL_MS: u32 = 25;

/// Gateway and domain timings. The defaults mirror API Gateway; tests
/// shorten them. Decimals are allowed (0.5 is half a second).
#[derive(Debug, Args)]
#[command(next_help_heading = "Timing (advanced)")]
pub struct Tuning {
    /// Close a connection that sends nothing for this long [default: 600].
    #[arg(long, env = "TETHER_IDLE_TIMEOUT_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout_secs: Option<f64>,

    /// Close every connection this long after it opened [default: 7200].
    #[arg(long, env = "TETHER_MAX_CONNECTION_AGE_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub max_connection_age_secs: Option<f64>,

    /// Handle each connection's messages concurrently, in any order, as API
    /// Gateway with Lambda does (default: one after another).
    #[arg(long, env = "TETHER_CONCURRENT_FRAMES")]
    pub concurrent_frames: bool,

    /// How often clients are told to ping [default: 60].
    #[arg(long, env = "TETHER_HEARTBEAT_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub heartbeat_secs: Option<f64>,

    /// A worker not heard from for this long shows as offline [default: 150].
    #[arg(long, env = "TETHER_PRESENCE_TIMEOUT_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub presence_timeout_secs: Option<f64>,

    /// A worker offline this long has gone away: answers it was giving end
    /// failed and their sessions take messages again [default: 120].
    #[arg(long, env = "TETHER_WORKER_LEASE_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub worker_lease_secs: Option<f64>,

    /// How often a worker sends a streaming answer's chunk frames, in
    /// milliseconds [default: 25].
    #[arg(long, env = "TETHER_FRAME_INTERVAL_MS", value_name = "MS", value_parser = clap::value_parser!(u32).range(10..=1000), hide = true)]
    pub frame_interval_ms: Option<u32>,

    /// How long a websocket ticket stays valid [default: 60].
    #[arg(long, env = "TETHER_TICKET_TTL_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub ticket_ttl_secs: Option<f64>,

    /// A connection must finish its TLS handshake and send each request's
    /// headers within this [default: 10].
    #[arg(long, env = "TETHER_HEADER_READ_TIMEOUT_SECS", value_name = "SECS", value_parser = parse_secs)]
    pub header_read_timeout_secs: Option<f64>,

    /// How often the TLS files are checked for a change [default: 5].
    #[arg(long, env = "TETHER_TLS_RELOAD_SECS", value_name = "SECS", value_parser = parse_secs, hide = true)]
    pub tls_reload_secs: Option<f64>,

    /// Open websockets one source address may hold (an IPv6 address counts
    /// by its /64; behind a proxy on this machine, the address it forwards
    /// for); 0 for no cap [default: 64].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    pub max_connections_per_address: Option<usize>,

    /// Open websockets one user may have [default: 32].
    #[arg(long, env = "TETHER_MAX_USER_CONNECTIONS", value_name = "N", value_parser = parse_cap, hide = true)]
    pub max_user_connections: Option<u32>,

    /// Sessions one user may have that are not ended or failed [default: 1000].
    #[arg(long, env = "TETHER_MAX_LIVE_SESSIONS", value_name = "N", value_parser = parse_cap, hide = true)]
    pub max_live_sessions: Option<u32>,

    /// Messages of one user that may wait for an answer [default: 100].
    #[arg(long, env = "TETHER_MAX_OPEN_MESSAGES", value_name = "N", value_parser = parse_cap, hide = true)]
    pub max_open_messages: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user and print its secret (shown only this once).
    Add {
        /// The user's name (what `reset` takes).
        name: String,
        /// May see and approve pairing requests nobody has claimed.
        #[arg(long)]
        admin: bool,
    },
    /// List users: names, ids, admin, created (never secrets).
    List,
    /// Give a user a new secret. The old one and its sign-in tickets stop
    /// working, and the user's open connections to a running host are closed.
    Reset {
        /// The user's name.
        name: String,
    },
    /// Remove a user. Their secret and sign-in tickets stop working, their
    /// workers are revoked, and every open connection of the user and of
    /// those workers to a running host is closed. Their sessions and
    /// messages stay in the database (nobody can reach them); the name may
    /// be used again. The last admin cannot be removed.
    Remove {
        /// The user's name.
        name: String,
    },
}

/// A cap of the domain's: at least 1 (a cap of 0 would lock everyone out).
fn parse_cap(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if secs.is_finite() && secs > 0.0 && secs < 1e9 {
        Ok(secs)
    } else {
        Err("must be a positive number of seconds".into())
    }
}

/// The `--config` file: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub port: Option<u16>,
    pub bind: Option<SocketAddr>,
    pub idle_timeout_secs: Option<f64>,
    pub max_connection_age_secs: Option<f64>,
    pub concurrent_frames: Option<bool>,
    pub heartbeat_secs: Option<f64>,
    pub presence_timeout_secs: Option<f64>,
    pub worker_lease_secs: Option<f64>,
    pub ticket_ttl_secs: Option<f64>,
    pub header_read_timeout_secs: Option<f64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub insecure_http: Option<bool>,
    pub max_connections_per_address: Option<usize>,
}

impl FileConfig {
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("parsing the config file {} (JSON)", path.display()))?;
        for (key, value) in [
            ("idle_timeout_secs", config.idle_timeout_secs),
            ("max_connection_age_secs", config.max_connection_age_secs),
            ("heartbeat_secs", config.heartbeat_secs),
            ("presence_timeout_secs", config.presence_timeout_secs),
            ("worker_lease_secs", config.worker_lease_secs),
            ("ticket_ttl_secs", config.ticket_ttl_secs),
            ("header_read_timeout_secs", config.header_read_timeout_secs),
        ] {
            if let Some(v) = value {
                if let Err(e) = parse_secs(&v.to_string()) {
                    bail!("{key} in {}: {e}", path.display());
                }
            }
        }
        Ok(config)
    }
}

/// The data directory: flag or `TETHER_DATA_DIR`, the config file, then the
/// XDG default.
pub fn data_dir(cli: &Cli, file: &FileConfig) -> anyhow::Result<PathBuf> {
    if let Some(dir) = cli.data_dir.clone().or_else(|| file.data_dir.clone()) {
        return Ok(dir);
    }
    let xdg = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    if let Some(xdg) = xdg {
        return Ok(xdg.join("tether"));
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".local/share/tether")),
        _ => bail!("no home directory to keep data in: pass --data-dir or set TETHER_DATA_DIR"),
    }
}

/// `tether up`'s address: always loopback.
pub fn up_addr(args: &UpArgs, file: &FileConfig) -> SocketAddr {
    let port = args.port.or(file.port).unwrap_or(DEFAULT_PORT);
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `tether serve`'s address.
pub fn serve_addr(args: &ServeArgs, file: &FileConfig) -> SocketAddr {
    args.bind
        .or(file.bind)
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)))
}

/// How `tether serve` listens on `addr`: HTTPS with the TLS files, or plain
/// HTTP where that is safe or explicitly asked for. Refuses plain HTTP on a
/// non-loopback address without `--insecure-http`, saying why and what to
/// do instead.
pub fn serve_http(
    args: &ServeArgs,
    file: &FileConfig,
    addr: SocketAddr,
) -> anyhow::Result<HttpOptions> {
    let limits = args.tuning.limits(file);
    let cert = args.tls_cert.clone().or_else(|| file.tls_cert.clone());
    let key = args.tls_key.clone().or_else(|| file.tls_key.clone());
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        (None, None) => None,
        (Some(_), None) => bail!("--tls-cert needs --tls-key (the certificate's private key)"),
        (None, Some(_)) => bail!("--tls-key needs --tls-cert (the certificate chain)"),
    };
    let insecure = args.insecure_http || file.insecure_http.unwrap_or(false);
    if tls.is_none() && !addr.ip().is_loopback() && !insecure {
        bail!(
            "refusing to serve plain HTTP on {addr}: other machines can reach that address, and \
             over plain HTTP every secret, ticket, prompt and answer (and the approval of \
             commands on your machines) crosses the network where anyone on the path can read \
             and change it.\n\
             Instead, either\n  \
             - serve HTTPS yourself: --tls-cert FULLCHAIN.pem --tls-key KEY.pem, or\n  \
             - keep tether on 127.0.0.1 and put a TLS proxy in front of it (Caddy, \
             `tailscale serve`: see the README), or\n  \
             - if a TLS proxy on a network you fully trust forwards to this address, pass \
             --insecure-http."
        );
    }
    Ok(HttpOptions { tls, limits })
}

fn secs(flag: Option<f64>, file: Option<f64>) -> Option<Duration> {
    flag.or(file).map(Duration::from_secs_f64)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Tuning {
    /// The listener's bounds.
    pub fn limits(&self, file: &FileConfig) -> Limits {
        let mut limits = Limits::default();
        if let Some(d) = secs(self.header_read_timeout_secs, file.header_read_timeout_secs) {
            limits.header_read = d;
        }
        if let Some(d) = secs(self.tls_reload_secs, None) {
            limits.reload_every = d;
        }
        limits
    }

    pub fn gateway(&self, file: &FileConfig) -> GatewayConfig {
        let mut config = GatewayConfig::default();
        if let Some(d) = secs(self.idle_timeout_secs, file.idle_timeout_secs) {
            config.idle_timeout = d;
        }
        if let Some(d) = secs(self.max_connection_age_secs, file.max_connection_age_secs) {
            config.max_connection_age = d;
        }
        config.concurrent_frames =
            self.concurrent_frames || file.concurrent_frames.unwrap_or(false);
        if let Some(n) = self
            .max_connections_per_address
            .or(file.max_connections_per_address)
        {
            config.max_connections_per_address = n;
        }
        config
    }

    pub fn domain(&self, file: &FileConfig, gateway: &GatewayConfig) -> tether_domain::Config {
        let mut config = tether_domain::Config::default();
        if let Some(d) = secs(self.heartbeat_secs, file.heartbeat_secs) {
            config.heartbeat_ms = millis(d);
        }
        if let Some(d) = secs(self.presence_timeout_secs, file.presence_timeout_secs) {
            config.presence_timeout_ms = millis(d);
        }
        if let Some(d) = secs(self.worker_lease_secs, file.worker_lease_secs) {
            config.worker_lease_ms = millis(d);
        }
        // Frames cost a local host little: a short interval makes the
        // stream livelier (AWS keeps the domain's 100 ms).
        config.frame_interval_ms = i64::from(self.frame_interval_ms.unwrap_or(LOCAL_FRAME_INTERVAL_MS));
        if let Some(d) = secs(self.ticket_ttl_secs, file.ticket_ttl_secs) {
            config.ticket_ttl_ms = millis(d);
        }
        // A connection record outlives the longest connection by a margin,
        // since `$disconnect` may never come.
        config.connection_ttl_ms =
            millis(gateway.max_connection_age + Duration::from_secs(10 * 60));
        if let Some(n) = self.max_user_connections {
            config.max_user_connections = n;
        }
        if let Some(n) = self.max_live_sessions {
            config.max_live_sessions = n;
        }
        if let Some(n) = self.max_open_messages {
            config.max_open_messages = n;
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_beat_the_file() {
        let cli = Cli::parse_from(["tether", "up", "--port", "0", "--idle-timeout-secs", "0.5"]);
        let file: FileConfig = serde_json::from_str(
            r#"{"port": 9, "idle_timeout_secs": 3, "max_connection_age_secs": 4}"#,
        )
        .expect("file");
        let Command::Up(args) = &cli.command else {
            panic!("up");
        };
        assert_eq!(up_addr(args, &file).port(), 0);
        let gateway = args.tuning.gateway(&file);
        assert_eq!(gateway.idle_timeout, Duration::from_millis(500));
        assert_eq!(gateway.max_connection_age, Duration::from_secs(4));
    }

    #[test]
    fn plain_http_beyond_loopback_needs_consent() {
        let parse = |args: &[&str]| {
            let cli = Cli::parse_from(args);
            let Command::Serve(serve) = cli.command else {
                panic!("serve");
            };
            let addr = serve_addr(&serve, &FileConfig::default());
            serve_http(&serve, &FileConfig::default(), addr)
        };
        let refused = parse(&["tether", "serve", "--bind", "0.0.0.0:8787"]).expect_err("refused");
        let message = refused.to_string();
        assert!(message.contains("refusing to serve plain HTTP on 0.0.0.0:8787"), "{message}");
        assert!(message.contains("--tls-cert") && message.contains("--insecure-http"), "{message}");
        assert!(parse(&["tether", "serve", "--bind", "[::]:1", "--insecure-http"]).is_ok());
        assert!(parse(&["tether", "serve", "--bind", "127.0.0.1:1"]).is_ok());
        assert!(parse(&["tether", "serve", "--bind", "[::1]:1"]).is_ok());
        let tls = parse(&["tether", "serve", "--bind", "0.0.0.0:1", "--tls-cert", "c", "--tls-key", "k"])
            .expect("TLS");
        assert_eq!(tls.scheme(), "https");
        assert!(parse(&["tether", "serve", "--tls-cert", "c"]).is_err());
    }

    #[test]
    fn caps_come_from_flags_and_the_file() {
        let cli = Cli::parse_from([
            "tether", "serve", "--max-user-connections", "3", "--max-live-sessions", "2",
            "--max-open-messages", "4",
        ]);
        let file: FileConfig =
            serde_json::from_str(r#"{"max_connections_per_address": 5}"#).expect("file");
        let Command::Serve(args) = &cli.command else {
            panic!("serve");
        };
        let gateway = args.tuning.gateway(&file);
        assert_eq!(gateway.max_connections_per_address, 5);
        let domain = args.tuning.domain(&file, &gateway);
        assert_eq!(
            (domain.max_user_connections, domain.max_live_sessions, domain.max_open_messages),
            (3, 2, 4)
        );
        let defaults = tether_domain::Config::default();
        assert_eq!(domain.max_worker_connections, defaults.max_worker_connections);
        assert!(Cli::try_parse_from(["tether", "serve", "--max-live-sessions", "0"]).is_err());
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        assert!(serde_json::from_str::<FileConfig>(r#"{"prot": 1}"#).is_err());
    }
}
