//! The OpenAI chat-completions wire shapes: streamed chunks, the final usage
//! chunk, plain completions and errors.

use serde_json::{json, Value};

use crate::script::{Script, ToolCall};

/// How many characters of tool-call arguments go in one streamed piece.
pub const ARGUMENT_PIECE: usize = 16;

/// Fields every chunk and completion of one response shares.
#[derive(Clone, Debug)]
pub struct Meta {
    pub id: String,
    pub model: String,
    pub created: u64,
}

/// Token counts reported for a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub reasoning: u64,
    /// Of the prompt tokens, how many were cached.
    pub cached: u64,
}

impl Usage {
    /// Deterministic figures: a quarter of the request's message characters
    /// as prompt tokens (at least 1); one completion token per streamed
    /// piece, of which the reasoning pieces are reasoning tokens; the
    /// script's cached count (at most the prompt tokens) as cached tokens.
    pub fn estimate(request: &Value, script: &Script) -> Self {
        let chars: usize = request
            .get("messages")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| crate::script::content_text(m).chars().count())
            .sum();
        let arg_pieces = script
            .tool_call
            .as_ref()
            .map(|c| argument_pieces(&c.arguments).len())
            .unwrap_or(0);
        let prompt = (chars as u64 / 4).max(1);
        Self {
            prompt,
            completion: (script.text.len() + script.reasoning.len() + arg_pieces) as u64,
            reasoning: script.reasoning.len() as u64,
            cached: script.cached.min(prompt),
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": { "cached_tokens": self.cached },
            "completion_tokens_details": { "reasoning_tokens": self.reasoning },
        })
    }
}

/// One `chat.completion.chunk` with a single choice.
pub fn chunk(meta: &Meta, delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason }],
    })
}

/// The closing chunk sent when the request asked for
/// `stream_options.include_usage`: no choices, just usage.
pub fn usage_chunk(meta: &Meta, usage: Usage) -> Value {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "choices": [],
        "usage": usage.to_json(),
    })
}

/// Splits tool-call arguments into pieces of [`ARGUMENT_PIECE`] characters.
pub fn argument_pieces(arguments: &str) -> Vec<String> {
    let chars: Vec<char> = arguments.chars().collect();
    chars
        .chunks(ARGUMENT_PIECE)
        .map(|c| c.iter().collect())
        .collect()
}

/// The chunks of a streamed answer, in order: the role, each reasoning
/// piece, each text piece, the tool call (its name and id, then its
/// arguments piece by piece), and — unless the script hangs — the finishing
/// chunk and, if `usage` is given, the usage chunk. `[DONE]` is not included.
///
/// Each entry says whether the stream pauses before it (content pieces do).
pub fn stream_chunks(meta: &Meta, script: &Script, usage: Option<Usage>) -> Vec<(bool, Value)> {
    let mut out = vec![(false, chunk(meta, json!({ "role": "assistant" }), None))];
    for piece in &script.reasoning {
        out.push((true, chunk(meta, json!({ "reasoning_content": piece }), None)));
    }
    for piece in &script.text {
        out.push((true, chunk(meta, json!({ "content": piece }), None)));
    }
    if let Some(call) = &script.tool_call {
        out.extend(tool_call_chunks(meta, call).into_iter().map(|c| (true, c)));
    }
    if script.hang {
        return out;
    }
    out.push((false, chunk(meta, json!({}), Some(script.finish_reason()))));
    if let Some(usage) = usage {
        out.push((false, usage_chunk(meta, usage)));
    }
    out
}

fn tool_call_chunks(meta: &Meta, call: &ToolCall) -> Vec<Value> {
    let mut out = vec![chunk(
        meta,
        json!({ "tool_calls": [{
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": { "name": call.name, "arguments": "" },
        }]}),
        None,
    )];
    for piece in argument_pieces(&call.arguments) {
        out.push(chunk(
            meta,
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] }),
            None,
        ));
    }
    out
}

/// One SSE frame: `data: <json>\n\n`.
pub fn sse_frame(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// The frame that ends a stream.
pub const SSE_DONE: &str = "data: [DONE]\n\n";

/// A whole (non-streamed) `chat.completion`.
pub fn completion(meta: &Meta, script: &Script, usage: Usage) -> Value {
    let mut message = json!({ "role": "assistant", "content": script.full_text() });
    if !script.reasoning.is_empty() {
        message["reasoning_content"] = json!(script.full_reasoning());
    }
    if let Some(call) = &script.tool_call {
        message["tool_calls"] = json!([{
            "id": call.id,
            "type": "function",
            "function": { "name": call.name, "arguments": call.arguments },
        }]);
    }
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": script.finish_reason() }],
        "usage": usage.to_json(),
    })
}

/// An OpenAI-style error body.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "type": if status >= 500 { "server_error" } else { "invalid_request_error" },
            "code": status,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::{split_words, Script, ToolCall};

    fn meta() -> Meta {
        Meta {
            id: "chatcmpl-fake-1".into(),
            model: "fake-model".into(),
            created: 1,
        }
    }

    #[test]
    fn text_stream_shape() {
        let script = Script {
            text: split_words("Echo: hi"),
            ..Script::default()
        };
        let usage = Usage { prompt: 10, completion: 2, reasoning: 0, cached: 4 };
        let chunks: Vec<Value> = stream_chunks(&meta(), &script, Some(usage))
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role":"assistant"}));
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Echo:");
        assert_eq!(chunks[2]["choices"][0]["delta"]["content"], " hi");
        assert_eq!(chunks[2]["choices"][0]["finish_reason"], Value::Null);
        assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
        assert_eq!(chunks[4]["choices"], json!([]));
        assert_eq!(chunks[4]["usage"]["prompt_tokens"], 10);
        assert_eq!(chunks[4]["usage"]["total_tokens"], 12);
        assert_eq!(chunks[4]["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
        assert_eq!(chunks[4]["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-fake-1");
            assert_eq!(c["model"], "fake-model");
        }
    }

    #[test]
    fn reasoning_then_tool_call_shape() {
        let args = r#"{"command":"echo hi there, a long one"}"#;
        let script = Script {
            reasoning: split_words("hmm ok"),
            tool_call: Some(ToolCall {
                id: "call_1".into(),
                name: "bash".into(),
                arguments: args.into(),
            }),
            ..Script::default()
        };
        let chunks: Vec<Value> = stream_chunks(&meta(), &script, None)
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        assert_eq!(chunks[1]["choices"][0]["delta"], json!({"reasoning_content":"hmm"}));
        assert_eq!(chunks[2]["choices"][0]["delta"], json!({"reasoning_content":" ok"}));
        let first = &chunks[3]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(first["index"], 0);
        assert_eq!(first["id"], "call_1");
        assert_eq!(first["type"], "function");
        assert_eq!(first["function"]["name"], "bash");
        assert_eq!(first["function"]["arguments"], "");
        let mut joined = String::new();
        let last = chunks.len() - 1;
        for c in &chunks[4..last] {
            let call = &c["choices"][0]["delta"]["tool_calls"][0];
            assert_eq!(call["index"], 0);
            assert!(call.get("id").is_none());
            joined.push_str(call["function"]["arguments"].as_str().unwrap());
        }
        assert_eq!(joined, args);
        assert!(last > 5, "arguments span several chunks");
        assert_eq!(chunks[last]["choices"][0]["finish_reason"], "tool_calls");
    }

    #[test]
    fn hang_has_no_finish() {
        let script = Script {
            text: split_words("a b"),
            hang: true,
            ..Script::default()
        };
        let chunks = stream_chunks(&meta(), &script, Some(Usage { prompt: 1, completion: 1, reasoning: 0, cached: 0 }));
        assert_eq!(chunks.len(), 3);
        assert!(chunks.iter().all(|(_, c)| c["choices"][0]["finish_reason"].is_null()));
    }

    #[test]
    fn sse_framing() {
        assert_eq!(sse_frame(&json!({"a":1})), "data: {\"a\":1}\n\n");
        assert_eq!(SSE_DONE, "data: [DONE]\n\n");
    }

    #[test]
    fn plain_completion_shape() {
        let script = Script {
            reasoning: split_words("hmm"),
            text: split_words("Echo: hi"),
            ..Script::default()
        };
        let c = completion(&meta(), &script, Usage { prompt: 3, completion: 3, reasoning: 1, cached: 0 });
        assert_eq!(c["object"], "chat.completion");
        assert_eq!(c["choices"][0]["message"]["content"], "Echo: hi");
        assert_eq!(c["choices"][0]["message"]["reasoning_content"], "hmm");
        assert_eq!(c["choices"][0]["finish_reason"], "stop");
        assert_eq!(c["usage"]["total_tokens"], 6);
    }

    #[test]
    fn usage_estimate() {
        let request = json!({"messages":[{"role":"user","content":"abcdefgh"}]});
        let script = Script {
            reasoning: split_words("a b"),
            text: split_words("c"),
            cached: 5,
            ..Script::default()
        };
        assert_eq!(
            Usage::estimate(&request, &script),
            Usage { prompt: 2, completion: 3, reasoning: 2, cached: 2 }
        );
    }
}
