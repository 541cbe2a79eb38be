//! What the agent scenarios need beyond the protocol helpers: the scripted
//! fake LLM, a working directory whose `opencode.json` points opencode at it,
//! isolated opencode state, a worker process, and a TCP proxy whose
//! connections a test can cut.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{Host, Mode, Server, UpLaunch};

/// The opencode binary the suite runs: `TETHER_TEST_OPENCODE`, or where
/// `scripts/install-opencode` puts it.
pub fn opencode_binary() -> PathBuf {
    let path = std::env::var_os("TETHER_TEST_OPENCODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/tether/opencode/node_modules/.bin/opencode")
        });
    assert!(
        path.is_file(),
        "opencode is not installed at {}: run scripts/install-opencode (scripts/test does)",
        path.display()
    );
    path
}

/// A scripted fake LLM, a project directory for opencode, and opencode's own
/// state kept apart from the user's.
pub struct Agentic {
    /// The host whose `up` and `worker` commands this machine runs.
    host: Host,
    /// Serves as long as the scenario holds it.
    llm: tether_fakellm::FakeLlm,
    root: tempfile::TempDir,
}

impl Agentic {
    pub async fn new(host: Host) -> Self {
        let llm = tether_fakellm::FakeLlm::start(tether_fakellm::Config::default())
            .await
            .expect("start the fake LLM");
        let root = tempfile::Builder::new()
            .prefix("tether-agent-")
            .tempdir()
            .expect("temporary directory");
        let work = root.path().join("project");
        std::fs::create_dir_all(&work).expect("project directory");
        let config = json!({
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                "fake": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "Fake",
                    "options": { "baseURL": llm.base_url(), "apiKey": "test" },
                    "models": {
                        "fake-model": {
                            "name": "Fake Model",
                            "tool_call": true,
                            "reasoning": true,
                            "limit": { "context": 128000, "output": 8192 }
                        },
                        "other-model": {
                            "name": "Other Fake Model",
                            "tool_call": true,
                            "limit": { "context": 64000, "output": 4096 }
                        }
                    }
                }
            },
            "model": "fake/fake-model",
            "permission": { "bash": "ask" }
        });
        std::fs::write(work.join("opencode.json"), serde_json::to_vec_pretty(&config).expect("json"))
            .expect("write opencode.json");
        for d in ["data", "config", "state"] {
            std::fs::create_dir_all(root.path().join("xdg").join(d)).expect("xdg directory");
        }
        Self {
            host,
            llm,
            root,
        }
    }

    /// The bodies of the chat-completion requests the fake LLM got so far.
    pub fn completions(&self) -> Vec<serde_json::Value> {
        self.llm.completions()
    }

    pub fn workdir(&self) -> PathBuf {
        self.root.path().join("project")
    }

    /// Environment for processes that run opencode: its data, config and
    /// state here; its download cache shared between tests (opencode fetches
    /// the provider package from npm on first use).
    pub fn env(&self) -> Vec<(String, String)> {
        let xdg = self.root.path().join("xdg");
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
        vec![
            ("XDG_DATA_HOME".into(), xdg.join("data").display().to_string()),
            ("XDG_CONFIG_HOME".into(), xdg.join("config").display().to_string()),
            ("XDG_STATE_HOME".into(), xdg.join("state").display().to_string()),
            (
                "XDG_CACHE_HOME".into(),
                home.join(".cache/tether/test-opencode-cache").display().to_string(),
            ),
            ("OPENCODE_DISABLE_AUTOUPDATE".into(), "1".into()),
        ]
    }

    /// The pid of the opencode child this scenario's one worker started
    /// (from its pid file); `None` unless there is exactly one.
    pub fn opencode_pid(&self) -> Option<u32> {
        match self.opencode_pids().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The pids of the opencode children of every worker on this "machine"
    /// (they share its state directory; each keeps its own pid file,
    /// `opencode-<worker>.pid`: a pid and its start time).
    pub fn opencode_pids(&self) -> Vec<u32> {
        let dir = self.root.path().join("xdg/state/tether");
        let mut pids: Vec<u32> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("opencode-") && name.ends_with(".pid")
            })
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|text| text.split_whitespace().next()?.parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Another project on the same machine, set up as the first one.
    pub fn project(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).expect("project directory");
        std::fs::copy(self.workdir().join("opencode.json"), dir.join("opencode.json"))
            .expect("copy opencode.json");
        dir
    }

    /// `tether up` here: host, worker and opencode.
    pub async fn up(&self, mode: Mode) -> Server {
        Server::start_up(
            self.host,
            mode,
            UpLaunch {
                workdir: self.workdir(),
                opencode: opencode_binary(),
                env: self.env(),
            },
            &["--worker-heartbeat-secs", "5"],
        )
        .await
    }

    /// A `tether worker` process for `server_url` in this project.
    pub fn worker(&self, server_url: &str) -> WorkerProcess {
        WorkerProcess::start(self.host, server_url, &self.workdir(), &self.env(), self.root.path(), &["--heartbeat-secs", "5"])
    }

    /// A `tether worker` process with the default heartbeat and timeouts.
    pub fn worker_with_defaults(&self, server_url: &str) -> WorkerProcess {
        WorkerProcess::start(self.host, server_url, &self.workdir(), &self.env(), self.root.path(), &[])
    }

    /// A `tether worker` process for `server_url` in another project of
    /// this machine (see [`Self::project`]).
    pub fn worker_in(&self, server_url: &str, project: &Path) -> WorkerProcess {
        WorkerProcess::start(self.host, server_url, project, &self.env(), self.root.path(), &["--heartbeat-secs", "5"])
    }
}

/// A `tether worker` process; SIGKILLed on drop.
pub struct WorkerProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl WorkerProcess {
    fn start(host: Host, server_url: &str, workdir: &Path, env: &[(String, String)], root: &Path, extra: &[&str]) -> Self {
        let n = std::fs::read_dir(root).map(|d| d.count()).unwrap_or(0);
        let log = root.join(format!("worker-{n}.log"));
        let file = std::fs::File::create(&log).expect("worker log");
        let mut cmd = host.command();
        cmd.arg("worker")
            .arg("--server")
            .arg(server_url)
            .arg("--dir")
            .arg(workdir)
            .arg("--opencode")
            .arg(opencode_binary())
            .arg("--config-dir")
            .arg(root.join("worker-config"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log")))
            .stderr(Stdio::from(file));
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd.env("NO_COLOR", "1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info,tether_worker=debug");
        }
        Self {
            child: Some(cmd.spawn().expect("spawn `tether worker`")),
            log,
        }
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- worker log -----\n{}", self.log());
        }
    }
}

/// Whether a process exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to `upstream`; `cut()` drops every connection through it,
/// as a network failure would; `freeze()` stops forwarding on them without
/// closing anything, as a network that drops packets without a reset does
/// (later connections pass as usual).
pub struct Proxy {
    pub addr: SocketAddr,
    conns: Links,
    _accept: JoinHandle<()>,
}

/// The proxy's connections: each one's task, and what freezes it.
type Links = Arc<Mutex<Vec<(JoinHandle<()>, Arc<tokio::sync::Notify>)>>>;

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let conns: Links = Arc::default();
        let tracked = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let freeze = Arc::new(tokio::sync::Notify::new());
                let frozen = freeze.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = frozen.notified() => {
                            // Hold both sockets open, forwarding nothing.
                            std::future::pending::<()>().await;
                        }
                    }
                });
                tracked.lock().expect("proxy lock").push((task, freeze));
            }
        });
        Self {
            addr,
            conns,
            _accept: accept,
        }
    }

    /// Drops every open connection (both ends see it closed).
    pub fn cut(&self) {
        for (task, _) in self.conns.lock().expect("proxy lock").drain(..) {
            task.abort();
        }
    }

    /// Stops forwarding on every open connection, closing none of them.
    pub fn freeze(&self) {
        for (_, freeze) in self.conns.lock().expect("proxy lock").iter() {
            freeze.notify_one();
        }
    }
}
