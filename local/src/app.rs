//! What the `tether` command does, as a library so that other binaries of
//! the workspace (the AWS-shaped test bed) run the same commands over
//! another host.
//!
//! Standard output carries only what a person (or a test) needs to read:
//! the listening address, and a secret when one is created. Logs go to
//! standard error (`RUST_LOG`, default `info`).

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use tether_domain::push::Push;
use tether_domain::store::Store;
use tether_domain::handlers::{Operator, UserCommand as DomainUserCommand};
use tether_domain::Domain;
use tokio::net::TcpListener;
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

use crate::cli::{self, Cli, Command, FileConfig, UserCommand};
use crate::control::ControlPush;
use crate::gateway::{now_millis, GatewayConfig};
use crate::host::{self, LocalDomain};
use crate::listen::HttpOptions;

/// The user `tether up` creates on its first start.
pub const OWNER: &str = "owner";

/// A binary's `main`: logs to standard error, a runtime, the command, and
/// an exit status (errors are printed with their causes).
pub fn main_with<F, Fut>(cli: Cli, run: F) -> ExitCode
where
    F: FnOnce(Cli) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use std::io::IsTerminal as _;
    // A user command's output is what it prints: its log says only what
    // went wrong, unless RUST_LOG asks for more.
    let level = if matches!(cli.command, Command::User(_)) { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command of the `tether` binary on the local host.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let file = FileConfig::load(cli.config.as_deref())?;
    let data_dir = cli::data_dir(&cli, &file)?;
    match &cli.command {
        Command::Up(args) => {
            let gateway = args.tuning.gateway(&file);
            let domain_config = args.tuning.domain(&file, &gateway);
            let listener = bind(cli::up_addr(args, &file)).await?;
            let url = url_of(&listener)?;
            let domain = host::open_domain(&data_dir, domain_config)?;
            first_start(&domain, &url).await?;
            start_local_worker(args, &data_dir, &url, &domain).await?;
            // Loopback only: plain HTTP stays on this machine.
            let http = HttpOptions {
                tls: None,
                limits: args.tuning.limits(&file),
            };
            serve(domain, gateway, http, listener, &url).await
        }
        Command::Serve(args) => {
            let gateway = args.tuning.gateway(&file);
            let domain_config = args.tuning.domain(&file, &gateway);
            let addr = cli::serve_addr(args, &file);
            // Checked before anything binds or opens: a refusal changes nothing.
            let http = cli::serve_http(args, &file, addr)?;
            let listener = bind(addr).await?;
            let url = url_of_scheme(&listener, http.scheme())?;
            let domain = host::open_domain(&data_dir, domain_config)?;
            if no_users(&domain).await? {
                println!(
                    "No users yet: run `tether user add NAME --admin` to create the first one."
                );
            }
            serve(domain, gateway, http, listener, &url).await
        }
        Command::User(command) => user(command, &data_dir).await,
        Command::Worker(args) => worker(args).await,
    }
}

/// `tether worker`: a worker in this process until a signal stops it.
pub async fn worker(args: &tether_worker::cli::WorkerArgs) -> anyhow::Result<()> {
    let config = args.clone().into_config();
    // The worker closes its websocket (1000) and stops opencode itself.
    tether_worker::run::run_until(config, shutdown_signal()).await
}

/// `tether up`'s first start: makes the owner and says how to sign in.
pub async fn first_start<S: Store, P: Push>(domain: &Domain<S, P>, url: &str) -> anyhow::Result<()> {
    if !no_users(domain).await? {
        return Ok(());
    }
    let (_, secret) = domain
        .add_user(OWNER, true, now_millis())
        .await
        .context("creating the first user")?;
    println!("First start: created the user \"{OWNER}\".");
    println!("  Sign in at: {url}");
    println!("  Secret:     {}", secret.expose());
    println!("The secret is shown only this once. `tether user reset {OWNER}` makes a new one.");
    Ok(())
}

/// Starts `tether up`'s worker (unless `--no-worker`) in this process.
pub async fn start_local_worker<S: Store, P: Push>(
    args: &cli::UpArgs,
    data_dir: &std::path::Path,
    url: &str,
    domain: &Domain<S, P>,
) -> anyhow::Result<()> {
    if args.no_worker {
        return Ok(());
    }
    let worker = local_worker(args, data_dir, url, domain).await?;
    tokio::spawn(async move {
        if let Err(e) = tether_worker::run::run(worker).await {
            eprintln!("The worker stopped: {e:#}");
        }
    });
    Ok(())
}

/// This machine's worker for `tether up`: paired to the owner already, its
/// credential kept in the data directory, one per working directory.
async fn local_worker<S: Store, P: Push>(
    args: &cli::UpArgs,
    data_dir: &std::path::Path,
    url: &str,
    domain: &Domain<S, P>,
) -> anyhow::Result<tether_worker::run::WorkerConfig> {
    use tether_domain::model::WorkerStatus;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let dir = dir
        .canonicalize()
        .with_context(|| format!("worker directory {}", dir.display()))?;
    let mut config = tether_worker::run::WorkerConfig::new(url, dir.clone());
    config.opencode = args.opencode.clone();
    if let Some(h) = args.worker_heartbeat_secs {
        config.heartbeat = std::time::Duration::from_secs_f64(h);
    }
    let key = tether_worker::pairing::credential_path(data_dir, "tether up", &dir);
    config.credential_file = Some(key.clone());
    let stored = tether_worker::pairing::load_or_create(&key, url, &dir)?;
    let request = tether_domain::protocol::PairRequest {
        machine: config.machine.clone(),
        name: Some(config.display_name()),
        workdir: dir.display().to_string(),
        token: None,
    };
    // In this process, not over the network: no source, no cap.
    let paired = domain
        .pair(Some(&stored.credential), None, request, now_millis())
        .await
        .map_err(|e| anyhow!("pairing this machine's worker: {}", e.message))?;
    if paired.status == WorkerStatus::Pending {
        let owner = domain
            .approve_for_first_admin(&paired.worker_id)
            .await
            .map_err(|e| anyhow!("approving this machine's worker: {}", e.message))?;
        if let Some(owner) = owner {
            info!(worker_id = %paired.worker_id, owner = %owner, "this machine's worker is paired to the owner");
        }
    }
    Ok(config)
}

pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok(listener),
        // Most often Tether itself, started earlier (another `tether up`).
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow!(
            "{addr} is in use: is Tether already running there? For another project, start              a worker for it instead: `tether worker --server http://{addr} --dir PATH`              (or pick another --port)"
        )),
        Err(e) => Err(e).with_context(|| format!("listening on {addr}")),
    }
}

pub fn url_of(listener: &TcpListener) -> anyhow::Result<String> {
    url_of_scheme(listener, "http")
}

fn url_of_scheme(listener: &TcpListener, scheme: &str) -> anyhow::Result<String> {
    let addr = listener.local_addr().context("reading the bound address")?;
    Ok(format!("{scheme}://{addr}"))
}

async fn serve(
    domain: Arc<LocalDomain>,
    gateway: GatewayConfig,
    http: HttpOptions,
    listener: TcpListener,
    url: &str,
) -> anyhow::Result<()> {
    // The one line tests (and people) look for; printed once the socket is
    // bound, so connecting right after reading it works.
    println!("tether listening on {url}");
    host::serve(domain, gateway, http, listener, shutdown_signal()).await
}

/// Whether the store has no user yet.
pub async fn no_users<S: Store, P: Push>(domain: &Domain<S, P>) -> anyhow::Result<bool> {
    domain.no_users().await.map_err(|e| anyhow!("reading users: {}", e.message))
}

async fn user(command: &UserCommand, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let store = host::open_store(data_dir)?;
    // The websockets live in the running host, if any: `reset` and
    // `remove` close them through its control socket.
    let push = ControlPush::new(data_dir);
    let domain = Domain::new(store, push, tether_domain::Config::default());
    user_with(command, &domain).await
}

/// Runs a `user` command on a domain. Its push port closes the websockets
/// of a user that `reset` or `remove` revokes, wherever they are open (the
/// local host's control socket, the test bed's Management API).
pub async fn user_with<S: Store, P: Push>(
    command: &UserCommand,
    domain: &Domain<S, P>,
) -> anyhow::Result<()> {
    let command = match command {
        UserCommand::Add { name, admin } => DomainUserCommand::Add { name, admin: *admin },
        UserCommand::List => DomainUserCommand::List,
        UserCommand::Reset { name } => DomainUserCommand::Reset { name },
        UserCommand::Remove { name } => DomainUserCommand::Remove { name },
    };
    let op = Operator {
        program: "tether",
        kept_in: "the database",
    };
    let report = domain
        .user_command(command, op, now_millis())
        .await
        .map_err(|e| anyhow!("{}", e.message))?;
    for line in &report.lines {
        println!("{line}");
    }
    match report.unclosed {
        Some(why) => Err(anyhow!(why)),
        None => Ok(()),
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_port_in_use_says_what_to_do() {
        let first = super::bind("127.0.0.1:0".parse().expect("address")).await.expect("bind");
        let addr = first.local_addr().expect("address");
        let error = super::bind(addr).await.expect_err("the port is taken").to_string();
        assert!(error.contains("is in use"), "{error}");
        assert!(error.contains(&format!("tether worker --server http://{addr} --dir PATH")), "{error}");
    }
}
