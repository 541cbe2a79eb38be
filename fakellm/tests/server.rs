//! The server over real HTTP: stream framing, plain completions, errors,
//! stalls, and the request log.

use std::time::Duration;

use serde_json::{json, Value};
use tether_fakellm::{Config, FakeLlm};

async fn start() -> FakeLlm {
    FakeLlm::start(Config {
        delay: Duration::ZERO,
        ..Config::default()
    })
    .await
    .expect("server starts")
}

fn body(user: &str, stream: bool) -> Value {
    json!({
        "model": "fake-model",
        "stream": stream,
        "stream_options": { "include_usage": true },
        "messages": [
            { "role": "system", "content": "You are a coder.\n  Working directory: /w" },
            { "role": "user", "content": user },
        ],
        "tools": [
            { "type": "function", "function": { "name": "bash", "parameters": { "type": "object", "properties": { "command": {} } } } }
        ],
    })
}

/// The `data:` payloads of an SSE body, checking the framing on the way.
fn frames(text: &str) -> Vec<String> {
    assert!(text.ends_with("\n\n"), "frames end with a blank line");
    text.split_terminator("\n\n")
        .map(|frame| {
            frame
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data frame: {frame:?}"))
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn streams_text_with_usage_and_done() {
    let server = start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body("[tokens 4]", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let frames = frames(&response.text().await.unwrap());
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "w0 w1 w2 w3");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    server.shutdown().await;
}

#[tokio::test]
async fn streams_a_tool_call_then_closing_text() {
    let server = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let text = client
        .post(&url)
        .json(&body("[bash echo hi]", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut args = String::new();
    let mut name = None;
    let mut finish = None;
    for frame in frames(&text) {
        if frame == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&frame).unwrap();
        if let Some(call) = chunk["choices"][0]["delta"]["tool_calls"].get(0) {
            if let Some(n) = call["function"]["name"].as_str() {
                name = Some(n.to_string());
            }
            args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = chunk["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(name.as_deref(), Some("bash"));
    assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"command": "echo hi"}));
    assert_eq!(finish.as_deref(), Some("tool_calls"));

    // The tool result comes back: the turn ends with text.
    let mut next = body("[bash echo hi]", false);
    next["messages"].as_array_mut().unwrap().extend([
        json!({"role":"assistant","content":"","tool_calls":[{"id":"c1","type":"function","function":{"name":"bash","arguments":args}}]}),
        json!({"role":"tool","tool_call_id":"c1","content":"hi\n"}),
    ]);
    let done: Value = client.post(&url).json(&next).send().await.unwrap().json().await.unwrap();
    assert_eq!(done["object"], "chat.completion");
    assert_eq!(done["choices"][0]["message"]["content"], "Ran it. hi");
    assert_eq!(done["choices"][0]["finish_reason"], "stop");
    assert_eq!(server.completions().len(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn models_lists_the_fake_model() {
    let server = start().await;
    let models: Value = reqwest::get(format!("{}/models", server.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "fake-model");
    server.shutdown().await;
}

#[tokio::test]
async fn scripted_errors_count_and_carry_retry_after() {
    let server = start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", server.base_url());
    let request = body("[error 503 1] [retry-after 7] hi", true);
    let first = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after-ms"], "7");
    let error: Value = first.json().await.unwrap();
    assert_eq!(error["error"]["message"], "fakellm: scripted error 503");
    // The retry of the same request succeeds.
    let second = client.post(&url).json(&request).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(second.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    server.shutdown().await;
}

#[tokio::test]
async fn hang_stalls_until_the_client_leaves_and_shutdown_still_works() {
    let server = start().await;
    let mut response = reqwest::Client::new()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body("[hang]", true))
        .send()
        .await
        .unwrap();
    let mut received = String::new();
    while !received.contains(" it\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("pieces arrive")
            .unwrap()
            .expect("stream open");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    // Nothing more comes: no finish, no [DONE].
    let more = tokio::time::timeout(Duration::from_millis(300), response.chunk()).await;
    assert!(more.is_err(), "the stream stalls");
    assert!(!received.contains("finish_reason\":\"stop"));
    // Shutdown ends the stalled stream instead of waiting for it.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown does not wait for the stalled stream");
    drop(response);
}

#[tokio::test]
async fn requests_go_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.jsonl");
    let server = FakeLlm::start(Config {
        log: Some(log.clone()),
        ..Config::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    client
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body("hello", false))
        .send()
        .await
        .unwrap();
    client.get(format!("{}/models", server.base_url())).send().await.unwrap();
    server.shutdown().await;
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 0);
    assert_eq!(lines[0]["path"], "/v1/chat/completions");
    assert_eq!(lines[0]["body"]["messages"][1]["content"], "hello");
    assert_eq!(lines[1]["method"], "GET");
}
