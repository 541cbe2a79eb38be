//! Starting moto's DynamoDB server for a test process (the functions'
//! tests, the AWS-shaped e2e tier, `cargo xtask lambda-init`).
//!
//! `TETHER_MOTO_URL` names a running server. Otherwise `moto_server` from
//! `$TETHER_MOTO_BIN`, `$HOME/.cache/tether/venv/bin/moto_server` or `PATH`
//! starts on a free loopback port and goes when the test process does. No
//! moto is a failure, never a skip: `scripts/test` installs it
//! (`scripts/install-moto`).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// The moto server of this process: started once, gone with the process.
pub struct Moto {
    pub url: String,
    /// Holds the watchdog's stdin open; when the process exits, the pipe
    /// closes and the watchdog kills the server.
    _watchdog: Option<(Child, ChildStdin)>,
}

fn find_moto() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("TETHER_MOTO_BIN") {
        return Some(PathBuf::from(bin));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/tether/venv/bin/moto_server");
        if venv.is_file() {
            return Some(venv);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("moto_server"))
        .find(|p| p.is_file())
}

pub fn start() -> Moto {
    if let Ok(url) = std::env::var("TETHER_MOTO_URL") {
        return Moto {
            url,
            _watchdog: None,
        };
    }
    let bin = find_moto().filter(|b| b.is_file()).unwrap_or_else(|| {
        panic!(
            "moto_server not found (looked at $TETHER_MOTO_BIN, \
             $HOME/.cache/tether/venv/bin/moto_server and PATH): run scripts/test, \
             which installs it with scripts/install-moto, or set TETHER_MOTO_URL \
             to a running moto server"
        )
    });
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a free port")
        .port();
    let log = std::env::temp_dir().join(format!("tether-moto-{port}.log"));
    // The watchdog shell runs the server, kills it once its stdin (held by
    // this process) closes, whichever way this process ends, and exits if
    // the server dies first.
    // (A background list reads /dev/null unless told otherwise: hence fd 3.)
    let script = r#"bin=$1; port=$2; log=$3
exec 3<&0
"$bin" -H 127.0.0.1 -p "$port" >"$log" 2>&1 </dev/null &
server=$!
trap 'kill "$server" 2>/dev/null' EXIT
(cat <&3 >/dev/null; kill "$server" 2>/dev/null) &
wait "$server"
"#;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&bin)
        .arg(port.to_string())
        .arg(&log)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    let stdin = child.stdin.take().expect("watchdog stdin");
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let mut text = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
            panic!(
                "{} did not start listening on port {port}; its log ({}):\n{text}",
                bin.display(),
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The log matters only when the server fails to start; moto keeps
    // writing to the unlinked file until it exits.
    let _ = std::fs::remove_file(&log);
    Moto {
        url: format!("http://127.0.0.1:{port}"),
        _watchdog: Some((child, stdin)),
    }
}
