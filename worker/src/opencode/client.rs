//! opencode's HTTP API, as the worker uses it (observed on opencode 1.18;
//! recordings in `worker/tests/fixtures/opencode/`).

use std::time::Duration;

use anyhow::{bail, Context as _};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tether_domain::protocol::{ModelInfo, ModelRef, PermissionReply};

use super::Opencode;

/// A client of one `opencode serve` (loopback, basic auth).
#[derive(Clone)]
pub struct OpencodeClient {
    base: String,
    password: String,
    http: reqwest::Client,
}

/// The models opencode offers, and its default.
#[derive(Clone, Debug, Default)]
pub struct Models {
    pub models: Vec<ModelInfo>,
    pub default: Option<ModelRef>,
}

impl std::fmt::Debug for OpencodeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpencodeClient").field("base", &self.base).finish_non_exhaustive()
    }
}

impl OpencodeClient {
    pub fn new(base: &str, password: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            password: password.to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        let res = req
            .basic_auth("opencode", Some(&self.password))
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| format!("opencode {what}"))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            bail!("opencode {what}: {status}: {}", body.chars().take(500).collect::<String>());
        }
        Ok(res)
    }

    async fn get_json(&self, path: &str, what: &str) -> anyhow::Result<Value> {
        let res = self.call(self.http.get(self.url(path)), what).await?;
        res.json().await.with_context(|| format!("opencode {what}: bad JSON"))
    }

    async fn post_json(&self, path: &str, body: Value, what: &str) -> anyhow::Result<Option<Value>> {
        let res = self.call(self.http.post(self.url(path)).json(&body), what).await?;
        if res.status() == reqwest::StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = res.text().await.with_context(|| format!("opencode {what}"))?;
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("opencode {what}: bad JSON"))?))
    }

    pub async fn health(&self) -> anyhow::Result<()> {
        self.get_json("/global/health", "health").await.map(|_| ())
    }

    /// The configured providers' models (`GET /config/providers`).
    pub async fn models(&self) -> anyhow::Result<Models> {
        let v = self.get_json("/config/providers", "providers").await?;
        Ok(parse_models(&v))
    }

    /// The event stream: each item one event's JSON.
    pub async fn events(&self) -> anyhow::Result<impl Stream<Item = anyhow::Result<Value>>> {
        use eventsource_stream::Eventsource;
        let res = self
            .http
            .get(self.url("/event"))
            .basic_auth("opencode", Some(&self.password))
            .header("accept", "text/event-stream")
            .send()
            .await
            .context("opencode event stream")?;
        if !res.status().is_success() {
            bail!("opencode event stream: {}", res.status());
        }
        Ok(res.bytes_stream().eventsource().map(|item| match item {
            Ok(event) => serde_json::from_str::<Value>(&event.data).context("opencode event: bad JSON"),
            Err(e) => Err(anyhow::anyhow!("opencode event stream: {e}")),
        }))
    }
}

/// The routes as observed on opencode 1.18 (see the fixtures README).
impl Opencode for OpencodeClient {
    async fn create_session(&self, title: &str) -> anyhow::Result<String> {
        let body = if title.is_empty() { json!({}) } else { json!({ "title": title }) };
        let v = self
            .post_json("/session", body, "create session")
            .await?
            .context("opencode create session: empty reply")?;
        v["id"]
            .as_str()
            .map(str::to_owned)
            .context("opencode create session: no id")
    }

    async fn session_exists(&self, id: &str) -> anyhow::Result<bool> {
        let res = self
            .http
            .get(self.url(&format!("/session/{id}")))
            .basic_auth("opencode", Some(&self.password))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .context("opencode get session")?;
        Ok(res.status().is_success())
    }

    async fn prompt(&self, session: &str, model: &ModelRef, text: &str) -> anyhow::Result<()> {
        let body = json!({
            "model": { "providerID": model.provider_id, "modelID": model.model_id },
            "parts": [{ "type": "text", "text": text }],
        });
        self.post_json(&format!("/session/{session}/prompt_async"), body, "prompt")
            .await
            .map(|_| ())
    }

    async fn abort(&self, session: &str) -> anyhow::Result<()> {
        self.post_json(&format!("/session/{session}/abort"), json!({}), "abort")
            .await
            .map(|_| ())
    }

    async fn reply_permission(&self, id: &str, reply: PermissionReply) -> anyhow::Result<()> {
        let reply = match reply {
            PermissionReply::Once => "once",
            PermissionReply::Always => "always",
            PermissionReply::Reject => "reject",
        };
        self.post_json(&format!("/permission/{id}/reply"), json!({ "reply": reply }), "permission reply")
            .await
            .map(|_| ())
    }

    async fn reply_question(&self, id: &str, answers: &[Vec<String>]) -> anyhow::Result<()> {
        self.post_json(&format!("/question/{id}/reply"), json!({ "answers": answers }), "question reply")
            .await
            .map(|_| ())
    }

    async fn reject_question(&self, id: &str) -> anyhow::Result<()> {
        self.post_json(&format!("/question/{id}/reject"), json!({}), "question reject")
            .await
            .map(|_| ())
    }

    /// `GET /session/{id}/message`.
    async fn messages(&self, session: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get_json(&format!("/session/{session}/message"), "messages")
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// `GET /session/{id}/children`.
    async fn children(&self, session: &str) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get_json(&format!("/session/{session}/children"), "session children")
            .await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn permissions(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.get_json("/permission", "permissions").await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn questions(&self) -> anyhow::Result<Vec<Value>> {
        let v = self.get_json("/question", "questions").await?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    async fn busy_sessions(&self) -> anyhow::Result<Vec<String>> {
        let v = self.get_json("/session/status", "session status").await?;
        Ok(v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| s["type"].as_str() != Some("idle"))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[derive(Deserialize)]
struct ProviderList {
    #[serde(default)]
    providers: Vec<Provider>,
    #[serde(default)]
    default: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Provider {
    id: String,
    #[serde(default)]
    models: serde_json::Map<String, Value>,
}

/// Reads `GET /config/providers`: every model of every provider, and the
/// default (the first provider's default when there are several).
pub fn parse_models(v: &Value) -> Models {
    let Ok(list) = serde_json::from_value::<ProviderList>(v.clone()) else {
        return Models::default();
    };
    let mut models = Vec::new();
    for p in &list.providers {
        for (id, m) in &p.models {
            models.push(ModelInfo {
                provider_id: p.id.clone(),
                model_id: m["id"].as_str().unwrap_or(id).to_owned(),
                name: m["name"].as_str().unwrap_or(id).to_owned(),
                reasoning: m["capabilities"]["reasoning"].as_bool().or(m["reasoning"].as_bool()),
                context_limit: m["limit"]["context"].as_u64().filter(|c| *c > 0),
            });
        }
    }
    models.sort_by(|a, b| (&a.provider_id, &a.model_id).cmp(&(&b.provider_id, &b.model_id)));
    let default = list.default.iter().find_map(|(provider, model)| {
        let model = model.as_str()?;
        models
            .iter()
            .any(|m| &m.provider_id == provider && m.model_id == model)
            .then(|| ModelRef {
                provider_id: provider.clone(),
                model_id: model.to_owned(),
            })
    });
    Models { models, default }
}
