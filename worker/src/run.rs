//! The worker as a whole: pairing, the relay, the opencode supervisor and
//! the agent loop. Used by the `tether-worker` binary and by `tether up`.
//!
//! It checks how it may reach the host ([`crate::tls`]) before it sends
//! anything, and it ends the same way whatever ends it (the host's refusal,
//! a revocation, a signal): a normal close frame to the host, opencode
//! stopped with its whole process group.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::StreamExt;
use tether_domain::auth::Secret;
use tether_domain::model::{AgentState, WorkerStatus};
use tether_domain::protocol::{ClientFrame, PairRequest, ServerFrame};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::agent::{Agent, Exit, Input, Profile};
use crate::opencode::{process, OpencodeClient, OpencodeProcess};
use crate::pairing::{self, Endpoints};
use crate::relay::{backoff, Relay, RelayConfig, RelayEvent};
use crate::tls::{self, HostTls, Transport};

/// Everything a worker needs to know.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `--server`: the host's web address or websocket URL.
    pub server: String,
    pub workdir: PathBuf,
    pub machine: String,
    pub name: Option<String>,
    /// `--opencode`: a specific opencode binary.
    pub opencode: Option<PathBuf>,
    /// Where the credential file lives (`~/.config/tether`).
    pub config_dir: PathBuf,
    /// Where opencode is installed when it is not on PATH (`~/.cache/tether`).
    pub cache_dir: PathBuf,
    /// Where the opencode child's pid is kept (`~/.local/state/tether`).
    pub state_dir: PathBuf,
    pub heartbeat: Duration,
    /// How long the host may leave what the worker sent unanswered before
    /// the connection counts as dead (a silent network drop).
    pub ack_timeout: Duration,
    /// A credential file to use instead of the per-host one in `config_dir`.
    pub credential_file: Option<PathBuf>,
    /// A fixed port and password for opencode (for benchmarks).
    pub opencode_access: Option<process::FixedAccess>,
    /// `--ca-cert`: more certificates to trust for the host.
    pub ca_cert: Option<PathBuf>,
    /// `--insecure`: plain text to a host on another machine is allowed.
    pub insecure: bool,
    /// `--token`: a one-time pairing token, approving this worker for its
    /// owner at once.
    pub pairing_token: Option<Secret>,
}

impl WorkerConfig {
    /// Defaults for this user and machine.
    pub fn new(server: impl Into<String>, workdir: PathBuf) -> Self {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("."));
        Self {
            server: server.into(),
            workdir,
            machine: gethostname::gethostname().to_string_lossy().into_owned(),
            name: None,
            opencode: None,
            config_dir: dirs::config_dir().unwrap_or_else(|| home.join(".config")).join("tether"),
            cache_dir: dirs::cache_dir().unwrap_or_else(|| home.join(".cache")).join("tether/opencode"),
            state_dir: dirs::state_dir().unwrap_or_else(|| home.join(".local/state")).join("tether"),
            heartbeat: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(8),
            credential_file: None,
            opencode_access: None,
            ca_cert: None,
            insecure: false,
            pairing_token: None,
        }
    }

    pub fn credential_path(&self) -> PathBuf {
        self.credential_file
            .clone()
            .unwrap_or_else(|| pairing::credential_path(&self.config_dir, &self.server, &self.workdir))
    }

    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.workdir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "worker".into())
        })
    }
}

/// Runs the worker until it is revoked, refused or the process ends.
pub async fn run(config: WorkerConfig) -> anyhow::Result<()> {
    run_until(config, std::future::pending()).await
}

/// Runs the worker until it is revoked or refused, or until `shutdown`
/// resolves: then it closes the websocket with a normal close frame, stops
/// opencode, and returns `Ok`.
pub async fn run_until(config: WorkerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Before anything reaches the host: whether it may be reached this way,
    // and whom to trust. A bad --server or --ca-cert fails here, not later
    // as a connection that keeps failing.
    let transport = tls::check_server(&config.server, config.insecure)?;
    if let Transport::PlainInsecure { host } = &transport {
        warn!(
            %host,
            "--insecure: talking to the host over plain text; the credential and every prompt \
             and answer can be read and changed on the network"
        );
    }
    let host_tls = HostTls::new(config.ca_cert.as_deref())?;
    if let (Some(path), false) = (&config.ca_cert, transport == Transport::Tls) {
        warn!(ca_cert = %path.display(), "--ca-cert has no use with a plain-text --server");
    }
    let http = host_tls.http_client()?;
    tokio::pin!(shutdown);

    // The directory as itself, not as it was written: `.` in two projects
    // is two workers, each with its own credential file and name.
    let mut config = config;
    config.workdir = config
        .workdir
        .canonicalize()
        .with_context(|| format!("working directory {}", config.workdir.display()))?;
    let workdir = config.workdir.clone();
    let endpoints = Endpoints::from_server(&config.server)?;
    let path = config.credential_path();
    let mut stored = pairing::load_or_create(&path, &config.server, &workdir)?;
    let credential = Secret::from_client(stored.credential.clone()).context("the credential file is empty")?;

    let request = PairRequest {
        machine: config.machine.clone(),
        name: Some(config.display_name()),
        workdir: workdir.display().to_string(),
        token: config.pairing_token.as_ref().map(|t| t.expose().to_owned()),
    };
    // Nothing to close yet: a signal here just ends the worker.
    let paired = tokio::select! {
        paired = pairing::request_pairing(&http, &endpoints, &credential, &request) => paired?,
        () = &mut shutdown => return Ok(()),
    };
    if !matches!(paired.status, WorkerStatus::Approved | WorkerStatus::Pending) {
        bail!(pairing::refusal(paired.status, &path));
    }
    let newly = stored.worker_id.as_deref() != Some(paired.worker_id.as_str());
    if paired.approved_by.is_some() {
        stored.approved_by = paired.approved_by.clone();
    }
    stored.worker_id = Some(paired.worker_id.to_string());
    // Kept before it is shown: once the notice is out, the file says it too.
    pairing::save(&path, &stored)?;
    // Until when a pending worker waits for its approval.
    let mut pending_until = None;
    if paired.status == WorkerStatus::Approved {
        if newly {
            pairing::print_approved(stored.approved_by.as_deref());
        }
        info!(
            worker_id = %paired.worker_id,
            approved_by = %stored.approved_by.as_deref().unwrap_or("?"),
            "paired"
        );
    } else {
        if let Some(code) = &paired.code {
            pairing::print_pending(&endpoints, code);
        }
        pending_until = paired.expires_at;
    }

    // Found now; installed (which takes a while) by the supervisor, once the
    // worker is connected and can say so.
    let binary = process::find(config.opencode.as_deref(), &config.cache_dir)?;
    let first = if binary.is_some() { AgentState::Starting } else { AgentState::Installing };
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let (relay, mut relay_events) = Relay::start(RelayConfig {
        url: endpoints.websocket.clone(),
        credential,
        heartbeat: config.heartbeat,
        ack_timeout: config.ack_timeout,
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
        tls: host_tls,
    });
    let forward = inputs_tx.clone();
    let (approved_tx, approved) = watch::channel(pending_until.is_none());
    let approval_file = path.clone();
    tokio::spawn(async move {
        while let Some(event) = relay_events.recv().await {
            // The approval, with who gave it: shown, and kept beside the
            // credential for later starts. It comes as `pairing_status`, or,
            // for a worker approved while it was not connected, in the reply
            // to its hello (the one reply that carries its own view).
            let approval = match &event {
                RelayEvent::Frame(frame) => match frame.as_ref() {
                    ServerFrame::PairingStatus {
                        status: WorkerStatus::Approved,
                        approved_by,
                    } => Some(approved_by.clone()),
                    ServerFrame::Reply { ok: true, data: Some(data), .. }
                        if data["worker"]["status"] == "approved" && data.get("heartbeat_ms").is_some() =>
                    {
                        Some(data["approved_by"].as_str().map(str::to_owned))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(approved_by) = approval.filter(|_| !*approved_tx.borrow()) {
                stored.approved_by = approved_by.clone();
                if let Err(e) = pairing::save(&approval_file, &stored) {
                    warn!(error = %format!("{e:#}"), "could not record who approved this worker");
                }
                pairing::print_approved(approved_by.as_deref());
                approved_tx.send_replace(true);
            }
            if forward.send(Input::Relay(event)).is_err() {
                return;
            }
        }
    });
    let (stop_opencode, opencode_stop) = watch::channel(false);
    let supervisor = tokio::spawn(supervise(
        binary,
        config.cache_dir.clone(),
        workdir.clone(),
        config.state_dir.clone(),
        pairing::instance_key(&config.server, &workdir),
        config.opencode_access.clone(),
        inputs_tx.clone(),
        opencode_stop,
    ));

    let profile = Profile {
        machine: config.machine.clone(),
        name: config.display_name(),
        workdir: workdir.display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let (outbound_tx, outbound) = mpsc::unbounded_channel();
    let outbound = tokio::spawn(to_host(outbound, relay.clone()));
    let mut code_expired = false;
    let exit = tokio::select! {
        exit = Agent::new(outbound_tx, inputs_tx, profile, first).run(inputs_rx) => Some(exit),
        () = &mut shutdown => None,
        () = unapproved_at(pending_until, CLOCK_SLACK, approved) => {
            code_expired = true;
            None
        }
    };
    // The agent is gone, and with it the frames' sender: what it sent last
    // reaches the relay before the close frame.
    if let Err(e) = outbound.await {
        warn!(error = %e, "the worker's outbound frames were lost");
    }
    // However the worker ends, the host hears a close frame rather than a
    // dropped socket, and opencode does not outlive it.
    stop_opencode.send_replace(true);
    let (_, supervised) = tokio::join!(relay.close(), supervisor);
    if let Err(e) = supervised {
        warn!(error = %e, "the opencode supervisor failed");
    }
    if code_expired {
        bail!("the pairing code expired before anyone approved this worker; start it again for a new code");
    }
    match exit {
        None => {
            info!("stopped");
            Ok(())
        }
        Some(Exit::NotApproved(status)) => bail!(pairing::refusal(status, &path)),
        Some(Exit::Refused(status, body)) => bail!(
            "the host refused this worker ({status}: {body}); delete {} and start it again to pair anew",
            path.display()
        ),
        Some(Exit::Closed) => Ok(()),
    }
}

/// Sends the agent's frames to the host, each serialised once, in order,
/// until the agent is gone.
async fn to_host(mut frames: mpsc::UnboundedReceiver<ClientFrame>, relay: Relay) {
    while let Some(frame) = frames.recv().await {
        relay.send(frame.to_json());
    }
}

/// How much later than the host's `expires_at` a pending worker gives up
/// (the two clocks may be apart).
const CLOCK_SLACK: Duration = Duration::from_secs(2);

/// Resolves once a pending worker's code has expired (`until`, the host's
/// `expires_at`, plus `slack`) unless it was approved first; never for a
/// worker that is not pending. The host forgets a worker whose code
/// expired, so waiting longer would be waiting for nothing.
async fn unapproved_at(until: Option<i64>, slack: Duration, mut approved: watch::Receiver<bool>) {
    let Some(until) = until else {
        return std::future::pending().await;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let left = Duration::from_millis(u64::try_from(until - now).unwrap_or(0)) + slack;
    tokio::select! {
        () = tokio::time::sleep(left) => {}
        _ = approved.wait_for(|approved| *approved) => {}
    }
    if *approved.borrow() {
        std::future::pending::<()>().await;
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (`kill`, systemd, a container's
/// stop): what [`run_until`] should stop on in a process of its own.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => info!("interrupted; stopping"),
        () = terminate => info!("terminated; stopping"),
    }
}

/// Resolves once `stop` is set (or its sender is gone: nobody is left to
/// run opencode for).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Installs opencode if it was not found, then keeps one `opencode serve`
/// running, restarting it when it dies, until `stop` is set: then it stops
/// the one running and returns. Each step is reported to the agent loop
/// (installing, starting, up, down with why), which tells the host.
#[allow(clippy::too_many_arguments)]
async fn supervise(
    binary: Option<PathBuf>,
    cache_dir: PathBuf,
    workdir: PathBuf,
    state_dir: PathBuf,
    instance: String,
    access: Option<process::FixedAccess>,
    inputs: mpsc::UnboundedSender<Input>,
    mut stop: watch::Receiver<bool>,
) {
    let binary = match binary {
        Some(binary) => binary,
        None => match install(&cache_dir, &inputs, &mut stop).await {
            Some(binary) => binary,
            None => return,
        },
    };
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        if inputs.send(Input::OpencodeStarting).is_err() {
            return;
        }
        // A start cut short drops what it started, which kills it.
        let child = tokio::select! {
            child = OpencodeProcess::start(&binary, &workdir, &state_dir, &instance, access.as_ref()) => child,
            () = stopped(&mut stop) => return,
        };
        let down = match child {
            Ok(mut child) => match OpencodeClient::new(&child.base_url, child.password.expose()) {
                Ok(client) => {
                    let pump = tokio::spawn(pump_events(client.clone(), inputs.clone()));
                    let models = tokio::select! {
                        models = client.models() => models,
                        () = stopped(&mut stop) => {
                            pump.abort();
                            child.stop().await;
                            return;
                        }
                    };
                    let models = models.unwrap_or_else(|e| {
                        warn!(error = %e, "could not read opencode's models");
                        Default::default()
                    });
                    if inputs.send(Input::OpencodeUp(client, models)).is_err() {
                        pump.abort();
                        child.stop().await;
                        return;
                    }
                    let status = tokio::select! {
                        status = child.wait() => status,
                        () = stopped(&mut stop) => {
                            pump.abort();
                            info!("stopping opencode");
                            child.stop().await;
                            return;
                        }
                    };
                    pump.abort();
                    warn!(?status, "opencode exited; restarting it");
                    format!("{}; restarting it", how_it_ended(&status))
                }
                Err(e) => {
                    error!(error = %e, "cannot talk to opencode");
                    child.stop().await;
                    format!("the worker cannot talk to it ({e}); restarting it")
                }
            },
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot start opencode");
                format!("could not start: {e:#}; trying again")
            }
        };
        if inputs.send(Input::OpencodeDown(down)).is_err() {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        let pause = backoff(attempt, Duration::from_millis(500), Duration::from_secs(30));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(&mut stop) => return,
        }
        attempt = attempt.saturating_add(1);
    }
}

/// Installs opencode into the cache, trying again (npm may have had no
/// network) until it is there; `None` if the worker stops first.
async fn install(
    cache_dir: &std::path::Path,
    inputs: &mpsc::UnboundedSender<Input>,
    stop: &mut watch::Receiver<bool>,
) -> Option<PathBuf> {
    let mut attempt = 0u32;
    loop {
        inputs.send(Input::OpencodeInstalling).ok()?;
        let installed = tokio::select! {
            installed = process::install(cache_dir) => installed,
            () = stopped(stop) => return None,
        };
        match installed {
            Ok(binary) => return Some(binary),
            Err(e) => {
                error!(error = %format!("{e:#}"), "cannot install opencode");
                inputs
                    .send(Input::OpencodeDown(format!("could not be installed: {e:#}; trying again")))
                    .ok()?;
            }
        }
        let pause = backoff(attempt, Duration::from_secs(5), Duration::from_secs(300));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stopped(stop) => return None,
        }
        attempt = attempt.saturating_add(1);
    }
}

/// How a child ended, for people: "exited with status 1", "killed by signal 9".
fn how_it_ended(status: &std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "stopped".into(),
        },
        Err(e) => format!("stopped ({e})"),
    }
}

/// opencode's event stream, reconnected when it drops or goes silent (it
/// sends a heartbeat every 10 s).
async fn pump_events(client: OpencodeClient, inputs: mpsc::UnboundedSender<Input>) {
    loop {
        match client.events().await {
            Ok(stream) => {
                let mut stream = Box::pin(stream);
                if inputs.send(Input::EventsUp).is_err() {
                    return;
                }
                loop {
                    match tokio::time::timeout(Duration::from_secs(30), stream.next()).await {
                        Ok(Some(Ok(event))) => {
                            if inputs.send(Input::Event(event)).is_err() {
                                return;
                            }
                        }
                        Ok(Some(Err(e))) => {
                            warn!(error = %e, "opencode event stream failed");
                            break;
                        }
                        Ok(None) => break,
                        Err(_) => {
                            warn!("opencode event stream went silent");
                            break;
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot open opencode's event stream"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// A pending worker gives up once its code has expired (plus the slack),
    /// unless it was approved first; a worker that was never pending waits
    /// for nothing.
    #[tokio::test]
    async fn an_unapproved_worker_gives_up_when_its_code_expires() {
        let slack = Duration::from_millis(100);
        let (_approved_tx, approved) = watch::channel(false);
        let started = std::time::Instant::now();
        unapproved_at(Some(now_ms() + 300), slack, approved).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "{waited:?}");

        let (approved_tx, approved) = watch::channel(false);
        let wait = tokio::spawn(unapproved_at(Some(now_ms() + 300), slack, approved));
        approved_tx.send_replace(true);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!wait.is_finished(), "approved in time: it keeps running");
        wait.abort();

        let (_tx, approved) = watch::channel(true);
        let never = tokio::time::timeout(Duration::from_millis(300), unapproved_at(None, slack, approved)).await;
        assert!(never.is_err(), "not pending: never");
    }
}
