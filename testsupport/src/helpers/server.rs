//! The server process: `tether serve` (or `tether up`) on a fresh data
//! directory, and users made with `tether user add`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use tether_domain::protocol::TicketData;
use tokio::sync::oneshot;

use super::{http_post, Host, Mode, WAIT};

/// A `tether serve` process on its own temporary data directory. Killed
/// (SIGKILL) when dropped; its log is printed when the test fails.
pub struct Server {
    host: Host,
    child: Option<Child>,
    pub addr: SocketAddr,
    root: tempfile::TempDir,
    mode: Mode,
    extra: Vec<String>,
    generation: u32,
    up: Option<UpLaunch>,
}

/// `tether up` instead of `tether serve`: the host with this machine's
/// worker, driving real opencode in `workdir`.
#[derive(Clone, Debug)]
pub struct UpLaunch {
    pub workdir: PathBuf,
    pub opencode: PathBuf,
    /// Extra environment (opencode's XDG directories, say).
    pub env: Vec<(String, String)>,
}

impl Server {
    /// A server on a fresh data directory.
    pub async fn start(host: Host, mode: Mode) -> Self {
        Self::start_with(host, mode, &[]).await
    }

    /// A server on a fresh data directory, with extra `serve` flags.
    pub async fn start_with(host: Host, mode: Mode, extra: &[&str]) -> Self {
        Self::launch(host, mode, extra, None).await
    }

    /// `tether up` on a fresh data directory, with extra flags.
    pub async fn start_up(host: Host, mode: Mode, up: UpLaunch, extra: &[&str]) -> Self {
        Self::launch(host, mode, extra, Some(up)).await
    }

    async fn launch(host: Host, mode: Mode, extra: &[&str], up: Option<UpLaunch>) -> Self {
        let root = tempfile::Builder::new()
            .prefix(if up.is_some() {
                "tether-up-"
            } else {
                "tether-e2e-"
            })
            .tempdir()
            .expect("create a temporary directory");
        std::fs::create_dir_all(root.path().join("data")).expect("create the data directory");
        let mut server = Self {
            host,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root,
            mode,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            generation: 0,
            up,
        };
        server.spawn().await;
        server
    }

    /// The host this server is a process of.
    pub fn host(&self) -> Host {
        self.host
    }

    /// The owner `tether up` made on its first start (its secret is printed once).
    pub fn owner(&self) -> User {
        let stdout =
            std::fs::read_to_string(self.root.path().join("server-0.stdout")).unwrap_or_default();
        let secret = stdout
            .split_whitespace()
            .find(|t| t.starts_with("tsk_"))
            .unwrap_or_else(|| panic!("`tether up` printed no owner secret:\n{stdout}"))
            .to_owned();
        User {
            name: "owner".into(),
            secret,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_path(&self, generation: u32) -> PathBuf {
        self.root.path().join(format!("server-{generation}.log"))
    }

    async fn spawn(&mut self) {
        let log_path = self.log_path(self.generation);
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut cmd = self.host.command();
        match &self.up {
            None => {
                cmd.arg("serve").arg("--bind").arg("127.0.0.1:0");
            }
            Some(up) => {
                cmd.arg("up")
                    .arg("--port")
                    .arg("0")
                    .arg("--dir")
                    .arg(&up.workdir)
                    .arg("--opencode")
                    .arg(&up.opencode);
            }
        }
        cmd.arg("--data-dir").arg(self.data_dir());
        if self.mode == Mode::Concurrent {
            cmd.arg("--concurrent-frames");
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "debug");
        }
        if let Some(up) = &self.up {
            cmd.envs(up.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        // The log is a file, printed when a test fails: plain text reads best.
        cmd.env("NO_COLOR", "1");
        let mut child = cmd.spawn().expect("spawn `tether serve`");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = oneshot::channel::<Result<SocketAddr, String>>();
        let stdout_log = self
            .root
            .path()
            .join(format!("server-{}.stdout", self.generation));
        std::thread::spawn(move || read_stdout(stdout, tx, stdout_log));
        self.child = Some(child);
        let addr = match tokio::time::timeout(WAIT, rx).await {
            Ok(Ok(Ok(addr))) => addr,
            Ok(Ok(Err(why))) => panic!("`tether serve` did not start: {why}\n{}", self.logs()),
            Ok(Err(_)) => panic!("`tether serve` stdout reader vanished\n{}", self.logs()),
            Err(_) => panic!(
                "`tether serve` printed no `tether listening on http://…` line within {WAIT:?}\n{}",
                self.logs()
            ),
        };
        self.addr = addr;
    }

    /// Kills the process with SIGKILL and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL, then a new process on the same data directory (on a new port).
    pub async fn kill_and_restart(&mut self) {
        self.kill();
        self.generation += 1;
        self.spawn().await;
    }

    /// The logs of every process this server ran so far (the last 200 lines of each).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for generation in 0..=self.generation {
            for path in [
                self.log_path(generation),
                self.root.path().join(format!("server-{generation}.stdout")),
            ] {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(200);
                let _ = writeln!(
                    out,
                    "----- {} ({} lines) -----",
                    path.display(),
                    lines.len()
                );
                for line in &lines[start..] {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
        out
    }

    /// `tether user add NAME [--admin] --data-dir DIR`: the new user and its secret.
    pub async fn add_user(&self, name: &str) -> User {
        self.add_user_with(name, false).await
    }

    pub async fn add_user_with(&self, name: &str, admin: bool) -> User {
        let mut cmd = tokio::process::Command::from(self.host.command());
        cmd.arg("user").arg("add").arg(name);
        if admin {
            cmd.arg("--admin");
        }
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null());
        let out = tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("`tether user add {name}` did not finish within {WAIT:?}"))
            .expect("run `tether user add`");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "`tether user add {name}` failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        );
        let secret = stdout
            .split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ',' | ';'))
            .find(|t| t.starts_with("tsk_"))
            .unwrap_or_else(|| {
                panic!("`tether user add {name}` printed no `tsk_…` secret:\nstdout: {stdout}\nstderr: {stderr}")
            })
            .to_owned();
        User {
            name: name.to_owned(),
            secret,
        }
    }

    /// `tether user ARGS… --data-dir DIR` as a process (`reset NAME`,
    /// `remove NAME`, …): its output, whatever its exit status.
    pub async fn user_command(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::from(self.host.command());
        cmd.arg("user")
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .stdin(Stdio::null());
        tokio::time::timeout(WAIT, cmd.output())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "`tether user {}` did not finish within {WAIT:?}",
                    args.join(" ")
                )
            })
            .unwrap_or_else(|e| panic!("run `tether user {}`: {e}", args.join(" ")))
    }

    /// `POST /api/ticket` for a user; panics unless it succeeds.
    pub async fn ticket(&self, user: &User) -> TicketData {
        let res = http_post(self.addr, "/api/ticket", Some(&user.secret), None).await;
        assert_eq!(
            res.status, 200,
            "POST /api/ticket for {}: {res:?}",
            user.name
        );
        res.parse()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "===== server logs ({}) =====\n{}",
                self.root.path().display(),
                self.logs()
            );
        }
    }
}

fn read_stdout(
    stdout: std::process::ChildStdout,
    tx: oneshot::Sender<Result<SocketAddr, String>>,
    copy_to: PathBuf,
) {
    use std::io::Write as _;
    let mut copy = std::fs::File::create(copy_to).ok();
    let mut tx = Some(tx);
    let reader = BufReader::new(stdout);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(f) = copy.as_mut() {
            let _ = writeln!(f, "{line}");
        }
        let rest = line
            .split("listening on http://")
            .nth(1)
            .or_else(|| line.split("listening on https://").nth(1));
        if let Some(rest) = rest {
            let token = rest
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/');
            if let Some(tx) = tx.take() {
                let parsed = token
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("cannot parse the address in {line:?}: {e}"));
                let _ = tx.send(parsed);
            }
        }
    }
    if let Some(tx) = tx.take() {
        let _ = tx.send(Err("the process closed its stdout (exited?)".into()));
    }
}

/// A user made with `tether user add`.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub secret: String,
}
