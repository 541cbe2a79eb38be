//! The `tether-worker` binary as a person runs it: what it refuses at
//! startup, and how it ends on SIGTERM.
//!
//! For SIGTERM the worker must get as far as an open websocket, and the
//! honest minimal route there is the real one:
//!
//! - The worker asks the host to pair (`POST /api/pair`) on every start,
//!   even with a credential on disk, so the test host answers that request
//!   ("approved") as well as the websocket, on one plain 127.0.0.1 port.
//!   The credential file itself the worker makes on its first start, in a
//!   temporary `--config-dir`.
//! - The websocket opens independently of opencode, but the worker starts
//!   opencode too, and stopping it is half of what SIGTERM must do. So
//!   `--opencode` is a stub script that prints the line opencode prints when
//!   it listens, starts a grandchild in its process group, and waits. The
//!   worker's calls to that "opencode" fail (nothing listens), which it logs
//!   and retries; none of it touches the websocket.
//! - `HOME` and the XDG directories point into the test's temporary
//!   directory: the worker keeps opencode's pid under the state directory,
//!   and must neither read nor write the real one.
//!
//! The host answers every request frame `ok` and hands on what the worker
//! said, so a test can follow what the worker reports of its opencode:
//! without one it installs it with npm (a stub on the test's `PATH` that
//! "installs" the opencode stub), and says so before it starts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_tether-worker");

/// What the test host saw.
#[derive(Debug)]
enum Seen {
    Paired,
    Connected,
    /// The worker's close frame.
    Closed(Option<CloseFrame>),
    /// The connection ended (after a close frame or not).
    Ended,
}

/// A plain host on 127.0.0.1: approves any pairing, accepts websockets,
/// reports what comes over them and answers each request frame `ok`.
async fn host() -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let (port, seen, _frames) = host_with_frames().await;
    (port, seen)
}

/// [`host`], also handing on every request frame the worker sends.
async fn host_with_frames() -> (u16, mpsc::UnboundedReceiver<Seen>, mpsc::UnboundedReceiver<serde_json::Value>) {
    use futures_util::SinkExt as _;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let (frames_tx, frames_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (seen, frames) = (seen_tx.clone(), frames_tx.clone());
            tokio::spawn(async move {
                if is_post(&tcp).await {
                    answer_pairing(tcp).await;
                    let _ = seen.send(Seen::Paired);
                    return;
                }
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let _ = seen.send(Seen::Connected);
                while let Some(Ok(message)) = ws.next().await {
                    match message {
                        Message::Close(frame) => {
                            let _ = seen.send(Seen::Closed(frame));
                        }
                        Message::Text(text) => {
                            let Ok(frame) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                            let reply = serde_json::json!({"type": "reply", "id": frame["id"], "ok": true, "data": {}});
                            let _ = ws.send(Message::text(reply.to_string())).await;
                            let _ = frames.send(frame);
                        }
                        _ => {}
                    }
                }
                let _ = seen.send(Seen::Ended);
            });
        }
    });
    (port, seen_rx, frames_rx)
}

/// Whether the request waiting on `tcp` is a POST (pairing) rather than a
/// websocket upgrade, without taking it off the socket.
async fn is_post(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 4];
    loop {
        match tcp.peek(&mut buf).await {
            Ok(n) if n >= 4 => return &buf == b"POST",
            Ok(0) | Err(_) => return false,
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn answer_pairing(mut tcp: TcpStream) {
    // The head, then the body by its length.
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if bytes.len() >= end + 4 + length {
                break;
            }
        }
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let body = r#"{"worker_id":"wkr_sigterm_test","status":"approved","code":null,"expires_at":null}"#;
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tcp.write_all(response.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>, what: &str, log: &Path) -> Seen {
    match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
        Ok(Some(s)) => s,
        _ => panic!("the host did not see {what} in time; the worker's log:\n{}", read(log)),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A pid from a file the stub writes, once it is there.
async fn wait_for_pid(path: &Path, log: &Path) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(pid) = read(path).trim().parse() {
            return pid;
        }
        assert!(Instant::now() < deadline, "the opencode stub did not start; the worker's log:\n{}", read(log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether a process runs (a zombie does not: it only waits for a reaper,
/// which in a container may never come).
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // `pid (comm) S ...`: the state follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}

/// The worker's command with its homes in `root`.
fn worker(root: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("HOME", root)
        .env("XDG_CONFIG_HOME", root.join("config"))
        .env("XDG_CACHE_HOME", root.join("cache"))
        .env("XDG_STATE_HOME", root.join("state"))
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("TETHER_INSECURE")
        .env_remove("TETHER_CA_CERT")
        .env_remove("TETHER_SERVER")
        .stdin(Stdio::null());
    command
}

fn opencode_stub(root: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let stub = root.join("opencode");
    // Its pid and its grandchild's go to files in its working directory (the
    // worker's --dir). The grandchild shares its process group, and, unlike
    // the stub, dies with the worker only if the worker stops that group.
    std::fs::write(
        &stub,
        "#!/bin/sh\n\
         echo $$ > opencode.pid\n\
         sleep 300 &\n\
         echo $! > grandchild.pid\n\
         echo 'opencode server listening on http://127.0.0.1:9'\n\
         wait\n",
    )
    .expect("write the stub");
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod the stub");
    stub
}

/// Kills what a failed test would leave running.
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for pid in self.0.iter().filter(|pid| running(**pid)) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

#[tokio::test]
async fn sigterm_closes_the_websocket_normally_stops_opencode_and_exits_0() {
    stops_cleanly_on("TERM").await;
}

#[tokio::test]
async fn ctrl_c_does_the_same() {
    stops_cleanly_on("INT").await;
}

/// Starts the worker against the test host, sends it `signal` once it is
/// connected and opencode runs, and checks the way out.
async fn stops_cleanly_on(signal: &str) {
    let root = tempfile::tempdir().expect("tempdir");
    let workdir = root.path().join("project");
    std::fs::create_dir_all(&workdir).expect("workdir");
    let log = root.path().join("worker.log");
    let (port, mut seen) = host().await;

    let mut child = worker(root.path())
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .arg("--dir")
        .arg(&workdir)
        .arg("--config-dir")
        .arg(root.path().join("tether"))
        .arg("--opencode")
        .arg(opencode_stub(root.path()))
        .args(["--machine", "test-machine"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start tether-worker");
    let mut leftovers = Leftovers(vec![child.id()]);

    assert!(matches!(next_seen(&mut seen, "the pairing request", &log).await, Seen::Paired));
    assert!(matches!(next_seen(&mut seen, "the websocket", &log).await, Seen::Connected));
    let opencode = wait_for_pid(&workdir.join("opencode.pid"), &log).await;
    let grandchild = wait_for_pid(&workdir.join("grandchild.pid"), &log).await;
    leftovers.0.extend([opencode, grandchild]);
    assert!(running(opencode) && running(grandchild), "the stub runs");

    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());

    match next_seen(&mut seen, "a close frame", &log).await {
        Seen::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal, "{frame:?}"),
        other => panic!("expected a normal close frame, got {other:?}; the worker's log:\n{}", read(&log)),
    }
    assert!(matches!(next_seen(&mut seen, "the end of the connection", &log).await, Seen::Ended));

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the worker") {
            break status;
        }
        if Instant::now() > deadline {
            panic!("the worker did not exit after SIGTERM; its log:\n{}", read(&log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "exit status; the worker's log:\n{}", read(&log));
    assert!(!running(opencode), "opencode is stopped");
    assert!(!running(grandchild), "opencode's process group is stopped, not only opencode");
    // All gone: nothing for the guard to kill (their pids may be reused).
    leftovers.0.clear();
}

/// An `npm` for the test's `PATH`: its first run fails (as npm does with no
/// network), once the test has made `root/go`, so that the host has heard
/// the worker's hello first whatever the machine's load; later runs
/// "install" `opencode` (the stub) under `--prefix`. Each run appends its
/// arguments to `npm.log` beside it.
fn npm_stub(root: &Path, opencode: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("bin directory");
    let npm = bin.join("npm");
    let log = root.join("npm.log");
    std::fs::write(
        &npm,
        format!(
            "#!/bin/sh
             echo \"$@\" >> '{log}'
             if [ \"$(wc -l < '{log}')\" -le 1 ]; then
               i=0; while [ ! -e '{go}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
               echo 'npm error network' >&2; exit 1
             fi
             while [ $# -gt 0 ]; do [ \"$1\" = --prefix ] && prefix=$2; shift; done
             mkdir -p \"$prefix/node_modules/.bin\"
             cp '{opencode}' \"$prefix/node_modules/.bin/opencode\"
",
            log = log.display(),
            go = root.join("go").display(),
            opencode = opencode.display(),
        ),
    )
    .expect("write the npm stub");
    std::fs::set_permissions(&npm, std::fs::Permissions::from_mode(0o755)).expect("chmod the npm stub");
    bin
}

/// A worker with no opencode anywhere connects first, then installs it:
/// the host hears `installing` (in the hello), the failed attempt as `down`
/// with why, `installing` again, `starting`, and `ready` (in a hello with
/// the models), each report later than the one before.
#[tokio::test]
async fn a_worker_without_opencode_says_it_installs_it_then_starts_it() {
    let root = tempfile::tempdir().expect("tempdir");
    let workdir = root.path().join("project");
    std::fs::create_dir_all(&workdir).expect("workdir");
    let log = root.path().join("worker.log");
    let bin = npm_stub(root.path(), &opencode_stub(root.path()));
    let (port, mut seen, mut frames) = host_with_frames().await;

    let mut child = worker(root.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .args(["--server", &format!("http://127.0.0.1:{port}")])
        .arg("--dir")
        .arg(&workdir)
        .arg("--config-dir")
        .arg(root.path().join("tether"))
        .args(["--machine", "test-machine"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start tether-worker");
    let mut leftovers = Leftovers(vec![child.id()]);
    assert!(matches!(next_seen(&mut seen, "the pairing request", &log).await, Seen::Paired));

    // (state, reason, at) of each report, as the host heard them.
    let mut reports: Vec<(String, Option<String>, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reports.last().is_none_or(|r| r.0 != "ready") {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(left, frames.recv()).await {
            Ok(Some(frame)) => frame,
            _ => panic!("no ready after {reports:?}; the worker's log:\n{}", read(&log)),
        };
        let report = match frame["action"].as_str() {
            Some("worker_hello") => frame["agent"].clone(),
            Some("agent_state") => frame.clone(),
            _ => continue,
        };
        let state = report["state"].as_str().expect("a state").to_owned();
        let reason = report["reason"].as_str().map(str::to_owned);
        reports.push((state, reason, report["at"].as_i64().expect("a time")));
        // The hello is in: the first install may fail now.
        std::fs::write(root.path().join("go"), "").expect("let the first install fail");
    }
    let mut states: Vec<&str> = reports.iter().map(|r| r.0.as_str()).collect();
    states.dedup();
    assert_eq!(states, ["installing", "down", "installing", "starting", "ready"], "{reports:?}");
    assert_eq!(reports[0].0, "installing", "the first hello says it: {reports:?}");
    // A repeat (a hello after a reconnect) may say the last report again.
    assert!(reports.windows(2).all(|w| w[0].2 < w[1].2 || w[0] == w[1]), "each report is later: {reports:?}");
    let down = reports.iter().find(|r| r.0 == "down").and_then(|r| r.1.clone()).expect("a reason");
    assert!(down.starts_with("could not be installed: `npm install opencode-ai@1.18` failed"), "{down}");
    assert!(!down.contains('\n'));
    let npm_runs = read(&root.path().join("npm.log"));
    assert!(npm_runs.lines().all(|l| l.contains("--prefix") && l.ends_with("opencode-ai@1.18")), "{npm_runs}");
    assert!(root.path().join("cache/tether/opencode/node_modules/.bin/opencode").is_file());

    let opencode = wait_for_pid(&workdir.join("opencode.pid"), &log).await;
    let grandchild = wait_for_pid(&workdir.join("grandchild.pid"), &log).await;
    leftovers.0.extend([opencode, grandchild]);
    assert!(running(opencode), "the installed opencode runs");

    let stopped = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("run kill");
    assert!(stopped.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().expect("wait for the worker").is_none() {
        assert!(Instant::now() < deadline, "the worker did not exit; its log:\n{}", read(&log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the worker to its end, which must come quickly (before any
/// connection could time out), and returns its exit code and stderr.
fn run_to_failure(command: &mut Command) -> (Option<i32>, String) {
    let started = Instant::now();
    let output = command.output().expect("run tether-worker");
    assert!(started.elapsed() < Duration::from_secs(10), "it stopped at startup");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_plain_remote_host_is_refused_at_startup() {
    let root = tempfile::tempdir().expect("tempdir");
    // 192.0.2.1 (TEST-NET-1) answers nobody: a connection attempt would hang
    // until its timeout, so a quick exit shows none was made.
    let (code, stderr) = run_to_failure(
        worker(root.path())
            .args(["--server", "http://192.0.2.1:8787"])
            .arg("--dir")
            .arg(root.path()),
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("refusing to talk to 192.0.2.1 over plain http://"), "{stderr}");
    assert!(stderr.contains("in clear text"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
    assert!(!root.path().join("tether").exists() && !root.path().join("config").exists(), "no credential was made");
}

#[test]
fn tether_insecure_in_the_environment_lifts_the_refusal() {
    let root = tempfile::tempdir().expect("tempdir");
    let missing = root.path().join("no-such-ca.pem");
    // With the refusal lifted the next check runs: the CA file, which is
    // missing, stops the worker before it reaches out.
    let (code, stderr) = run_to_failure(
        worker(root.path())
            .env("TETHER_INSECURE", "1")
            .args(["--server", "http://192.0.2.1:8787"])
            .arg("--ca-cert")
            .arg(&missing)
            .arg("--dir")
            .arg(root.path()),
    );
    assert_ne!(code, Some(0));
    assert!(!stderr.contains("refusing"), "{stderr}");
    assert!(stderr.contains(&format!("--ca-cert {}: cannot read it", missing.display())), "{stderr}");
}

/// Two projects, each running `tether-worker` in its own directory without
/// `--dir` (as the README's AWS steps do): two workers, each pairing for
/// itself and keeping its own credential file, named after its directory.
#[tokio::test]
async fn workers_started_in_two_directories_are_two_workers() {
    let root = tempfile::tempdir().expect("tempdir");
    let (port, mut seen) = host().await;
    let stub = opencode_stub(root.path());
    let mut files = Vec::new();
    for project in ["alpha", "beta"] {
        let workdir = root.path().join(project);
        std::fs::create_dir_all(&workdir).expect("workdir");
        let log = root.path().join(format!("{project}.log"));
        let mut child = worker(root.path())
            .current_dir(&workdir)
            .args(["--server", &format!("http://127.0.0.1:{port}")])
            .arg("--config-dir")
            .arg(root.path().join("tether"))
            .arg("--opencode")
            .arg(&stub)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tether-worker");
        let mut leftovers = Leftovers(vec![child.id()]);
        assert!(
            matches!(next_seen(&mut seen, &format!("{project}'s pairing request"), &log).await, Seen::Paired),
            "each directory pairs for itself"
        );
        assert!(matches!(next_seen(&mut seen, "the websocket", &log).await, Seen::Connected));
        leftovers.0.push(wait_for_pid(&workdir.join("opencode.pid"), &log).await);
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
        while !matches!(next_seen(&mut seen, "the end of the connection", &log).await, Seen::Ended) {}
        leftovers.0.clear();
        let stored: Vec<_> = std::fs::read_dir(root.path().join("tether"))
            .expect("config dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json") && !files.contains(p))
            .collect();
        assert_eq!(stored.len(), 1, "{project} has a credential file of its own: {stored:?}");
        let text = read(&stored[0]);
        let canonical = workdir.canonicalize().expect("canonical");
        assert!(
            text.contains(&format!("\"{}\"", canonical.display())),
            "the file names the directory itself, not `.`: {text}"
        );
        files.extend(stored);
    }
}
