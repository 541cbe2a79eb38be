//! `cargo xtask load`: how many busy agents one `tether serve` holds.
//!
//! It starts a `tether serve` (release build) on a fresh data directory and
//! drives it with fake workers and watchers speaking the protocol over real
//! websockets, from this one process:
//!
//! - per worker, a user of its own; the worker pairs (`/api/pair`, approved
//!   by its user), says hello, and answers one session with one long answer
//!   for the whole run: a chunk frame every 50–100 ms carrying several tokens
//!   (`coalesced`, as the real worker sends), or one per token at 50 a second
//!   (`per-token`);
//! - per worker, `--watchers` connections of its user watching the session;
//! - every delta carries the time it was sent, so each watcher measures push
//!   latency; the worker measures acknowledgement latency.
//!
//! Afterwards every watcher's chunks, and the stored history read back, are
//! checked against what was sent: lost and duplicated chunks are counted,
//! and the stored text must be exact. Printed: frames/s in, pushes/s out,
//! push and ack latency p50/p95/p99, lost and duplicated chunks, the host's
//! CPU per incoming frame and its peak RSS, and database bytes per 1,000
//! chunks. Figures go in `docs/PERFORMANCE.md`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::{build, percentile, spawn_until, Proc};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pace {
    /// A frame every 50–100 ms with the tokens of that time, as the worker's
    /// outbox sends them.
    Coalesced,
    /// One frame per token, 50 a second.
    PerToken,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Fake workers, each streaming one answer for the whole run.
    #[arg(long, default_value_t = 50)]
    workers: usize,
    /// Watching connections per worker's session.
    #[arg(long, default_value_t = 4)]
    watchers: usize,
    #[arg(long, value_enum, default_value_t = Pace::Coalesced)]
    pace: Pace,
    /// Seconds of streaming.
    #[arg(long, default_value_t = 15.0)]
    secs: f64,
    /// Handle a connection's frames concurrently (`--concurrent-frames`).
    #[arg(long)]
    concurrent_frames: bool,
    /// Use a debug build of `tether` (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Everything the run measures, shared by all tasks.
#[derive(Default)]
struct Tally {
    push_ms: Mutex<Vec<f64>>,
    ack_ms: Mutex<Vec<f64>>,
    frames_in: AtomicU64,
    chunks_sent: AtomicU64,
    text_bytes: AtomicU64,
    pushes_out: AtomicU64,
    duplicates: AtomicU64,
}

/// A protocol connection: requests with ids and their replies; events (and
/// replies nobody waits for) go to `events`.
struct Conn {
    sink: SplitSink<Ws, Message>,
    replies: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>>,
    next: u64,
    tag: String,
}

impl Conn {
    async fn open(request: tokio_tungstenite::tungstenite::handshake::client::Request, tag: String) -> anyhow::Result<(Self, mpsc::UnboundedReceiver<(Instant, Value)>)> {
        let (ws, _) = tokio_tungstenite::connect_async(request).await.context("websocket")?;
        let (sink, mut stream) = ws.split();
        let replies: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Value>>>> = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = replies.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let now = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                if v["type"] == "reply" {
                    if let Some(id) = v["id"].as_str() {
                        if let Some(w) = waiting.lock().expect("lock").remove(id) {
                            let _ = w.send(v);
                            continue;
                        }
                    }
                }
                let _ = tx.send((now, v));
            }
        });
        Ok((Self { sink, replies, next: 0, tag }, rx))
    }

    /// Sends a request; returns its id and the receiver of its reply.
    async fn send(&mut self, mut body: Value) -> anyhow::Result<(String, tokio::sync::oneshot::Receiver<Value>)> {
        self.next += 1;
        let id = format!("{}-{}", self.tag, self.next);
        body["id"] = json!(id);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.replies.lock().expect("lock").insert(id.clone(), tx);
        self.sink.send(Message::text(body.to_string())).await.context("send")?;
        Ok((id, rx))
    }

    /// A request and its reply's data; an error reply fails.
    async fn call(&mut self, body: Value) -> anyhow::Result<Value> {
        let action = body["action"].clone();
        let (_, rx) = self.send(body).await?;
        let reply = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .with_context(|| format!("no reply to {action}"))?
            .context("connection closed")?;
        if reply["ok"] != true {
            bail!("{action} refused: {}", reply["error"]);
        }
        Ok(reply["data"].clone())
    }
}

async fn user_conn(base: &str, secret: &str, tag: String) -> anyhow::Result<(Conn, mpsc::UnboundedReceiver<(Instant, Value)>)> {
    let ticket: Value = reqwest::Client::new()
        .post(format!("{base}/api/ticket"))
        .bearer_auth(secret)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let ticket = ticket["ticket"].as_str().context("a ticket")?;
    let url = format!("{}/ws?v=1&ticket={ticket}", base.replacen("http", "ws", 1));
    Conn::open(url.into_client_request()?, tag).await
}

/// Waits for an event matching `pred`.
async fn event(events: &mut mpsc::UnboundedReceiver<(Instant, Value)>, what: &str, pred: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    loop {
        let (_, v) = tokio::time::timeout(Duration::from_secs(60), events.recv())
            .await
            .with_context(|| format!("waiting for {what}"))?
            .with_context(|| format!("closed while waiting for {what}"))?;
        if pred(&v) {
            return Ok(v);
        }
    }
}

/// One worker's session, ready to stream: its owner, worker and session.
struct Lane {
    secret: String,
    owner: Conn,
    worker: Conn,
    worker_events: mpsc::UnboundedReceiver<(Instant, Value)>,
    session: String,
}

async fn set_up_lane(base: &str, i: usize, secret: String) -> anyhow::Result<Lane> {
    let (mut owner, mut owner_events) = user_conn(base, &secret, format!("o{i}")).await?;
    let credential = tether_domain::auth::Secret::generate("twk_");
    // Every worker asks from 127.0.0.1, and the host lets one address have
    // only a few workers waiting for approval: each says, as a proxy on the
    // host's machine would, that it comes from an address of its own.
    let paired: Value = reqwest::Client::new()
        .post(format!("{base}/api/pair"))
        .bearer_auth(credential.expose())
        .header("x-forwarded-for", format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255))
        .json(&json!({"machine": format!("load-{i}"), "workdir": format!("/load/{i}")}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let code = paired["code"].as_str().context("a pairing code")?.to_owned();
    let worker_id = paired["worker_id"].as_str().context("a worker id")?.to_owned();
    owner.call(json!({"action": "pairing_approve", "code": code})).await?;
    let mut request = format!("{}/ws?v=1", base.replacen("http", "ws", 1)).into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {}", credential.expose()).parse()?);
    let (mut worker, mut worker_events) = Conn::open(request, format!("w{i}")).await?;
    let model = json!({"provider_id": "fake", "model_id": "load"});
    worker
        .call(json!({"action": "worker_hello", "machine": format!("load-{i}"), "workdir": format!("/load/{i}"),
            "models": [{"provider_id": "fake", "model_id": "load", "name": "Load"}], "default_model": model,
            "active_messages": []}))
        .await?;
    // The owner sees the worker online with its model before starting.
    event(&mut owner_events, "the worker online", |v| {
        v["type"] == "worker_updated" && v["worker"]["worker_id"] == worker_id.as_str() && v["worker"]["online"] == true
            && v["worker"]["models"].as_array().is_some_and(|m| !m.is_empty())
    })
    .await?;
    let session = format!("ses_load_{i}");
    owner
        .call(json!({"action": "session_start", "session_id": session, "worker_id": worker_id, "model": model, "title": "load"}))
        .await?;
    event(&mut worker_events, "session_start", |v| v["type"] == "session_start").await?;
    worker
        .call(json!({"action": "session_ready", "session_id": session, "agent_session_id": format!("oc_{i}")}))
        .await?;
    Ok(Lane {
        secret,
        owner,
        worker,
        worker_events,
        session,
    })
}

/// What one watcher received of one message: seqs and their deltas.
type Received = HashMap<u32, String>;

async fn watch(
    base: String,
    secret: String,
    tag: String,
    session: String,
    t0: Instant,
    tally: Arc<Tally>,
) -> anyhow::Result<(Conn, tokio::task::JoinHandle<Received>)> {
    let (mut conn, mut events) = user_conn(&base, &secret, tag).await?;
    conn.call(json!({"action": "session_watch", "session_id": session})).await?;
    let collector = tokio::spawn(async move {
        let mut got: Received = HashMap::new();
        while let Some((at, v)) = events.recv().await {
            if v["type"] != "chunks" {
                continue;
            }
            tally.pushes_out.fetch_add(1, Ordering::Relaxed);
            for c in v["chunks"].as_array().into_iter().flatten() {
                let (Some(seq), Some(delta)) = (c["seq"].as_u64(), c["delta"].as_str()) else { continue };
                if got.insert(seq as u32, delta.to_owned()).is_some() {
                    tally.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                // "<micros since t0>|tokens…": the time the worker sent it.
                if let Some(sent) = delta.split('|').next().and_then(|s| s.parse::<u64>().ok()) {
                    let now = at.duration_since(t0).as_micros() as f64;
                    tally.push_ms.lock().expect("lock").push((now - sent as f64) / 1000.0);
                }
            }
        }
        got
    });
    Ok((conn, collector))
}

/// Streams one answer for `secs`; returns the deltas by seq.
async fn stream(lane: &mut Lane, i: usize, pace: Pace, secs: f64, t0: Instant, tally: Arc<Tally>) -> anyhow::Result<(String, Vec<String>)> {
    let message = format!("msg_load_{i}");
    lane.owner
        .call(json!({"action": "message_send", "session_id": lane.session, "message_id": message, "text": "stream"}))
        .await?;
    event(&mut lane.worker_events, "message_dispatch", |v| v["type"] == "message_dispatch").await?;
    lane.worker.call(json!({"action": "message_started", "message_id": message})).await?;
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent: Vec<String> = Vec::new();
    let mut acks = Vec::new();
    let mut token = 0u64;
    let refused = Arc::new(AtomicU64::new(0));
    // Spread the workers' frames over the interval.
    tokio::time::sleep(Duration::from_millis((i as u64 * 7) % 50)).await;
    while Instant::now() < until {
        let (wait, tokens) = match pace {
            Pace::Coalesced => {
                let ms = 50 + (token * 13 + i as u64 * 31) % 51;
                (Duration::from_millis(ms), (ms / 20).max(1))
            }
            Pace::PerToken => (Duration::from_millis(20), 1),
        };
        tokio::time::sleep(wait).await;
        let mut text = String::new();
        for _ in 0..tokens {
            text.push_str(&format!(" t{token}"));
            token += 1;
        }
        let seq = sent.len() as u32;
        let stamp = t0.elapsed().as_micros();
        let delta = format!("{stamp}|{text}");
        sent.push(delta.clone());
        let chunk = json!({"seq": seq, "kind": "text", "part_id": "p1", "delta": delta});
        let at = Instant::now();
        let (_, reply) = lane.worker.send(json!({"action": "chunks", "message_id": message, "chunks": [chunk]})).await?;
        tally.frames_in.fetch_add(1, Ordering::Relaxed);
        tally.chunks_sent.fetch_add(1, Ordering::Relaxed);
        tally.text_bytes.fetch_add(delta.len() as u64, Ordering::Relaxed);
        // The acknowledgement's latency, taken when it arrives.
        let (tally, refused) = (tally.clone(), refused.clone());
        acks.push(tokio::spawn(async move {
            match tokio::time::timeout(Duration::from_secs(60), reply).await {
                Ok(Ok(reply)) if reply["ok"] == true => {
                    tally.ack_ms.lock().expect("lock").push(at.elapsed().as_secs_f64() * 1000.0);
                }
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for ack in acks {
        ack.await?;
    }
    let refused = refused.load(Ordering::Relaxed);
    if refused > 0 {
        bail!("{refused} chunk frames were refused or not acknowledged");
    }
    lane.worker
        .call(json!({"action": "message_complete", "message_id": message, "outcome": "complete", "chunk_count": sent.len()}))
        .await?;
    Ok((message, sent))
}

/// Reads a session's stored history, page by page: the deltas by seq.
async fn stored(conn: &mut Conn, session: &str, message: &str) -> anyhow::Result<Received> {
    let mut got = Received::new();
    let mut after = Value::Null;
    loop {
        let mut req = json!({"action": "session_history", "session_id": session});
        if !after.is_null() {
            req["after"] = after.clone();
        }
        let page = conn.call(req).await?;
        for c in page["chunks"].as_array().into_iter().flatten() {
            if c["message_id"] == message {
                if let (Some(seq), Some(d)) = (c["seq"].as_u64(), c["delta"].as_str()) {
                    got.insert(seq as u32, d.to_owned());
                }
            }
        }
        if page["next"].is_null() {
            return Ok(got);
        }
        after = page["next"].clone();
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15, so 11 and 12 after the ')'.
    f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The database's files: after a clean stop, the WAL is checkpointed into
/// the main file and removed.
fn db_bytes(dir: &Path) -> u64 {
    ["tether.db", "tether.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

async fn add_user(tether: &Path, data: &Path, name: &str) -> anyhow::Result<String> {
    let out = Command::new(tether)
        .args(["user", "add", name, "--data-dir"])
        .arg(data)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .find(|t| t.starts_with("tsk_"))
        .map(str::to_owned)
        .with_context(|| format!("no secret from `tether user add`: {stdout}"))
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let tether: PathBuf = build(args.debug).await?;
    let root = tempfile::tempdir()?;
    let data = root.path().join("data");
    let mut secrets = Vec::new();
    for i in 0..args.workers {
        secrets.push(add_user(&tether, &data, &format!("load{i}")).await?);
    }
    let mut cmd = Command::new(&tether);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"]).arg(&data).env("RUST_LOG", "warn");
    if args.concurrent_frames {
        cmd.arg("--concurrent-frames");
    }
    // Every connection of the run comes from 127.0.0.1, and each user has
    // `watchers` + 1 of them: the host's per-address and per-user caps are
    // raised for the run (hidden tuning flags), the rest left as shipped.
    cmd.env("TETHER_MAX_CONNECTIONS_PER_ADDRESS", ((args.watchers + 2) * args.workers + 16).to_string());
    let (server, line) = spawn_until(cmd, "listening on").await?;
    let base = line.split("listening on ").nth(1).context("address")?.trim().to_owned();
    let pid = server.0.id().context("pid")?;
    let server: Proc = server;

    eprintln!("setting up {} workers × {} watchers…", args.workers, args.watchers);
    let gate = Arc::new(Semaphore::new(16));
    let mut setups = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let (base, secret, gate) = (base.clone(), secret.clone(), gate.clone());
        setups.push(tokio::spawn(async move {
            let _permit = gate.acquire().await;
            set_up_lane(&base, i, secret).await
        }));
    }
    let mut lanes = Vec::new();
    for s in setups {
        lanes.push(s.await??);
    }
    let t0 = Instant::now();
    let tally = Arc::new(Tally::default());
    let mut watchers = Vec::new();
    for (i, lane) in lanes.iter().enumerate() {
        for w in 0..args.watchers {
            let _permit = gate.acquire().await;
            watchers.push((i, watch(base.clone(), lane.secret.clone(), format!("v{i}-{w}"), lane.session.clone(), t0, tally.clone()).await?));
        }
    }

    eprintln!("streaming for {} s ({:?})…", args.secs, args.pace);
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let peak_rss = Arc::new(Mutex::new(rss_mb(pid)));
    let sampler = {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = rss_mb(pid);
                let mut p = peak.lock().expect("lock");
                *p = p.max(now);
            }
        })
    };
    let mut runs = Vec::new();
    for (i, mut lane) in lanes.into_iter().enumerate() {
        let tally = tally.clone();
        let (pace, secs) = (args.pace, args.secs);
        runs.push(tokio::spawn(async move {
            let result = stream(&mut lane, i, pace, secs, t0, tally.clone()).await;
            (lane, result)
        }));
    }
    let mut finished = Vec::new();
    for r in runs {
        let (lane, result) = r.await?;
        finished.push((lane, result?));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_ticks_used = cpu_ticks(pid).saturating_sub(cpu_before);
    sampler.abort();
    // Late pushes land.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Check: each watcher against what was sent, then the store.
    let mut lost = 0u64;
    let mut mismatches = 0u64;
    let mut received = 0u64;
    for (i, (mut conn, collector)) in watchers {
        // A close makes the host close too; the collector then ends.
        let _ = conn.sink.close().await;
        let got = tokio::time::timeout(Duration::from_secs(30), collector)
            .await
            .context("a watcher's socket did not end")??;
        let (_, sent) = &finished[i].1;
        for (seq, delta) in sent.iter().enumerate() {
            match got.get(&(seq as u32)) {
                Some(d) if d == delta => received += 1,
                Some(_) => mismatches += 1,
                None => lost += 1,
            }
        }
    }
    let mut stored_lost = 0u64;
    for (lane, (message, sent)) in finished.iter_mut() {
        let session = lane.session.clone();
        let got = stored(&mut lane.owner, &session, message).await?;
        for (seq, delta) in sent.iter().enumerate() {
            match got.get(&(seq as u32)) {
                Some(d) if d == delta => {}
                Some(_) => mismatches += 1,
                None => stored_lost += 1,
            }
        }
    }
    // A clean stop (SIGTERM) checkpoints the WAL, so the file holds what
    // is stored and nothing of the log.
    let _ = Command::new("kill").arg(pid.to_string()).status().await;
    let mut server = server;
    let _ = tokio::time::timeout(Duration::from_secs(20), server.0.wait()).await;

    let chunks = tally.chunks_sent.load(Ordering::Relaxed);
    let frames = tally.frames_in.load(Ordering::Relaxed);
    let pushes = tally.pushes_out.load(Ordering::Relaxed);
    let mut push = tally.push_ms.lock().expect("lock").clone();
    push.sort_by(f64::total_cmp);
    let mut ack = tally.ack_ms.lock().expect("lock").clone();
    ack.sort_by(f64::total_cmp);
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu_ms_per_frame = cpu_ticks_used as f64 / ticks_per_sec * 1000.0 / frames.max(1) as f64;
    let db = db_bytes(&data);
    let db_per_1000 = db as f64 / chunks.max(1) as f64 * 1000.0;
    let text = tally.text_bytes.load(Ordering::Relaxed);
    let expected_pushes = chunks * args.watchers as u64;
    println!(
        "{} workers × {} watchers ({:?}, {} frames): {:.0} frames/s in, {:.0} pushes/s out; push latency p50 {:.1} / p95 {:.1} / p99 {:.1} ms; ack p50 {:.1} / p95 {:.1} / p99 {:.1} ms; lost {} at watchers ({} of {} chunk deliveries arrived), {} in the store; duplicated {}; changed {}; host CPU {:.3} ms per frame; peak RSS {:.0} MB; database {:.0} bytes per 1,000 chunks, {:.1}× the text streamed",
        args.workers,
        args.watchers,
        args.pace,
        if args.concurrent_frames { "concurrent" } else { "serial" },
        frames as f64 / elapsed,
        pushes as f64 / elapsed,
        percentile(&push, 0.50),
        percentile(&push, 0.95),
        percentile(&push, 0.99),
        percentile(&ack, 0.50),
        percentile(&ack, 0.95),
        percentile(&ack, 0.99),
        lost,
        received,
        expected_pushes,
        stored_lost,
        tally.duplicates.load(Ordering::Relaxed),
        mismatches,
        cpu_ms_per_frame,
        *peak_rss.lock().expect("lock"),
        db_per_1000,
        db as f64 / text.max(1) as f64,
    );
    if lost > 0 || stored_lost > 0 || mismatches > 0 || tally.duplicates.load(Ordering::Relaxed) > 0 {
        bail!("chunks were lost, changed or duplicated");
    }
    Ok(())
}
