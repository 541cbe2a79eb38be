//! `cargo xtask lambda-init`: how fast the Lambda functions start, under
//! the Lambda emulator (`cargo lambda watch`), with DynamoDB on moto.
//!
//! Each round starts a fresh emulator (so every function starts cold),
//! invokes each function once (the cold invocation) and then `--warm` times
//! more, with the API Gateway events of `functions/tests/fixtures/`. It
//! prints, per function, the medians over the rounds of:
//!
//! - **init**: what the function logs as its cold start, from the first line
//!   of `main` to taking events (logging, configuration, the AWS SDK's
//!   config and clients): the part of Lambda's `Init Duration` that is ours
//!   (Lambda adds loading the binary, a few ms for a static one);
//! - **cold invoke**: the first invocation as the caller sees it, which here
//!   also holds the emulator starting the process through `cargo run`;
//! - **warm invoke**: later invocations (handler + moto round trips).
//!
//! Built for this machine's architecture in release mode; the arm64 build
//! that Lambda runs is the same code (`scripts/test-aws` builds it and
//! prints its sizes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::process::{Child, Command};

/// The `X-Tether-Origin` value in `functions/tests/fixtures/`.
const FIXTURE_ORIGIN_SECRET: &str = "5b0c7e40-9d1a-11f0-8c3e-0a58a9feac02.tether-Table-Q3ZP7W1K9XJ4";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Emulator starts (each function starts cold once per round).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Warm invocations per function and round.
    #[arg(long, default_value_t = 10)]
    warm: usize,
}

/// The functions and the event each is invoked with.
const FUNCTIONS: [(&str, &str); 4] = [
    ("tether-connect", "connect-browser.json"),
    ("tether-disconnect", "disconnect.json"),
    ("tether-message", "message.json"),
    ("tether-http", "http-ticket.json"),
];

#[derive(Default)]
struct Samples {
    init_ms: Vec<f64>,
    cold_ms: Vec<f64>,
    warm_ms: Vec<f64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let root = workspace();
    let cargo_lambda = find_tool("TETHER_CARGO_LAMBDA", "cargo-lambda")
        .context("cargo-lambda not found: run scripts/test-aws once (it installs it), or set TETHER_CARGO_LAMBDA")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));

    eprintln!("building the functions (release)…");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--quiet", "--release", "-p", "tether-functions", "--bins"])
        .current_dir(&root)
        .status()
        .await?;
    if !status.success() {
        bail!("building the functions failed ({status})");
    }

    let moto = tether_testsupport::moto::start();
    let dynamodb = moto.url.clone();
    let table = "tether-lambda-init";
    let created = Command::new(target.join("release/tether-admin"))
        .args(["--table", table, "--dynamodb-endpoint", &dynamodb, "create-table"])
        .envs(aws_env())
        .output()
        .await?;
    if !created.status.success() {
        bail!("creating the table: {}", String::from_utf8_lossy(&created.stderr));
    }

    let client = reqwest::Client::new();
    let mut samples: Vec<Samples> = FUNCTIONS.iter().map(|_| Samples::default()).collect();
    let logs = tempfile::tempdir()?;
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        let port = free_port()?;
        let log = logs.path().join(format!("emulator-{round}.log"));
        let mut cmd = Command::new(&cargo_lambda);
        cmd.args(["lambda", "watch", "--release", "--ignore-changes", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--env-var", &format!("TETHER_TABLE={table}")])
            .args(["--env-var", &format!("TETHER_DYNAMODB_ENDPOINT={dynamodb}")])
            .args(["--env-var", "TETHER_MANAGEMENT_ENDPOINT=http://127.0.0.1:9/ws"])
            // The origin secret the fixtures' events carry (CloudFront's
            // header), so `$connect` and the HTTP API accept them.
            .args(["--env-var", &format!("TETHER_ORIGIN_SECRET={FIXTURE_ORIGIN_SECRET}")])
            .args(["--env-var", "RUST_LOG=info"])
            .current_dir(root.join("functions"))
            .env("CARGO_TARGET_DIR", &target)
            .env("RUST_LOG", "warn")
            .envs(aws_env());
        for (k, v) in aws_env() {
            cmd.args(["--env-var", &format!("{k}={v}")]);
        }
        let mut emulator = spawn(&mut cmd, &log)?;
        wait_for_port(port, "cargo lambda watch").await?;
        for ((name, fixture), s) in FUNCTIONS.iter().zip(samples.iter_mut()) {
            let event: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(root.join("functions/tests/fixtures").join(fixture))
                    .with_context(|| format!("reading the fixture {fixture}"))?,
            )?;
            let url = format!("http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations");
            s.cold_ms.push(invoke(&client, &url, &event).await?);
            for _ in 0..args.warm {
                s.warm_ms.push(invoke(&client, &url, &event).await?);
            }
        }
        stop(&mut emulator).await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for ((name, _), s) in FUNCTIONS.iter().zip(samples.iter_mut()) {
            match init_of(&text, name) {
                Some(ms) => s.init_ms.push(ms),
                None => bail!("{name} logged no `ready` line; the emulator's log:\n{text}"),
            }
        }
    }

    println!();
    println!(
        "Lambda start-up under `cargo lambda watch` (release, {}), DynamoDB on moto; medians of {} rounds, {} warm calls each",
        std::env::consts::ARCH,
        args.rounds,
        args.warm
    );
    println!("{:<20} {:>10} {:>14} {:>14}", "function", "init ms", "cold invoke ms", "warm invoke ms");
    for ((name, _), s) in FUNCTIONS.iter().zip(samples.iter_mut()) {
        println!(
            "{:<20} {:>10.1} {:>14.1} {:>14.1}",
            name,
            median(&mut s.init_ms),
            median(&mut s.cold_ms),
            median(&mut s.warm_ms)
        );
    }
    Ok(())
}

/// Invokes a function through the emulator's Lambda API; returns the
/// milliseconds until its answer.
async fn invoke(client: &reqwest::Client, url: &str, event: &serde_json::Value) -> anyhow::Result<f64> {
    let started = Instant::now();
    let response = client
        .post(url)
        .json(event)
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .with_context(|| format!("invoking {url}"))?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        bail!("{url} answered {status}: {body}");
    }
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// The `init_ms` of a function's `ready` line in the emulator's log.
fn init_of(log: &str, function: &str) -> Option<f64> {
    let tag = format!("function=\"{function}\"");
    log.lines()
        .filter(|l| l.contains(" ready") && (l.contains(&tag) || l.contains(&format!("function={function} "))))
        .find_map(|l| {
            let rest = &l[l.find("init_ms=")? + "init_ms=".len()..];
            let value: String = rest
                .trim_start_matches('"')
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            value.parse().ok()
        })
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn aws_env() -> [(&'static str, &'static str); 4] {
    [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A tool from `$VAR`, the test venv (`~/.cache/tether/venv/bin`) or PATH.
fn find_tool(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let venv = Path::new(&home).join(".cache/tether/venv/bin").join(name);
        if venv.is_file() {
            return Some(venv);
        }
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Spawns a child in its own process group (so stopping it stops what it
/// started), its output to `log`.
fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone()?))
        .stderr(Stdio::from(file))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("starting a child process")
}

/// Stops a child and its process group (the functions `cargo lambda
/// watch` started), and waits for it.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{pid}")]).status().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{pid}")]).status().await;
    }
    let _ = child.wait().await;
}

async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
