//! The worker as a whole: pairing, the relay, the opencode supervisor and
//! the agent loop. Used by the `tether-worker` binary and by `tether up`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::StreamExt;
use tether_domain::auth::Secret;
use tether_domain::model::WorkerStatus;
use tether_domain::protocol::PairRequest;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::agent::{Agent, Exit, Input, Profile};
use crate::opencode::{process, OpencodeClient, OpencodeProcess};
use crate::pairing::{self, Endpoints};
use crate::relay::{backoff, Relay, RelayConfig};

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
    /// A credential file to use instead of the per-host one in `config_dir`.
    pub credential_file: Option<PathBuf>,
    /// A fixed port and password for opencode (for benchmarks).
    pub opencode_access: Option<process::FixedAccess>,
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
            credential_file: None,
            opencode_access: None,
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
    let _ = rustls::crypto::ring::default_provider().install_default();
    let workdir = config
        .workdir
        .canonicalize()
        .with_context(|| format!("working directory {}", config.workdir.display()))?;
    let endpoints = Endpoints::from_server(&config.server)?;
    let path = config.credential_path();
    let stored = pairing::load_or_create(&path, &config.server, &workdir)?;
    let credential = Secret::from_client(stored.credential.clone()).context("the credential file is empty")?;

    let request = PairRequest {
        machine: config.machine.clone(),
        name: Some(config.display_name()),
        workdir: workdir.display().to_string(),
    };
    let paired = pairing::request_pairing(&endpoints, &credential, &request).await?;
    match paired.status {
        WorkerStatus::Approved => info!(worker_id = %paired.worker_id, "paired"),
        WorkerStatus::Pending => {
            if let Some(code) = &paired.code {
                pairing::print_pending(&endpoints, code);
            }
        }
        status => bail!(pairing::refusal(status, &path)),
    }
    if stored.worker_id.as_deref() != Some(paired.worker_id.as_str()) {
        let mut stored = stored;
        stored.worker_id = Some(paired.worker_id.to_string());
        pairing::save(&path, &stored)?;
    }

    let binary = process::locate(config.opencode.as_deref(), &config.cache_dir).await?;
    let (inputs_tx, inputs_rx) = mpsc::unbounded_channel();
    let (relay, mut relay_events) = Relay::start(RelayConfig {
        url: endpoints.websocket.clone(),
        credential,
        heartbeat: config.heartbeat,
        backoff_min: Duration::from_millis(500),
        backoff_max: Duration::from_secs(30),
    });
    let forward = inputs_tx.clone();
    tokio::spawn(async move {
        while let Some(event) = relay_events.recv().await {
            if forward.send(Input::Relay(event)).is_err() {
                return;
            }
        }
    });
    let supervisor = tokio::spawn(supervise(
        binary,
        workdir.clone(),
        config.state_dir.clone(),
        config.opencode_access.clone(),
        inputs_tx.clone(),
    ));

    let profile = Profile {
        machine: config.machine.clone(),
        name: config.display_name(),
        workdir: workdir.display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let exit = Agent::new(relay, inputs_tx, profile).run(inputs_rx).await;
    supervisor.abort();
    match exit {
        Exit::NotApproved(status) => bail!(pairing::refusal(status, &path)),
        Exit::Refused(status, body) => bail!(
            "the host refused this worker ({status}: {body}); delete {} and start it again to pair anew",
            path.display()
        ),
        Exit::Closed => Ok(()),
    }
}

/// Keeps one `opencode serve` running, restarting it when it dies.
async fn supervise(
    binary: PathBuf,
    workdir: PathBuf,
    state_dir: PathBuf,
    access: Option<process::FixedAccess>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        match OpencodeProcess::start(&binary, &workdir, &state_dir, access.as_ref()).await {
            Ok(mut child) => match OpencodeClient::new(&child.base_url, child.password.expose()) {
                Ok(client) => {
                    let pump = tokio::spawn(pump_events(client.clone(), inputs.clone()));
                    let models = match client.models().await {
                        Ok(m) => m,
                        Err(e) => {
                            warn!(error = %e, "could not read opencode's models");
                            Default::default()
                        }
                    };
                    if inputs.send(Input::OpencodeUp(client, models)).is_err() {
                        child.stop().await;
                        return;
                    }
                    let status = child.wait().await;
                    pump.abort();
                    warn!(?status, "opencode exited; restarting it");
                    if inputs.send(Input::OpencodeDown).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    error!(error = %e, "cannot talk to opencode");
                    child.stop().await;
                }
            },
            Err(e) => error!(error = %format!("{e:#}"), "cannot start opencode"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        tokio::time::sleep(backoff(attempt, Duration::from_millis(500), Duration::from_secs(30))).await;
        attempt = attempt.saturating_add(1);
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
