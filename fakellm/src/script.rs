//! Deciding what to answer: reads a chat-completions request body and turns
//! the directives of its last user message into a [`Reply`].

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::directive::{self, Directive, Parsed};

/// The fallback delay between streamed pieces when no `[delay MS]` is given.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(2);

/// What to do with one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Answer with an HTTP error, with a `retry-after-ms` header if set.
    Error {
        status: u16,
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Answer with a completion.
    Answer(Script),
}

/// A completion, piece by piece.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Script {
    /// Reasoning pieces (`delta.reasoning_content`), streamed first.
    pub reasoning: Vec<String>,
    /// Text pieces (`delta.content`).
    pub text: Vec<String>,
    /// A tool call, streamed after the text.
    pub tool_call: Option<ToolCall>,
    /// Stall after the text instead of finishing.
    pub hang: bool,
    /// Pause between pieces.
    pub delay: Duration,
    /// Prompt tokens to report as cached.
    pub cached: u64,
}

impl Script {
    pub fn finish_reason(&self) -> &'static str {
        if self.tool_call.is_some() {
            "tool_calls"
        } else {
            "stop"
        }
    }

    pub fn full_text(&self) -> String {
        self.text.concat()
    }

    pub fn full_reasoning(&self) -> String {
        self.reasoning.concat()
    }
}

/// A tool call the fake model makes.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments, as the JSON text the model "writes".
    pub arguments: String,
}

/// What the request says, as far as the script cares.
#[derive(Clone, Debug, Default)]
pub struct Conversation {
    /// Text of the last user message (text parts joined with newlines).
    pub user_text: String,
    /// Contents of the `tool` messages after the last user message, in order.
    pub tool_results: Vec<String>,
    /// How many messages the request holds.
    pub message_count: usize,
    /// The tools offered: name → JSON schema of the parameters.
    pub tools: Map<String, Value>,
    /// opencode's title request (its system prompt names a title generator).
    pub is_title: bool,
    /// The working directory named in the system prompt, if any.
    pub workdir: Option<String>,
}

impl Conversation {
    pub fn from_request(body: &Value) -> Self {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let last_user = messages
            .iter()
            .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"));
        let user_text = last_user
            .map(|i| content_text(&messages[i]))
            .unwrap_or_default();
        let tool_results = match last_user {
            Some(i) => messages[i + 1..]
                .iter()
                .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
                .map(content_text)
                .collect(),
            None => Vec::new(),
        };
        let system: String = messages
            .iter()
            .filter(|m| m.get("role").and_then(Value::as_str) == Some("system"))
            .map(content_text)
            .collect::<Vec<_>>()
            .join("\n");
        let mut tools = Map::new();
        for tool in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
            let function = tool.get("function").unwrap_or(tool);
            if let Some(name) = function.get("name").and_then(Value::as_str) {
                let params = function.get("parameters").cloned().unwrap_or(Value::Null);
                tools.insert(name.to_string(), params);
            }
        }
        let workdir = system.lines().find_map(|line| {
            line.trim()
                .strip_prefix("Working directory:")
                .map(|d| d.trim().to_string())
                .filter(|d| !d.is_empty())
        });
        Self {
            user_text,
            tool_results,
            message_count: messages.len(),
            tools,
            is_title: system.contains("title generator"),
            workdir,
        }
    }

    /// Whether the request offers tool `name` and its schema has property `prop`.
    fn tool_has(&self, name: &str, prop: &str) -> bool {
        self.tools
            .get(name)
            .and_then(|p| p.get("properties"))
            .and_then(|p| p.get(prop))
            .is_some()
    }

    /// `path` made absolute against the working directory, when one is known.
    fn abs_path(&self, path: &str) -> String {
        match &self.workdir {
            Some(dir) if !path.starts_with('/') => format!("{}/{}", dir.trim_end_matches('/'), path),
            _ => path.to_string(),
        }
    }
}

/// The text of a message's `content`: a string, or the `text` of its parts.
pub fn content_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Splits text into word-ish pieces: each piece is a run of whitespace
/// followed by a run of non-whitespace. Concatenated they give `s` back.
pub fn split_words(s: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    for c in s.chars() {
        if c.is_whitespace() {
            if in_word {
                pieces.push(std::mem::take(&mut current));
                in_word = false;
            }
        } else {
            in_word = true;
        }
        current.push(c);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// The text of `[tokens N]`: `w0 w1 … w(N-1)`, one piece per word.
pub fn numbered_tokens(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| if i == 0 { "w0".to_string() } else { format!(" w{i}") })
        .collect()
}

/// The reasoning streamed for `[think]`.
pub const THINKING: &str = "Let me think about this step by step. The user wants an answer, so I will give one.";
/// The text streamed by `[hang]` before it stalls.
pub const HANG_TEXT: &str = "Working on it";
/// The question asked by `[question]`.
pub const QUESTION: &str = "Which color do you prefer?";
/// The agent `[subagent …]` asks the `task` tool for.
pub const SUBAGENT_TYPE: &str = "general";
/// The options offered by `[question]`.
pub const QUESTION_OPTIONS: [&str; 2] = ["Blue", "Red"];

/// Plans the answer to `body`. `attempts` is how many earlier requests of
/// this same conversation state were answered with a scripted error (for
/// `[error STATUS COUNT]`).
pub fn plan(body: &Value, attempts: u32, default_delay: Duration) -> Reply {
    let conv = Conversation::from_request(body);
    let parsed = directive::parse(&conv.user_text);
    plan_for(&conv, &parsed, attempts, default_delay)
}

pub fn plan_for(conv: &Conversation, parsed: &Parsed, attempts: u32, default_delay: Duration) -> Reply {
    let delay = parsed
        .delay()
        .map(Duration::from_millis)
        .unwrap_or(default_delay);
    if conv.is_title {
        // Title requests never fail or hang, whatever the message says.
        let title = parsed.text.lines().next().unwrap_or("").trim();
        let title = if title.is_empty() {
            "Fake session".to_string()
        } else {
            title.chars().take(50).collect()
        };
        return Reply::Answer(Script {
            text: split_words(&title),
            delay,
            ..Script::default()
        });
    }
    if let Some((status, count)) = parsed.error() {
        if count.is_none_or(|c| attempts < c) {
            return Reply::Error {
                status,
                message: format!("fakellm: scripted error {status}"),
                retry_after_ms: parsed.retry_after(),
            };
        }
    }
    let reasoning = if parsed.think() {
        split_words(THINKING)
    } else {
        Vec::new()
    };
    if parsed.hang() {
        return Reply::Answer(Script {
            reasoning,
            text: split_words(HANG_TEXT),
            hang: true,
            delay,
            ..Script::default()
        });
    }
    let step = conv.tool_results.len();
    let last_result = conv.tool_results.last().map(String::as_str).unwrap_or("");
    let (tool_call, text) = match parsed.action() {
        Some(action) => act(conv, action, step, last_result),
        None => (None, None),
    };
    let text = match (text, &tool_call) {
        (Some(t), _) => split_words(&t),
        (None, Some(_)) => Vec::new(),
        (None, None) => match parsed.tokens() {
            Some(n) => numbered_tokens(n),
            None => split_words(format!("Echo: {}", parsed.text).trim_end()),
        },
    };
    let text = match parsed.burst() {
        Some(n) => text.chunks(n).map(|group| group.concat()).collect(),
        None => text,
    };
    Reply::Answer(Script {
        reasoning,
        text,
        tool_call,
        hang: false,
        delay,
        cached: parsed.cached().unwrap_or(0),
    })
}

/// Step `step` of a tool-using directive: a tool call, or the closing text.
fn act(conv: &Conversation, action: &Directive, step: usize, last_result: &str) -> (Option<ToolCall>, Option<String>) {
    let call = |name: &str, args: Value| -> (Option<ToolCall>, Option<String>) {
        if !conv.tools.contains_key(name) {
            return (None, Some(format!("The {name} tool is not available.")));
        }
        let id = format!("call_fake_{}_{}", conv.message_count, step);
        (
            Some(ToolCall {
                id,
                name: name.to_string(),
                arguments: args.to_string(),
            }),
            None,
        )
    };
    match (action, step) {
        (Directive::Bash(command), 0) => {
            let mut args = json!({ "command": command });
            if conv.tool_has("bash", "description") {
                args["description"] = json!(format!("Runs {command}"));
            }
            call("bash", args)
        }
        (Directive::Bash(_), _) => {
            let first = last_result.lines().next().unwrap_or("").trim();
            (None, Some(format!("Ran it. {first}").trim_end().to_string()))
        }
        (Directive::Write { path, content }, 0) => call(
            "write",
            json!({ "filePath": conv.abs_path(path), "content": content }),
        ),
        (Directive::Write { path, .. }, _) => (None, Some(format!("Wrote {path}."))),
        (Directive::Edit { path, .. }, 0) => call("read", json!({ "filePath": conv.abs_path(path) })),
        (Directive::Edit { path, old, new }, 1) => call(
            "edit",
            json!({ "filePath": conv.abs_path(path), "oldString": old, "newString": new }),
        ),
        (Directive::Edit { path, .. }, _) => (None, Some(format!("Edited {path}."))),
        (Directive::Question, 0) => call(
            "question",
            json!({ "questions": [{
                "question": QUESTION,
                "header": "Color",
                "options": [
                    { "label": QUESTION_OPTIONS[0], "description": "The color of the sky" },
                    { "label": QUESTION_OPTIONS[1], "description": "The color of fire" },
                ],
            }]}),
        ),
        (Directive::Question, _) => (None, Some(format!("You chose {}.", chosen(last_result)))),
        (Directive::Subagent { description, prompt }, 0) => call(
            "task",
            json!({ "description": description, "prompt": prompt, "subagent_type": SUBAGENT_TYPE }),
        ),
        (Directive::Subagent { .. }, _) => (
            None,
            Some(format!("The subagent said: {}", subagent_said(last_result)).trim_end().to_string()),
        ),
        // Not tool directives; `Parsed::action` never yields them.
        _ => (None, None),
    }
}

/// The first line of what a subagent answered, from the `task` tool's
/// result (opencode wraps it: `task_id: …` then `<task_result>…</task_result>`).
fn subagent_said(result: &str) -> String {
    let inner = match (result.find("<task_result>"), result.find("</task_result>")) {
        (Some(a), Some(b)) if a < b => &result[a + "<task_result>".len()..b],
        _ => result,
    };
    inner
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("task_id:"))
        .unwrap_or("")
        .to_string()
}

/// The option a question's tool result reports: the text after `="` up to
/// the next quote (opencode's `"question"="answer"` form), else the first
/// option label found, else `nothing`.
fn chosen(result: &str) -> String {
    if let Some(i) = result.find("=\"") {
        let rest = &result[i + 2..];
        if let Some(end) = rest.find('"') {
            return rest[..end].to_string();
        }
    }
    QUESTION_OPTIONS
        .iter()
        .filter_map(|o| result.find(o).map(|i| (i, *o)))
        .min()
        .map(|(_, o)| o.to_string())
        .unwrap_or_else(|| "nothing".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Value {
        json!([
            {"type":"function","function":{"name":"bash","parameters":{"type":"object","properties":{"command":{"type":"string"}}}}},
            {"type":"function","function":{"name":"write","parameters":{"type":"object","properties":{"filePath":{},"content":{}}}}},
            {"type":"function","function":{"name":"read","parameters":{"type":"object","properties":{"filePath":{}}}}},
            {"type":"function","function":{"name":"edit","parameters":{"type":"object","properties":{"filePath":{},"oldString":{},"newString":{}}}}},
            {"type":"function","function":{"name":"question","parameters":{"type":"object","properties":{"questions":{}}}}}
        ])
    }

    fn request(user: &str, after: Vec<Value>) -> Value {
        let mut messages = vec![
            json!({"role":"system","content":"You are a coder.\n<env>\n  Working directory: /w\n</env>"}),
            json!({"role":"user","content":[{"type":"text","text":user}]}),
        ];
        messages.extend(after);
        json!({"model":"fake-model","stream":true,"messages":messages,"tools":tools()})
    }

    fn answer(body: &Value) -> Script {
        match plan(body, 0, DEFAULT_DELAY) {
            Reply::Answer(s) => s,
            other => panic!("expected an answer, got {other:?}"),
        }
    }

    fn tool_turn(call_id: &str, name: &str, result: &str) -> Vec<Value> {
        vec![
            json!({"role":"assistant","content":null,"tool_calls":[{"id":call_id,"type":"function","function":{"name":name,"arguments":"{}"}}]}),
            json!({"role":"tool","tool_call_id":call_id,"content":result}),
        ]
    }

    #[test]
    fn split_words_round_trips() {
        for s in ["", "a", "Echo: hello  world", " lead\nand trail ", "x\n\ny"] {
            assert_eq!(split_words(s).concat(), s);
        }
        assert_eq!(split_words("Echo: hi there"), vec!["Echo:", " hi", " there"]);
    }

    #[test]
    fn echo_by_default() {
        let s = answer(&request("hello world", vec![]));
        assert_eq!(s.full_text(), "Echo: hello world");
        assert_eq!(s.text.len(), 3);
        assert!(s.reasoning.is_empty());
        assert_eq!(s.finish_reason(), "stop");
    }

    #[test]
    fn echo_of_nothing_has_no_trailing_space() {
        assert_eq!(answer(&request("[think]", vec![])).full_text(), "Echo:");
    }

    #[test]
    fn tokens_and_delay() {
        let s = answer(&request("[tokens 5] [delay 30]", vec![]));
        assert_eq!(s.full_text(), "w0 w1 w2 w3 w4");
        assert_eq!(s.text.len(), 5);
        assert_eq!(s.delay, Duration::from_millis(30));
    }

    #[test]
    fn think_streams_reasoning_first() {
        let s = answer(&request("[think] [cached 9] why", vec![]));
        assert_eq!(s.cached, 9);
        assert_eq!(s.full_reasoning(), THINKING);
        assert_eq!(s.full_text(), "Echo: why");
    }

    #[test]
    fn bash_calls_then_reports_the_first_output_line() {
        let s = answer(&request("[bash echo hi]", vec![]));
        let call = s.tool_call.clone().expect("a tool call");
        assert_eq!(call.name, "bash");
        assert_eq!(serde_json::from_str::<Value>(&call.arguments).unwrap(), json!({"command":"echo hi"}));
        assert!(s.text.is_empty());
        assert_eq!(s.finish_reason(), "tool_calls");

        let s = answer(&request("[bash echo hi]", tool_turn("c1", "bash", "hi\nmore\n")));
        assert!(s.tool_call.is_none());
        assert_eq!(s.full_text(), "Ran it. hi");
    }

    #[test]
    fn bash_description_only_when_the_schema_has_it() {
        let mut body = request("[bash ls]", vec![]);
        body["tools"][0]["function"]["parameters"]["properties"]["description"] = json!({"type":"string"});
        let call = answer(&body).tool_call.unwrap();
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        assert_eq!(args["description"], "Runs ls");
    }

    #[test]
    fn write_uses_an_absolute_path() {
        let s = answer(&request("[write hello.txt hi there]", vec![]));
        let call = s.tool_call.unwrap();
        assert_eq!(call.name, "write");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            json!({"filePath":"/w/hello.txt","content":"hi there"})
        );
        let s = answer(&request("[write hello.txt hi there]", tool_turn("c1", "write", "Wrote file successfully.")));
        assert_eq!(s.full_text(), "Wrote hello.txt.");
    }

    #[test]
    fn edit_reads_first() {
        let d = "[edit a.txt old new]";
        assert_eq!(answer(&request(d, vec![])).tool_call.unwrap().name, "read");
        let after_read = tool_turn("c1", "read", "1: old");
        let call = answer(&request(d, after_read.clone())).tool_call.unwrap();
        assert_eq!(call.name, "edit");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            json!({"filePath":"/w/a.txt","oldString":"old","newString":"new"})
        );
        let mut both = after_read;
        both.extend(tool_turn("c2", "edit", "Edit applied successfully."));
        assert_eq!(answer(&request(d, both)).full_text(), "Edited a.txt.");
    }

    #[test]
    fn question_then_the_choice() {
        let s = answer(&request("[question]", vec![]));
        let args: Value = serde_json::from_str(&s.tool_call.unwrap().arguments).unwrap();
        assert_eq!(args["questions"][0]["options"][1]["label"], "Red");
        let result = r#"User has answered your questions: "Which color do you prefer?"="Red". You can now continue."#;
        let s = answer(&request("[question]", tool_turn("c1", "question", result)));
        assert_eq!(s.full_text(), "You chose Red.");
        assert_eq!(chosen("picked Blue"), "Blue");
    }

    #[test]
    fn subagent_calls_task_then_reports_what_it_said() {
        let mut body = request("[subagent \"Say hi\" [bash echo hi]]", vec![]);
        body["tools"].as_array_mut().unwrap().push(json!({"type":"function","function":{"name":"task","parameters":{"type":"object","properties":{"description":{},"prompt":{},"subagent_type":{}}}}}));
        let s = answer(&body);
        let call = s.tool_call.unwrap();
        assert_eq!(call.name, "task");
        assert_eq!(
            serde_json::from_str::<Value>(&call.arguments).unwrap(),
            json!({"description":"Say hi","prompt":"[bash echo hi]","subagent_type":"general"})
        );
        let result = "task_id: ses_1 (for resuming to continue this task if needed)\n\n<task_result>\nRan it. hi\n</task_result>";
        let mut after = request("[subagent \"Say hi\" [bash echo hi]]", tool_turn("c1", "task", result));
        after["tools"] = body["tools"].clone();
        assert_eq!(answer(&after).full_text(), "The subagent said: Ran it. hi");
        // The subagent's own request: its prompt's directives drive it.
        assert_eq!(answer(&request("[bash echo hi]", vec![])).tool_call.unwrap().name, "bash");
    }

    #[test]
    fn missing_tool_is_reported_in_text() {
        let mut body = request("[question]", vec![]);
        body["tools"] = json!([]);
        let s = answer(&body);
        assert!(s.tool_call.is_none());
        assert_eq!(s.full_text(), "The question tool is not available.");
    }

    #[test]
    fn errors_and_counted_errors() {
        let body = request("[error]", vec![]);
        assert!(matches!(plan(&body, 7, DEFAULT_DELAY), Reply::Error { status: 500, .. }));
        let body = request("[error 429] [retry-after 5]", vec![]);
        assert!(matches!(
            plan(&body, 0, DEFAULT_DELAY),
            Reply::Error { status: 429, retry_after_ms: Some(5), .. }
        ));
        let body = request("[error 503 2] hi", vec![]);
        assert!(matches!(plan(&body, 0, DEFAULT_DELAY), Reply::Error { status: 503, .. }));
        assert!(matches!(plan(&body, 1, DEFAULT_DELAY), Reply::Error { status: 503, .. }));
        match plan(&body, 2, DEFAULT_DELAY) {
            Reply::Answer(s) => assert_eq!(s.full_text(), "Echo: hi"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hang_streams_then_stalls() {
        let s = answer(&request("[hang]", vec![]));
        assert!(s.hang);
        assert_eq!(s.full_text(), HANG_TEXT);
    }

    #[test]
    fn title_requests_get_a_plain_title() {
        let body = json!({"messages":[
            {"role":"system","content":"You are a title generator. You output ONLY a thread title."},
            {"role":"user","content":"Generate a title for this conversation:\n"},
            {"role":"user","content":"[error] [hang] fix the parser"}
        ]});
        let s = answer(&body);
        assert_eq!(s.full_text(), "fix the parser");
        assert!(!s.hang);
        let body = json!({"messages":[
            {"role":"system","content":"You are a title generator."},
            {"role":"user","content":"[tokens 3]"}
        ]});
        assert_eq!(answer(&body).full_text(), "Fake session");
    }
}
