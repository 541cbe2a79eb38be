//! # tether-fakellm
//!
//! A scripted fake OpenAI-compatible LLM server. opencode talks to it through
//! its `@ai-sdk/openai-compatible` provider, so Tether's tests can drive a
//! real `opencode serve` without a real model, deterministically.
//!
//! Start it in-process with [`FakeLlm::start`], or run the binary:
//! `tether-fakellm --port 0 [--log requests.jsonl] [--delay MS] [--retry-after-ms MS]` prints
//! `fakellm listening on http://127.0.0.1:PORT` on stdout.
//!
//! ## Routes
//!
//! - `POST /v1/chat/completions`: with `"stream": true`, an SSE stream of
//!   `data: {chat.completion.chunk}\n\n` frames ending with `data: [DONE]`;
//!   otherwise a plain `chat.completion` JSON object.
//! - `GET /v1/models`: `{"object":"list","data":[{"id":"fake-model",…}]}`.
//!
//! ## Stream shape
//!
//! Every chunk has `id`, `object: "chat.completion.chunk"`, `created`,
//! `model` (echoed from the request) and one choice with `index: 0`:
//!
//! 1. `delta: {"role":"assistant"}`;
//! 2. one chunk per reasoning piece: `delta: {"reasoning_content": "…"}`;
//! 3. one chunk per text piece: `delta: {"content": "…"}`;
//! 4. a tool call: first `delta.tool_calls: [{index: 0, id, type: "function",
//!    function: {name, arguments: ""}}]`, then the arguments JSON in pieces of
//!    16 characters as `[{index: 0, function: {arguments: "…"}}]`;
//! 5. `delta: {}` with `finish_reason` `"stop"` or `"tool_calls"`;
//! 6. when the request has `stream_options.include_usage`: a chunk with
//!    `choices: []` and `usage {prompt_tokens, completion_tokens,
//!    total_tokens, prompt_tokens_details.cached_tokens,
//!    completion_tokens_details.reasoning_tokens}`.
//!
//! The pause before each content piece (steps 2–4) is the delay (2 ms unless
//! `[delay MS]` or `--delay` says otherwise). Prompt tokens are a quarter of
//! the characters of the request's messages; completion tokens count the
//! streamed pieces.
//!
//! ## Directives
//!
//! What the fake answers is chosen by `[name args]` directives in the **last
//! user message** of the request. A directive ends at its matching `]`
//! (brackets nest); bracketed text that is not a valid directive stays text.
//! The text with directives cut out is called the *rest* below.
//!
//! | Directive | Answer |
//! |---|---|
//! | *(none)* | `Echo: <rest>`, streamed word by word (`Echo:`, ` hello`, ` world`); just `Echo:` when the rest is empty. |
//! | `[tokens N]` | `w0 w1 … w(N-1)`: exactly N pieces (`w0`, ` w1`, …). |
//! | `[delay MS]` | pause MS milliseconds before each streamed piece. |
//! | `[burst N]` | stream N pieces at a time (fewer, larger deltas). |
//! | `[think]` | stream reasoning ([`script::THINKING`]) before the answer. |
//! | `[cached N]` | report N of the prompt tokens (at most all) as `cached_tokens`. |
//! | `[bash COMMAND]` | a `bash` tool call `{"command": COMMAND}` (plus `description` if the tool's schema has one); once the tool result is back: `Ran it. <first line of the result>`. |
//! | `[write PATH CONTENT…]` | a `write` call `{"filePath", "content"}`; then `Wrote PATH.` CONTENT is the rest of the directive, or one `"quoted string"` (with `\n`, `\t`, `\"`, `\\`). |
//! | `[edit PATH OLD NEW]` | a `read` call of PATH (opencode's edit tool refuses files not read first), then an `edit` call `{"filePath", "oldString", "newString"}`; then `Edited PATH.` Quote words with spaces. |
//! | `[question]` | a `question` call asking [`script::QUESTION`] (header `Color`, options `Blue` / `Red`); once answered: `You chose X.` |
//! | `[subagent PROMPT]`, `[subagent "DESCRIPTION" PROMPT]` | a `task` call `{"description", "prompt": PROMPT, "subagent_type": "general"}` (description `Run a subtask` unless given): opencode runs a subagent in a child session, whose own requests come here with PROMPT as their user message, so directives inside PROMPT (`[subagent [bash echo hi]]`) script the subagent; once the task's result is back: `The subagent said: <first line of the subagent's answer>`. |
//! | `[error]`, `[error STATUS]` | HTTP STATUS (default 500) with an OpenAI-style error body. |
//! | `[error STATUS COUNT]` | the first COUNT attempts of this request get the error, later retries are answered normally. |
//! | `[retry-after MS]` | send `retry-after-ms: MS` with the scripted error. opencode retries 429 and 5xx errors 5 times, by default after about 2, 4, 8, 16 and 30 s (over a minute in all); it waits MS instead when the header is present. |
//! | `[hang]` | stream `Working on it`, then stall (no finish) until the client disconnects. |
//!
//! Relative paths are made absolute against the `Working directory:` line of
//! opencode's system prompt (its write tool wants absolute paths).
//!
//! A tool-using directive is a script of steps: the step is the number of
//! `tool` messages after the last user message, so each request of a turn
//! gets the next step and the turn ends with text after the tool ran. If the
//! request does not offer the tool, the answer is
//! `The <tool> tool is not available.` `[think]` reasoning comes with every
//! step; `[tokens N]` only replaces the echo of a turn without tools.
//!
//! opencode's **title requests** (system prompt naming a "title generator")
//! are always answered with the first line of the rest (at most 50
//! characters) or `Fake session`; they never fail or hang.
//!
//! Every request is kept in memory ([`FakeLlm::requests`]) and, with
//! `--log FILE`, appended to FILE as a JSON line
//! `{"seq", "method", "path", "body"}`.

pub mod directive;
pub mod script;
pub mod wire;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::script::{Conversation, Reply, Script};
use crate::wire::{Meta, Usage};

/// How to run the server.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// Append every request to this file as JSON lines.
    pub log: Option<PathBuf>,
    /// Pause before each streamed piece unless a `[delay MS]` says otherwise.
    pub delay: Duration,
    /// The model id `GET /v1/models` lists.
    pub model: String,
    /// `retry-after-ms` header sent with scripted errors unless a
    /// `[retry-after MS]` says otherwise; `None` sends none.
    pub retry_after_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: None,
            delay: script::DEFAULT_DELAY,
            model: "fake-model".into(),
            retry_after_ms: None,
        }
    }
}

/// One request as received.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The JSON body, `Null` if none or not JSON.
    pub body: Value,
}

struct Shared {
    config: Config,
    requests: Mutex<Vec<Recorded>>,
    log: Mutex<Option<File>>,
    /// Scripted errors already returned, per conversation state.
    error_attempts: Mutex<HashMap<String, u32>>,
    responses: Mutex<u64>,
    shutdown: watch::Receiver<bool>,
}

type AppState = Arc<Shared>;

/// A running fake server.
pub struct FakeLlm {
    addr: SocketAddr,
    shared: AppState,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl FakeLlm {
    /// Binds and starts serving in the background.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let log = match &config.log {
            Some(path) => Some(OpenOptions::new().create(true).append(true).open(path)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let (stop, shutdown) = watch::channel(false);
        let shared = Arc::new(Shared {
            config,
            requests: Mutex::new(Vec::new()),
            log: Mutex::new(log),
            error_attempts: Mutex::new(HashMap::new()),
            responses: Mutex::new(0),
            shutdown: shutdown.clone(),
        });
        let app = router(shared.clone());
        let mut until = shutdown;
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = until.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::error!("fakellm server failed: {e}");
            }
        });
        Ok(Self {
            addr,
            shared,
            stop,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`, the `baseURL` for an OpenAI-compatible client.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// The bodies of the chat-completion requests received so far.
    pub fn completions(&self) -> Vec<Value> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .map(|r| r.body.clone())
            .collect()
    }

    /// Stops serving: stalled streams end and the server task finishes.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .fallback(not_found)
        .with_state(state)
}

fn record(state: &Shared, method: &Method, path: &str, body: Value) {
    let entry = Recorded {
        method: method.to_string(),
        path: path.to_string(),
        body,
    };
    let seq = {
        let mut requests = lock(&state.requests);
        requests.push(entry.clone());
        requests.len() - 1
    };
    if let Some(file) = lock(&state.log).as_mut() {
        let line = json!({
            "seq": seq,
            "method": entry.method,
            "path": entry.path,
            "body": entry.body,
        });
        if let Err(e) = writeln!(file, "{line}").and_then(|_| file.flush()) {
            tracing::warn!("fakellm: cannot write the request log: {e}");
        }
    }
}

async fn not_found(State(state): State<AppState>, method: Method, uri: Uri, body: Bytes) -> Response {
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    record(&state, &method, uri.path(), body);
    (
        StatusCode::NOT_FOUND,
        Json(wire::error_body(404, &format!("fakellm: no route {method} {}", uri.path()))),
    )
        .into_response()
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    record(&state, &Method::GET, "/v1/models", Value::Null);
    Json(json!({
        "object": "list",
        "data": [{ "id": state.config.model, "object": "model", "created": 0, "owned_by": "tether-fakellm" }],
    }))
}

async fn chat_completions(State(state): State<AppState>, body: Bytes) -> Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            record(&state, &Method::POST, "/v1/chat/completions", Value::Null);
            return (
                StatusCode::BAD_REQUEST,
                Json(wire::error_body(400, &format!("fakellm: body is not JSON: {e}"))),
            )
                .into_response();
        }
    };
    record(&state, &Method::POST, "/v1/chat/completions", request.clone());

    let conv = Conversation::from_request(&request);
    let parsed = directive::parse(&conv.user_text);
    let key = format!("{}\u{0}{}", conv.message_count, conv.user_text);
    let attempts = lock(&state.error_attempts).get(&key).copied().unwrap_or(0);
    let reply = script::plan_for(&conv, &parsed, attempts, state.config.delay);
    let n = {
        let mut responses = lock(&state.responses);
        *responses += 1;
        *responses
    };
    let meta = Meta {
        id: format!("chatcmpl-fake-{n}"),
        model: request
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&state.config.model)
            .to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let script = match reply {
        Reply::Error {
            status,
            message,
            retry_after_ms,
        } => {
            *lock(&state.error_attempts).entry(key).or_insert(0) += 1;
            tracing::info!(response = n, status, "fakellm: scripted error");
            let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = (code, Json(wire::error_body(status, &message))).into_response();
            if let Some(ms) = retry_after_ms.or(state.config.retry_after_ms) {
                if let Ok(value) = header::HeaderValue::from_str(&ms.to_string()) {
                    response.headers_mut().insert("retry-after-ms", value);
                }
            }
            return response;
        }
        Reply::Answer(script) => script,
    };
    tracing::info!(
        response = n,
        title = conv.is_title,
        tool = script.tool_call.as_ref().map(|c| c.name.as_str()),
        hang = script.hang,
        "fakellm: answering"
    );
    let usage = Usage::estimate(&request, &script);
    let streaming = request.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if !streaming {
        if script.hang {
            // Stall until the client goes away (the handler is dropped) or shutdown.
            let mut shutdown = state.shutdown.clone();
            let _ = shutdown.wait_for(|stop| *stop).await;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        return Json(wire::completion(&meta, &script, usage)).into_response();
    }
    let include_usage = request
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    stream_response(&state, meta, script, include_usage.then_some(usage))
}

fn stream_response(state: &Shared, meta: Meta, script: Script, usage: Option<Usage>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let chunks = wire::stream_chunks(&meta, &script, usage);
    let delay = script.delay;
    let hang = script.hang;
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        for (pause, chunk) in chunks {
            if pause && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Bytes::from(wire::sse_frame(&chunk))).await.is_err() {
                tracing::info!(id = %meta.id, "fakellm: client went away mid-stream");
                return;
            }
        }
        if hang {
            tokio::select! {
                _ = tx.closed() => tracing::info!(id = %meta.id, "fakellm: client left the stalled stream"),
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
            return;
        }
        let _ = tx.send(Bytes::from_static(wire::SSE_DONE.as_bytes())).await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
