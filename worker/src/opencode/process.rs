//! The `opencode serve` child: found or installed, started on loopback with a
//! random port and password, in the worker's directory, and never left
//! behind: it dies with the worker (`PR_SET_PDEATHSIG`, also on SIGKILL),
//! lives in its own process group, which goes with it however the worker
//! lets go of it (a stop, an error, a start cut short), and a stale one from
//! a killed worker is stopped on the next start.
//!
//! Several workers run on one machine (one per project, of one user or
//! several), so each keeps its own pid file (named by
//! [`crate::pairing::instance_key`]), and a pid from it is signalled only
//! if that process still is the opencode this worker started: same start
//! time, same working directory, an opencode command line. A reused pid, or
//! another worker's opencode, is never touched.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use tether_domain::auth::Secret;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tracing::{info, warn};

/// The opencode release line this worker speaks.
pub const OPENCODE_PACKAGE: &str = "opencode-ai@1.18";

/// A fixed port and password for opencode, instead of random ones.
#[derive(Clone, Debug)]
pub struct FixedAccess {
    pub port: u16,
    pub password: Secret,
}

/// A running `opencode serve`.
pub struct OpencodeProcess {
    child: Child,
    pub base_url: String,
    pub password: Secret,
    pid_file: PathBuf,
}

impl OpencodeProcess {
    /// Starts `opencode serve` in `workdir`. `state_dir` keeps the child's
    /// identity in a file named by `instance` (this worker's
    /// [`crate::pairing::instance_key`]) so a later start of the same worker
    /// can stop one a killed worker left behind.
    pub async fn start(
        binary: &Path,
        workdir: &Path,
        state_dir: &Path,
        instance: &str,
        fixed: Option<&FixedAccess>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let pid_file = state_dir.join(format!("opencode-{instance}.pid"));
        stop_stale(&pid_file, workdir);
        // Random unless fixed (benchmarks read opencode's own event stream
        // beside the worker); the password never leaves this process.
        let password = fixed.map(|f| f.password.clone()).unwrap_or_else(|| Secret::generate(""));
        let port = fixed.map(|f| f.port.to_string()).unwrap_or_else(|| "0".into());
        let mut command = Command::new(binary);
        command
            .args(["serve", "--hostname", "127.0.0.1", "--port", &port])
            .current_dir(workdir)
            .env("OPENCODE_SERVER_PASSWORD", password.expose())
            .env_remove("OPENCODE_SERVER_USERNAME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        // Owned from here on, so an error below or a caller that gives up
        // waiting (a shutdown) stops it: see the `Drop`.
        let mut process = Self {
            child,
            base_url: String::new(),
            password,
            pid_file,
        };
        if let Some(pid) = process.child.id() {
            if let Some(identity) = Identity::of(pid) {
                let _ = std::fs::write(&process.pid_file, identity.to_line());
            }
        }
        let stdout = process.child.stdout.take().context("opencode's stdout")?;
        let stderr = process.child.stderr.take().context("opencode's stderr")?;
        tokio::spawn(log_lines(BufReader::new(stderr), "stderr"));
        let mut lines = BufReader::new(stdout).lines();
        let base_url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Ok::<_, std::io::Error>(Some(url.trim().to_owned()));
                }
                tracing::debug!(target: "opencode", line = %line);
            }
            Ok(None)
        })
        .await
        .context("opencode did not start within 60 s")?
        .context("reading opencode's output")?;
        let Some(base_url) = base_url else {
            let status = process.child.wait().await.ok();
            bail!("opencode exited before listening ({status:?}); run `opencode serve` by hand to see why");
        };
        if !base_url.starts_with("http://127.0.0.1:") {
            bail!("opencode listens on {base_url}, not on loopback");
        }
        tokio::spawn(log_lines(lines.into_inner(), "stdout"));
        info!(url = %base_url, "opencode is running");
        process.base_url = base_url;
        Ok(process)
    }

    /// Resolves when the child exits.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the child (its whole process group) and waits for it to end.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            kill_group(pid);
        }
        let _ = self.child.kill().await;
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

impl Drop for OpencodeProcess {
    /// `kill_on_drop` reaches the child alone; opencode's own children are
    /// in its group. `id()` is `None` once the child was reaped, so a pid
    /// the kernel may have reused is never signalled.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            kill_group(pid);
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

async fn log_lines<R: tokio::io::AsyncBufRead + Unpin>(reader: R, stream: &'static str) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "opencode", stream, line = %line);
    }
}

/// A process as the pid file records it: its pid and its start time (in
/// clock ticks since boot, `/proc/PID/stat`'s 22nd field), which together
/// name one process for the life of the machine even when pids are reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    pid: u32,
    start_ticks: u64,
}

impl Identity {
    /// The live process `pid`, if there is one.
    fn of(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces and parentheses: count
        // fields from the last ')'. Field 3 is the first after it.
        let after = stat.rsplit_once(')')?.1;
        let start_ticks = after.split_whitespace().nth(22 - 3)?.parse().ok()?;
        Some(Self { pid, start_ticks })
    }

    fn to_line(self) -> String {
        format!("{} {}\n", self.pid, self.start_ticks)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut fields = text.split_whitespace();
        let pid = fields.next()?.parse().ok()?;
        let start_ticks = fields.next()?.parse().ok()?;
        Some(Self { pid, start_ticks })
    }
}

/// Stops an opencode this worker's killed predecessor left running, if the
/// pid file's process is still exactly that one: the same process (pid and
/// start time), in `workdir`, running opencode. Anything else is left alone.
fn stop_stale(pid_file: &Path, workdir: &Path) {
    let Ok(text) = std::fs::read_to_string(pid_file) else { return };
    let _ = std::fs::remove_file(pid_file);
    let Some(recorded) = Identity::parse(&text) else { return };
    if Identity::of(recorded.pid) != Some(recorded) {
        return;
    }
    let pid = recorded.pid;
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    let same_dir = match (cwd, workdir.canonicalize().ok()) {
        (Some(cwd), Some(dir)) => cwd == dir,
        _ => false,
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if same_dir && String::from_utf8_lossy(&cmdline).contains("opencode") {
        warn!(pid, "stopping an opencode left by an earlier run of this worker");
        kill_group(pid);
    }
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a negative pid signals a process group; it has
    // no memory effects on this process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Asks the kernel to kill the child when this process dies, however it dies.
fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only
    // calls prctl(2) and getppid(2), both async-signal-safe.
    #[allow(unsafe_code)]
    unsafe {
        let parent = libc::getpid();
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the worker exited while starting opencode"));
            }
            Ok(())
        });
    }
}

/// Finds opencode: an explicit path, then `PATH`, then the worker's cache.
/// `None` when it is nowhere ([`install`] puts it in the cache); an error
/// only for an explicit path that is no file.
pub fn find(explicit: Option<&Path>, cache_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(Some(path.to_owned()));
        }
        bail!("--opencode {} is not a file", path.display());
    }
    if let Some(found) = on_path("opencode") {
        return Ok(Some(found));
    }
    let cached = cached_binary(cache_dir);
    Ok(cached.is_file().then_some(cached))
}

fn cached_binary(cache_dir: &Path) -> PathBuf {
    cache_dir.join("node_modules/.bin/opencode")
}

/// Installs opencode from npm into the worker's cache; returns the binary.
pub async fn install(cache_dir: &Path) -> anyhow::Result<PathBuf> {
    let cached = cached_binary(cache_dir);
    let Some(npm) = on_path("npm") else {
        bail!(
            "opencode is not installed and npm is missing: install Node.js (with npm), \
             or opencode itself (`npm install -g {OPENCODE_PACKAGE}`), or pass --opencode PATH"
        );
    };
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("creating {}", cache_dir.display()))?;
    eprintln!(
        "Installing opencode ({OPENCODE_PACKAGE}) into {} — this happens once…",
        cache_dir.display()
    );
    let status = Command::new(npm)
        .args(["install", "--no-audit", "--no-fund", "--loglevel", "error", "--prefix"])
        .arg(cache_dir)
        .arg(OPENCODE_PACKAGE)
        // npm's "new version available" notice is not the user's business here.
        .env("NPM_CONFIG_UPDATE_NOTIFIER", "false")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("running npm")?;
    if !status.success() || !cached.is_file() {
        bail!("`npm install {OPENCODE_PACKAGE}` failed ({status}); the worker's output shows why");
    }
    eprintln!("Installed opencode.");
    Ok(cached)
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose command line says opencode, in its own group, in `dir`.
    fn fake_opencode(dir: &Path) -> std::process::Child {
        use std::os::unix::process::CommandExt as _;
        let child = std::process::Command::new("sh")
            // Two commands, so the shell does not exec into `sleep` (its
            // command line must keep saying opencode).
            .args(["-c", "sleep 30; true", "opencode"])
            .current_dir(dir)
            .process_group(0)
            .spawn()
            .expect("spawn");
        // Until it has exec'd, /proc shows the test binary's command line.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.id())).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("opencode") {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child
    }

    /// Still running a moment later.
    fn alive(child: &mut std::process::Child) -> bool {
        std::thread::sleep(Duration::from_millis(200));
        child.try_wait().expect("try_wait").is_none()
    }

    /// Ended within a few seconds (a busy machine may take a while to
    /// deliver a signal and reap the process).
    fn ended(child: &mut std::process::Child) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_stale_opencode_of_this_worker_is_stopped() {
        let dir = tempfile::tempdir().expect("dir");
        let mut child = fake_opencode(dir.path());
        let pid_file = dir.path().join("opencode-a.pid");
        let identity = Identity::of(child.id()).expect("identity");
        std::fs::write(&pid_file, identity.to_line()).expect("write");
        stop_stale(&pid_file, dir.path());
        assert!(ended(&mut child), "the recorded opencode is stopped");
        assert!(!pid_file.exists());
    }

    #[test]
    fn another_workers_or_a_reused_pid_is_left_alone() {
        let mine = tempfile::tempdir().expect("dir");
        let theirs = tempfile::tempdir().expect("dir");
        let mut other = fake_opencode(theirs.path());
        let identity = Identity::of(other.id()).expect("identity");
        let pid_file = mine.path().join("opencode-a.pid");
        // Another directory: another worker's opencode.
        std::fs::write(&pid_file, identity.to_line()).expect("write");
        stop_stale(&pid_file, mine.path());
        assert!(alive(&mut other), "another worker's opencode lives");
        // The same pid with another start time: the pid was reused.
        let reused = Identity {
            start_ticks: identity.start_ticks + 1,
            ..identity
        };
        std::fs::write(&pid_file, reused.to_line()).expect("write");
        stop_stale(&pid_file, theirs.path());
        assert!(alive(&mut other), "a reused pid is never signalled");
        let _ = other.kill();
        let _ = other.wait();
    }

    #[test]
    fn identities_round_trip() {
        let me = Identity::of(std::process::id()).expect("this process");
        assert_eq!(Identity::parse(&me.to_line()), Some(me));
        assert_eq!(Identity::parse("12"), None);
    }
}
