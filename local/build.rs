//! Builds the web UI (`web/`, Vite) into `$OUT_DIR/web-dist`, which
//! `host.rs` embeds in the `tether` binary. A fresh clone needs Node.js
//! and npm; nothing built is committed.
//!
//! Cargo runs this again only when something under `web/` that the UI build
//! reads changes (not `web/tests/`, not `node_modules/`). Even then the
//! bundle is rebuilt only when a source is newer than the last build, and
//! `npm ci` runs only when `node_modules` is missing or older than the
//! lockfile. `TETHER_SKIP_WEB_BUILD=1` builds without the UI (a placeholder
//! page), for machines without Node.js.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// What the UI build reads, relative to `web/`.
const INPUTS: &[&str] = &[
    "src",
    "public",
    "index.html",
    "package.json",
    "package-lock.json",
    "vite.config.ts",
    "tsconfig.json",
];

/// Oldest Node.js that Vite supports.
const MIN_NODE: (u32, u32) = (20, 19);

fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let web = manifest.join("..").join("web");
    let out = PathBuf::from(env("OUT_DIR")).join("web-dist");

    for input in INPUTS {
        println!("cargo:rerun-if-changed={}", web.join(input).display());
    }
    println!("cargo:rerun-if-env-changed=TETHER_SKIP_WEB_BUILD");
    println!("cargo:rerun-if-env-changed=TETHER_NPM");

    if std::env::var_os("TETHER_SKIP_WEB_BUILD").is_some_and(|v| !v.is_empty() && v != "0") {
        placeholder(&out);
        println!("cargo:warning=TETHER_SKIP_WEB_BUILD is set: the tether binary serves no web UI");
        return;
    }

    let stamp = out.join(".built");
    let newest = INPUTS
        .iter()
        .filter_map(|input| newest_mtime(&web.join(input)))
        .max();
    let built = fs::metadata(&stamp).and_then(|m| m.modified()).ok();
    if let (Some(newest), Some(built)) = (newest, built) {
        if built >= newest && out.join("index.html").is_file() {
            return;
        }
    }

    let npm = npm_program();
    check_node(&npm);
    install_if_needed(&npm, &web);

    let status = Command::new(&npm)
        .current_dir(&web)
        .args(["run", "build", "--", "--outDir"])
        .arg(&out)
        .arg("--emptyOutDir")
        .status()
        .unwrap_or_else(|e| fail(&format!("cannot run `{npm} run build` in {}: {e}", web.display())));
    if !status.success() {
        fail(&format!(
            "`{npm} run build` failed in {} ({status}); its output is above",
            web.display()
        ));
    }
    if let Err(e) = fs::write(&stamp, b"") {
        fail(&format!("cannot write {}: {e}", stamp.display()));
    }
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| fail(&format!("{key} is not set (not run by cargo?)")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: building the web UI: {message}");
    std::process::exit(1);
}

fn npm_program() -> String {
    std::env::var("TETHER_NPM").unwrap_or_else(|_| {
        if cfg!(windows) {
            "npm.cmd".into()
        } else {
            "npm".into()
        }
    })
}

/// Fails with a clear message unless Node.js and npm are installed and new enough.
fn check_node(npm: &str) {
    let missing = "the tether binary embeds the web UI (web/), which is built with Node.js \
                   20.19 or later and npm. Install them (https://nodejs.org, or your package \
                   manager's `nodejs` and `npm`), or set TETHER_SKIP_WEB_BUILD=1 to build \
                   without the UI";
    let node = Command::new("node").arg("--version").output();
    let Ok(node) = node else {
        fail(&format!("`node` was not found: {missing}"));
    };
    if Command::new(npm).arg("--version").output().is_err() {
        fail(&format!("`{npm}` was not found: {missing}"));
    }
    let version = String::from_utf8_lossy(&node.stdout);
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if (major, minor) < MIN_NODE {
        fail(&format!(
            "Node.js {} is too old: {missing}",
            version.trim()
        ));
    }
}

/// `npm ci` when `node_modules` is missing or older than the lockfile. A lock
/// directory keeps two builds (two target directories) from installing at once.
fn install_if_needed(npm: &str, web: &Path) {
    let needed = || {
        let lock = fs::metadata(web.join("package-lock.json")).and_then(|m| m.modified());
        let installed =
            fs::metadata(web.join("node_modules/.package-lock.json")).and_then(|m| m.modified());
        match (lock, installed) {
            (Ok(lock), Ok(installed)) => installed < lock,
            _ => true,
        }
    };
    if !needed() {
        return;
    }
    let guard = InstallLock::acquire(&web.join(".npm-install.lock"));
    if needed() {
        let status = Command::new(npm)
            .current_dir(web)
            .args(["ci", "--no-audit", "--no-fund"])
            .status()
            .unwrap_or_else(|e| fail(&format!("cannot run `{npm} ci` in {}: {e}", web.display())));
        if !status.success() {
            fail(&format!(
                "`{npm} ci` failed in {} ({status}); its output is above",
                web.display()
            ));
        }
    }
    drop(guard);
}

struct InstallLock(PathBuf);

impl InstallLock {
    fn acquire(path: &Path) -> Self {
        let deadline = SystemTime::now() + Duration::from_secs(600);
        loop {
            match fs::create_dir(path) {
                Ok(()) => return Self(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock left by a build that was killed is stale after 10 minutes.
                    let stale = fs::metadata(path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(600));
                    if stale {
                        let _ = fs::remove_dir(path);
                    } else if SystemTime::now() > deadline {
                        fail(&format!(
                            "waited 10 minutes for {} (another build installing?); remove it if no build is running",
                            path.display()
                        ));
                    } else {
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                Err(e) => fail(&format!("cannot create {}: {e}", path.display())),
            }
        }
    }
}

impl Drop for InstallLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

/// The newest modification time of a file, or of any file under a directory.
fn newest_mtime(path: &Path) -> Option<SystemTime> {
    let meta = fs::metadata(path).ok()?;
    let own = meta.modified().ok();
    if !meta.is_dir() {
        return own;
    }
    let children = fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| newest_mtime(&entry.path()));
    children.chain(own).max()
}

/// A stand-in page when the UI is not built.
fn placeholder(out: &Path) {
    if out.join("index.html").is_file() {
        return;
    }
    if let Err(e) = fs::create_dir_all(out) {
        fail(&format!("cannot create {}: {e}", out.display()));
    }
    let page = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
        <title>Tether</title><body style=\"font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem\">\
        <h1>Tether</h1><p>The host is running, but this build has no web UI \
        (it was built with TETHER_SKIP_WEB_BUILD). Build it with Node.js and npm installed.</p></body></html>\n";
    if let Err(e) = fs::write(out.join("index.html"), page) {
        fail(&format!("cannot write the placeholder page: {e}"));
    }
}
