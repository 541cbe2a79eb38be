//! `cargo xtask bench`: the whole product streaming answers of several
//! sizes, as fast as the fake model can go. Real `tether serve`, a real
//! `tether worker`, real opencode; a watching client over the websocket; and
//! beside it a client reading opencode's own event stream, for reference.
//!
//! Figures per answer: chunk frames (what the worker sent and the watcher
//! received) against one frame per opencode delta; store writes against one
//! write per 20 characters; and the latency from a delta appearing on
//! opencode's event stream to the watcher receiving it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Answer sizes, in tokens.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1000, 10000])]
    tokens: Vec<usize>,
    /// The fake model's pause between tokens, in milliseconds.
    #[arg(long, default_value_t = 1)]
    delay_ms: u64,
    /// Use a debug build (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
}

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub(crate) async fn build(debug: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(workspace()).args(["build", "-p", "tether-local"]);
    if !debug {
        cmd.arg("--release");
    }
    let status = cmd.status().await.context("running cargo build")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    Ok(target.join(if debug { "debug" } else { "release" }).join("tether"))
}

fn opencode() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("TETHER_TEST_OPENCODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/tether/opencode/node_modules/.bin/opencode")
        });
    if !path.is_file() {
        bail!("opencode is not at {}: run scripts/install-opencode", path.display());
    }
    Ok(path)
}

/// Spawns a process and returns it with a line of its stdout that contains `marker`.
pub(crate) async fn spawn_until(mut cmd: Command, marker: &str) -> anyhow::Result<(Proc, String)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null()).stdin(Stdio::null());
    let mut child = cmd.spawn().context("spawning")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains(marker) {
                return Ok::<_, std::io::Error>(Some(line));
            }
        }
        Ok(None)
    })
    .await
    .context("timed out")??
    .ok_or_else(|| anyhow!("no line with {marker:?}"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((Proc(child), line))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A minimal protocol client: requests with ids, events into a channel.
struct Client {
    ws: futures_util::stream::SplitSink<Ws, Message>,
    events: mpsc::UnboundedReceiver<(Instant, Value)>,
    next: u64,
}

impl Client {
    async fn connect(url: &str, secret: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let ticket: Value = http
            .post(format!("{url}/api/ticket"))
            .bearer_auth(secret)
            .send()
            .await?
            .json()
            .await?;
        let ticket = ticket["ticket"].as_str().context("ticket")?;
        let ws_url = format!("{}/ws?ticket={ticket}", url.replacen("http", "ws", 1));
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        let (sink, mut stream) = ws.split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(Message::Text(t))) = stream.next().await {
                if let Ok(v) = serde_json::from_str::<Value>(&t) {
                    let _ = tx.send((Instant::now(), v));
                }
            }
        });
        Ok(Self { ws: sink, events: rx, next: 0 })
    }

    async fn call(&mut self, mut body: Value) -> anyhow::Result<Value> {
        self.next += 1;
        let id = format!("b{}", self.next);
        body["id"] = json!(id);
        self.ws.send(Message::Text(body.to_string().into())).await?;
        loop {
            let (_, v) = tokio::time::timeout(Duration::from_secs(60), self.events.recv())
                .await
                .context("no reply")?
                .context("connection closed")?;
            if v["type"] == "reply" && v["id"] == id.as_str() {
                if v["ok"] == true {
                    return Ok(v["data"].clone());
                }
                bail!("{} refused: {}", body["action"], v["error"]);
            }
        }
    }
}

/// What the reference client saw on opencode's own stream: when each
/// token's delta arrived, and how many deltas there were.
#[derive(Default)]
struct Direct {
    seen: HashMap<String, Instant>,
    deltas: usize,
    chars: usize,
}

async fn watch_opencode(port: u16, password: String, tx: mpsc::UnboundedSender<(Instant, String)>) {
    use eventsource_stream::Eventsource;
    let Ok(res) = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/event"))
        .basic_auth("opencode", Some(password))
        .send()
        .await
    else {
        return;
    };
    let mut stream = res.bytes_stream().eventsource();
    while let Some(Ok(event)) = stream.next().await {
        let now = Instant::now();
        let Ok(v) = serde_json::from_str::<Value>(&event.data) else { continue };
        if v["type"] == "message.part.delta" {
            if let Some(d) = v["properties"]["delta"].as_str() {
                let _ = tx.send((now, d.to_owned()));
            }
        }
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tether = build(args.debug).await?;
    let opencode = opencode()?;
    let llm = tether_fakellm::FakeLlm::start(tether_fakellm::Config::default()).await?;
    let root = tempfile::tempdir()?;
    let project = root.path().join("project");
    std::fs::create_dir_all(&project)?;
    std::fs::write(
        project.join("opencode.json"),
        json!({
            "provider": {"fake": {"npm": "@ai-sdk/openai-compatible", "name": "Fake",
                "options": {"baseURL": llm.base_url(), "apiKey": "bench"},
                "models": {"fake-model": {"name": "Fake", "tool_call": true,
                    "limit": {"context": 128000, "output": 32000}}}}},
            "model": "fake/fake-model"
        })
        .to_string(),
    )?;
    let xdg = |d: &str| root.path().join("xdg").join(d);
    let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_default());

    let data = root.path().join("data");
    let mut serve = Command::new(&tether);
    serve.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let (_host, line) = spawn_until(serve, "listening on").await?;
    let url = line
        .split("listening on ")
        .nth(1)
        .context("url")?
        .trim()
        .to_owned();
    let out = Command::new(&tether)
        .args(["user", "add", "bench", "--admin", "--data-dir"])
        .arg(&data)
        .output()
        .await?;
    let secret = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|t| t.starts_with("tsk_"))
        .context("no secret printed")?
        .to_owned();

    let port = free_port()?;
    let password = format!("bench-{}", std::process::id());
    let mut worker = Command::new(&tether);
    worker
        .args(["worker", "--server", &url, "--dir"])
        .arg(&project)
        .arg("--opencode")
        .arg(&opencode)
        .arg("--config-dir")
        .arg(root.path().join("worker"))
        .args(["--opencode-port", &port.to_string()])
        .env("TETHER_OPENCODE_PASSWORD", &password)
        .env("XDG_DATA_HOME", xdg("data"))
        .env("XDG_CONFIG_HOME", xdg("config"))
        .env("XDG_STATE_HOME", xdg("state"))
        .env("XDG_CACHE_HOME", home.join(".cache/tether/test-opencode-cache"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let _worker = Proc(worker.spawn().context("spawning the worker")?);

    let mut user = Client::connect(&url, &secret).await?;
    let worker_id = loop {
        let pending = user.call(json!({"action": "pairing_list"})).await?;
        if let Some(code) = pending["workers"][0]["pairing_code"].as_str() {
            let w = user.call(json!({"action": "pairing_approve", "code": code})).await?;
            break w["worker"]["worker_id"].as_str().context("worker id")?.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let m = user.call(json!({"action": "machine_list"})).await?;
        let ready = m["machines"][0]["workers"][0]["models"]
            .as_array()
            .is_some_and(|a| a.iter().any(|m| m["model_id"] == "fake-model"));
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!("the worker did not come online");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (direct_tx, mut direct_rx) = mpsc::unbounded_channel();
    tokio::spawn(watch_opencode(port, password.clone(), direct_tx));

    println!(
        "\n{:>7} | {:>8} {:>8} | {:>8} {:>9} | {:>8} {:>9} | {:>16} | {:>8} {:>10} | {:>7}",
        "tokens", "frames", "naive", "writes", "naive/20c", "p50 ms", "p95 ms", "p99 ms", "first ms", "steady p50", "stream s"
    );
    let mut rows = Vec::new();
    for (i, &n) in args.tokens.iter().enumerate() {
        let session = format!("ses_bench{i}");
        user.call(json!({"action": "session_start", "session_id": session, "worker_id": worker_id,
            "model": {"provider_id": "fake", "model_id": "fake-model"}}))
            .await?;
        // Wait for the session to be ready, then watch it.
        loop {
            let page = user.call(json!({"action": "session_history", "session_id": session})).await?;
            if page["session"]["status"] == "ready" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        user.call(json!({"action": "session_watch", "session_id": session})).await?;
        while direct_rx.try_recv().is_ok() {}
        let message = format!("msg_bench{i}");
        let started = Instant::now();
        user.call(json!({"action": "message_send", "session_id": session, "message_id": message,
            "text": format!("[tokens {n}] [delay {}]", args.delay_ms)}))
            .await?;
        let mut watched: HashMap<String, Instant> = HashMap::new();
        let mut frames = 0usize;
        let mut chunks = 0usize;
        let mut count: Option<usize> = None;
        let mut direct = Direct::default();
        loop {
            while let Ok((t, d)) = direct_rx.try_recv() {
                direct.deltas += 1;
                direct.chars += d.len();
                for tok in d.split_whitespace() {
                    direct.seen.entry(tok.to_owned()).or_insert(t);
                }
            }
            if count.is_some_and(|c| chunks >= c) {
                break;
            }
            let (t, v) = tokio::time::timeout(Duration::from_secs(300), user.events.recv())
                .await
                .context("the answer stalled")?
                .context("connection closed")?;
            match v["type"].as_str() {
                Some("chunks") if v["message_id"] == message.as_str() => {
                    frames += 1;
                    for c in v["chunks"].as_array().into_iter().flatten() {
                        chunks += 1;
                        if c["kind"] == "text" {
                            for tok in c["delta"].as_str().unwrap_or_default().split_whitespace() {
                                watched.entry(tok.to_owned()).or_insert(t);
                            }
                        }
                    }
                }
                Some("message_updated") if v["message"]["message_id"] == message.as_str() => {
                    let status = v["message"]["status"].as_str().unwrap_or_default();
                    if ["complete", "failed", "aborted"].contains(&status) {
                        if status != "complete" {
                            bail!("the {n}-token answer ended {status}");
                        }
                        count = v["message"]["chunk_count"].as_u64().map(|c| c as usize);
                    }
                }
                _ => {}
            }
        }
        let elapsed = started.elapsed();
        // Deltas still in flight on the reference stream.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok((t, d)) = direct_rx.try_recv() {
            direct.deltas += 1;
            direct.chars += d.len();
            for tok in d.split_whitespace() {
                direct.seen.entry(tok.to_owned()).or_insert(t);
            }
        }
        let mut latencies: Vec<f64> = watched
            .iter()
            .filter_map(|(tok, tw)| {
                direct
                    .seen
                    .get(tok)
                    .map(|td| tw.saturating_duration_since(*td).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        // The first delta of the answer (it should go out at once), and the
        // steady stream: every token after the first tenth of the answer.
        let latency_of = |tok: &str| {
            let (tw, td) = (watched.get(tok)?, direct.seen.get(tok)?);
            Some(tw.saturating_duration_since(*td).as_secs_f64() * 1000.0)
        };
        let first = latency_of("w0").unwrap_or(f64::NAN);
        let mut steady: Vec<f64> = (n / 10..n).filter_map(|i| latency_of(&format!("w{i}"))).collect();
        steady.sort_by(|a, b| a.total_cmp(b));
        // Store writes: every chunk, plus the message's insert and its three
        // transitions, plus the session's busy/ready pair.
        let writes = chunks + 6;
        let naive_writes = direct.chars.div_ceil(20) + 6;
        let row = format!(
            "{:>7} | {:>8} {:>8} | {:>8} {:>9} | {:>8.1} {:>9.1} | {:>16.1} | {:>8.1} {:>10.1} | {:>7.2}",
            n,
            frames,
            direct.deltas,
            writes,
            naive_writes,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99),
            first,
            percentile(&steady, 0.5),
            elapsed.as_secs_f64()
        );
        println!("{row}");
        rows.push(row);
        user.call(json!({"action": "session_end", "session_id": session})).await?;
    }
    println!(
        "\nframes: chunk frames per answer (worker to host, each pushed once to the watcher); naive: one frame per opencode delta.\n\
         writes: store writes per answer; naive/20c: one write per 20 characters.\n\
         latency: from a delta on opencode's own event stream to the watcher receiving it, per token;\n\
         first: the answer's first token; steady p50: the tokens after the answer's first tenth.\n\
         fake model: {} ms between tokens; {} build.",
        args.delay_ms,
        if args.debug { "debug" } else { "release" }
    );
    Ok(())
}
