//! After opencode's event stream came back: what each running turn missed,
//! read from opencode's API (its messages, pending prompts, subagents, and
//! whether its session is still busy).

use std::collections::{HashSet, VecDeque};

use serde_json::Value;

use super::{Agent, Done};
use crate::opencode::Opencode;

/// At most this many subagent sessions are read back per turn after
/// opencode's event stream came back.
const MAX_SUBAGENTS: usize = 64;

impl<O: Opencode> Agent<O> {
    /// After opencode's event stream came back: read what was missed.
    pub(super) fn reconcile_all(&mut self) {
        let Some(client) = self.client.clone() else { return };
        for (message, (_, turn)) in &self.turns {
            let (client, message, agent) = (client.clone(), message.clone(), turn.session().to_owned());
            let (known, since) = (turn.subagents(), turn.started_at());
            self.spawn(async move {
                let (subagents, subagent_messages) = read_subagents(&client, &agent, known, since).await;
                let messages = client.messages(&agent).await.unwrap_or_default();
                let permissions = client.permissions().await.unwrap_or_default();
                let questions = client.questions().await.unwrap_or_default();
                let busy = client
                    .busy_sessions()
                    .await
                    .map(|b| b.contains(&agent))
                    .unwrap_or(true);
                Done::Reconciled {
                    message,
                    messages,
                    permissions,
                    questions,
                    busy,
                    subagents,
                    subagent_messages,
                }
            });
        }
    }
}

/// Reads a turn's subagents back from opencode: the child sessions under
/// `root`, breadth first (parents before children), those the turn knew
/// (`known`) or that started with it (not before `since`; older ones are
/// earlier turns'), with their messages. At most [`MAX_SUBAGENTS`].
async fn read_subagents<O: Opencode>(
    client: &O,
    root: &str,
    known: Vec<String>,
    since: i64,
) -> (Vec<Value>, Vec<(String, Vec<Value>)>) {
    let known: HashSet<String> = known.into_iter().collect();
    let mut queue = VecDeque::from([root.to_owned()]);
    let mut seen: HashSet<String> = HashSet::from([root.to_owned()]);
    let mut sessions = Vec::new();
    while let Some(parent) = queue.pop_front() {
        for child in client.children(&parent).await.unwrap_or_default() {
            let Some(id) = child["id"].as_str().map(str::to_owned) else { continue };
            let recent = child["time"]["created"].as_i64().is_some_and(|t| t >= since);
            if sessions.len() >= MAX_SUBAGENTS || !(recent || known.contains(&id)) || !seen.insert(id.clone()) {
                continue;
            }
            queue.push_back(id);
            sessions.push(child);
        }
    }
    let mut messages = Vec::new();
    for info in &sessions {
        if let Some(id) = info["id"].as_str() {
            messages.push((id.to_owned(), client.messages(id).await.unwrap_or_default()));
        }
    }
    (sessions, messages)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::opencode::OpencodeClient;

    /// A stand-in for opencode's HTTP API: answers GETs of the paths it
    /// knows with their JSON (`[]` for others), and counts the requests.
    async fn fake_opencode(routes: HashMap<String, Value>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (routes, log) = (routes.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
                    log.lock().expect("log").push(path.clone());
                    let body = routes.get(&path).cloned().unwrap_or_else(|| json!([])).to_string();
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn session(id: &str, parent: &str, created: i64) -> Value {
        json!({ "id": id, "parentID": parent, "title": format!("{id} (@general subagent)"), "time": { "created": created } })
    }

    /// After the event stream dropped, the worker reads the turn's session
    /// tree: children of children, parents first, with their messages;
    /// not an earlier turn's children (older than the turn) unless the turn
    /// knew them, and nothing below those.
    #[tokio::test]
    async fn the_session_tree_is_read_back_breadth_first() {
        let routes = HashMap::from([
            (
                "/session/root/children".to_owned(),
                json!([session("old", "root", 10), session("a", "root", 2000), session("resumed", "root", 20)]),
            ),
            ("/session/a/children".to_owned(), json!([session("a1", "a", 2100)])),
            ("/session/old/children".to_owned(), json!([session("old1", "old", 30)])),
            ("/session/a1/message".to_owned(), json!([{ "info": { "role": "assistant" }, "parts": [] }])),
        ]);
        let (base, seen) = fake_opencode(routes).await;
        // As `run` does at start (reqwest's TLS needs a provider).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = OpencodeClient::new(&base, "pw").expect("client");
        let (sessions, messages) = read_subagents(&client, "root", vec!["resumed".into()], 1000).await;
        let ids: Vec<&str> = sessions.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(ids, ["a", "resumed", "a1"]);
        let read: Vec<(&str, usize)> = messages.iter().map(|(id, m)| (id.as_str(), m.len())).collect();
        assert_eq!(read, [("a", 0), ("resumed", 0), ("a1", 1)]);
        let asked = seen.lock().expect("log").clone();
        assert!(!asked.iter().any(|p| p.starts_with("/session/old")), "nothing of the earlier turn's: {asked:?}");
    }
}
