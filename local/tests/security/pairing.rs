//! Pairing is bound to whoever approves it, and the machine sees who that
//! is. Whoever approves a worker owns it: their sessions run commands on
//! that machine. So a real `tether worker` prints the approver's name (and
//! keeps it with its credential, for its next start); nobody but the owner
//! or an admin can reject or revoke an approved worker; guessing codes is
//! rate-limited per user and pending workers are capped per address; and a
//! headless machine pairs with a one-time token its owner minted, which
//! works exactly once.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::json;
use tether_domain::auth::Secret;
use tether_domain::model::WorkerStatus;
use tether_domain::protocol::{Request, WorkerView};
use tether_domain::ErrorCode;

use tether_testsupport::helpers::{
    http_post_with, paired, Mode, Paired, Server, UserClient, WAIT,
};

/// A `tether worker` process against `server`, in a directory of its own
/// (config, HOME, project), its standard error read line by line.
struct WorkerProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    root: PathBuf,
}

impl WorkerProcess {
    /// Starts it with `extra` flags and `env`. Pairing comes before opencode
    /// is needed, so `--opencode /bin/false` keeps it from installing one.
    fn start(server: &Server, root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let project = root.join("project");
        std::fs::create_dir_all(&project).expect("project dir");
        let mut cmd = std::process::Command::new(crate::TETHER_BIN);
        cmd.arg("worker")
            .arg("--server")
            .arg(format!("http://{}", server.addr))
            .arg("--dir")
            .arg(&project)
            .arg("--config-dir")
            .arg(root.join("config"))
            .arg("--opencode")
            .arg("/bin/false")
            .args(extra)
            .env("HOME", root)
            .env("XDG_STATE_HOME", root.join("state"))
            .env("XDG_CACHE_HOME", root.join("cache"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("TETHER_") {
                cmd.env_remove(&key);
            }
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().expect("spawn tether worker");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        // A reader blocked on a live process must not hold the runtime.
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
            root: root.to_path_buf(),
        }
    }

    /// The next line of its standard error that `pred` accepts, within
    /// [`WAIT`]; panics with everything it printed otherwise.
    async fn line_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(mpsc::TryRecvError::Empty) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => panic!(
                    "the worker printed no {what} within {WAIT:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The pairing code it prints on a line of its own.
    async fn code(&mut self) -> String {
        self.line_where("pairing instructions", |l| l.contains("Approve it in Tether with the code"))
            .await;
        let line = self
            .line_where("pairing code", |l| {
                let t = l.trim();
                t.len() == 9 && t.as_bytes()[4] == b'-'
            })
            .await;
        line.trim().to_owned()
    }

    /// Waits for it to exit; its status and everything it printed.
    async fn exit(mut self) -> (std::process::ExitStatus, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not exit within {WAIT:?}:\n{}",
                self.seen.join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The pipe closes with the process: the reader thread has it all.
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.seen.extend(self.lines.try_iter());
        (status, self.seen.join("\n"))
    }

    /// Its credential file (one per host and directory in its config dir).
    fn credential_file(&self) -> serde_json::Value {
        let dir = self.root.join("config");
        let file = std::fs::read_dir(&dir)
            .expect("the config directory")
            .map(|e| e.expect("entry").path())
            .find(|p| p.extension().is_some_and(|e| e == "json"))
            .expect("a credential file");
        serde_json::from_str(&std::fs::read_to_string(file).expect("read")).expect("JSON")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real worker prints who approved it when it is approved, keeps the name
/// in its credential file, and shows it again when it starts later.
#[tokio::test]
async fn the_worker_shows_and_keeps_who_approved_it() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let alice = server.add_user("alice").await;
    let owner = UserClient::connect(&server, &alice).await;
    let root = tempfile::tempdir().expect("tempdir");

    let mut worker = WorkerProcess::start(&server, root.path(), &[], &[]);
    let code = worker.code().await;
    let approved: WorkerView = owner
        .call(Request::PairingApprove { code, name: None })
        .await
        .field("worker");
    assert_eq!(approved.status, WorkerStatus::Approved);
    let line = worker
        .line_where("approval notice", |l| l.contains("approved by"))
        .await;
    assert!(line.contains("approved by alice"), "{line}");
    // The worker writes its file before it prints the notice; waiting a
    // little costs nothing if that ever changes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let kept = loop {
        let kept = worker.credential_file();
        if kept["approved_by"].is_string() || std::time::Instant::now() > deadline {
            break kept;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(kept["approved_by"], "alice", "kept beside the credential: {kept}");
    assert_eq!(kept["worker_id"], approved.worker_id.as_str());
    drop(worker);

    // Started again, it says whose it is in its start-up line.
    let mut again = WorkerProcess::start(&server, root.path(), &[], &[]);
    let line = again.line_where("start-up line", |l| l.contains("paired")).await;
    assert!(line.contains("approved_by=alice"), "{line}");
    assert!(line.contains(approved.worker_id.as_str()), "{line}");
}

/// Once alice approved her worker, bob (a second user) can neither reject
/// it with its spent code nor revoke it: `not_found`, as for anything of
/// someone else's, and the worker keeps working. An admin can revoke it.
#[tokio::test]
async fn a_second_user_cannot_reject_or_revoke_anothers_worker() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let Paired { mut user, worker } = paired(&server, "alice").await;
    let id = worker.id().clone();
    let code = worker.identity.code.clone().expect("its code");
    let bob_account = server.add_user("bob").await;
    let bob = UserClient::connect(&server, &bob_account).await;

    bob.call(Request::PairingReject { code: code.clone() })
        .await
        .expect_err(ErrorCode::NotFound);
    bob.call(Request::PairingApprove { code, name: None })
        .await
        .expect_err(ErrorCode::NotFound);
    bob.call(Request::WorkerRevoke { worker_id: id.clone() })
        .await
        .expect_err(ErrorCode::NotFound);
    worker.assert_usable("bob's attempts").await;
    let view = user.worker_view(&id).await;
    assert_eq!((view.status, view.online), (WorkerStatus::Approved, true), "{view:?}");
    assert!(bob.machines().await.is_empty(), "bob owns nothing");

    let root_account = server.add_user_with("root", true).await;
    let admin = UserClient::connect(&server, &root_account).await;
    let revoked: WorkerView = admin
        .call(Request::WorkerRevoke { worker_id: id.clone() })
        .await
        .field("worker");
    assert_eq!(revoked.status, WorkerStatus::Revoked);
    user.worker_updated(&id, "revoked by an admin", |w| w.status == WorkerStatus::Revoked)
        .await;
}

/// A user guessing codes is stopped after 10 a minute with `rate_limited`
/// (the message says when to retry); a correct code is refused too until
/// then, so guessing cannot be sped up.
#[tokio::test]
async fn code_guessing_is_rate_limited() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let mallory = server.add_user("mallory").await;
    let guesser = UserClient::connect(&server, &mallory).await;
    let alice = server.add_user("alice").await;
    let owner = UserClient::connect(&server, &alice).await;
    let root = tempfile::tempdir().expect("tempdir");
    let mut worker = WorkerProcess::start(&server, root.path(), &[], &[]);
    let code = worker.code().await;

    let mut allowed = 0;
    loop {
        let guess = format!("QQQQ-{:04}", 2222 + allowed).replace(['0', '1'], "Q");
        let reply = guesser.call(Request::PairingLookup { code: guess }).await;
        if reply.ok || reply.error.as_ref().is_some_and(|(c, _)| c == ErrorCode::NotFound.as_str()) {
            allowed += 1;
            assert!(allowed <= 20, "no limit after {allowed} guesses");
            continue;
        }
        reply.expect_err(ErrorCode::RateLimited);
        let message = &reply.error.as_ref().expect("error").1;
        assert!(message.contains("try again in"), "{message}");
        break;
    }
    assert!(allowed >= 10);
    // Even the right code: the guesser is out of attempts.
    guesser
        .call(Request::PairingApprove { code: code.clone(), name: None })
        .await
        .expect_err(ErrorCode::RateLimited);
    // Its owner, another user, is not.
    owner
        .call(Request::PairingApprove { code, name: None })
        .await
        .field::<WorkerView>("worker");
    let line = worker.line_where("approval notice", |l| l.contains("approved by")).await;
    assert!(line.contains("approved by alice"), "{line}");
}

/// One address may have 3 workers waiting for approval; a fourth is
/// refused with 429 `too_many_pending` and nothing is stored; addresses a
/// client writes into `X-Forwarded-For` itself do not get it round the cap.
#[tokio::test]
async fn pending_workers_per_address_are_capped() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    // Straight from the loopback peer: a real worker process counts too.
    let roots: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let mut waiting = Vec::new();
    for root in &roots {
        let mut w = WorkerProcess::start(&server, root.path(), &[], &[]);
        w.code().await;
        waiting.push(w);
    }
    let extra = tempfile::tempdir().expect("tempdir");
    let fourth = WorkerProcess::start(&server, extra.path(), &[], &[]);
    let (status, printed) = fourth.exit().await;
    assert!(!status.success(), "{printed}");
    assert!(printed.contains("429 too_many_pending"), "the worker says why: {printed}");

    let body = json!({"machine": "m", "workdir": "/w"});
    let post = |forwarded: &'static str| {
        let credential = Secret::generate("twk_").expose().to_owned();
        let body = body.clone();
        let addr = server.addr;
        async move {
            http_post_with(addr, "/api/pair", Some(&credential), Some(&body), &[("X-Forwarded-For", forwarded)]).await
        }
    };
    // Through a proxy on this machine, each remote address has its own cap:
    // the proxy's last entry counts, never one the client made up.
    for i in 0..3 {
        assert_eq!(post("203.0.113.7").await.status, 200, "{i}");
    }
    for forged in ["203.0.113.7", "10.0.0.1, 203.0.113.7", "10.0.0.2,203.0.113.7"] {
        let refused = post(forged).await;
        assert_eq!(refused.status, 429, "{forged}: {refused:?}");
        assert_eq!(refused.json()["code"], "too_many_pending");
    }
}

/// A headless machine: alice mints a token and a real worker started with
/// it is hers at once, and says so; a second machine with the same token
/// is refused and nothing is made for it.
#[tokio::test]
async fn a_headless_worker_pairs_with_a_token_once() {
    let server = Server::start(crate::HOST, Mode::Sequential).await;
    let alice = server.add_user("alice").await;
    let owner = UserClient::connect(&server, &alice).await;
    let token: String = owner.call(Request::PairingTokenCreate {}).await.field("token");

    let root = tempfile::tempdir().expect("tempdir");
    let mut worker = WorkerProcess::start(&server, root.path(), &["--token", &token], &[]);
    let line = worker.line_where("approval notice", |l| l.contains("approved by")).await;
    assert!(line.contains("approved by alice"), "{line}");
    assert!(
        !worker.seen.iter().any(|l| l.contains("Approve it in Tether")),
        "no code to type: {:?}",
        worker.seen
    );
    assert!(
        !worker.seen.iter().any(|l| l.contains(&token)),
        "the token is never printed"
    );
    assert_eq!(worker.credential_file()["approved_by"], "alice");
    let machines = owner.machines().await;
    let w = &machines[0].workers[0];
    assert_eq!(w.status, WorkerStatus::Approved, "{machines:?}");
    let worker_id = w.worker_id.clone();
    assert_eq!(worker.credential_file()["worker_id"], worker_id.as_str());

    // The same token from the environment, on another machine: refused.
    let other = tempfile::tempdir().expect("tempdir");
    let second = WorkerProcess::start(&server, other.path(), &[], &[("TETHER_PAIRING_TOKEN", &token)]);
    let (status, printed) = second.exit().await;
    assert!(!status.success(), "{printed}");
    assert!(
        printed.contains("401 unauthorized") && printed.contains("unknown, used or expired"),
        "the worker says why: {printed}"
    );
    assert_eq!(owner.machines().await[0].workers.len(), 1, "nothing was made for it");

    // The first, started again with its (spent) token, just starts.
    drop(worker);
    let mut again = WorkerProcess::start(&server, root.path(), &["--token", &token], &[]);
    let line = again.line_where("start-up line", |l| l.contains("paired")).await;
    assert!(line.contains("approved_by=alice") && line.contains(worker_id.as_str()), "{line}");
}
