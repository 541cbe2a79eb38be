//! Errors as a person reads them. A failed call to opencode carries a chain
//! like "opencode prompt: error sending request for url
//! (http://127.0.0.1:4096/session/…/prompt_async): … os error 104": right
//! for the worker's log, wrong for a phone. [`for_people`] says what could
//! not be done and why in one sentence; the caller logs the chain.

/// "Could not DOING: WHY." with the cause told plainly.
pub fn for_people(doing: &str, error: &anyhow::Error) -> String {
    format!("Could not {doing}: {}.", reason(error))
}

fn reason(error: &anyhow::Error) -> String {
    if let Some(e) = error.chain().find_map(|c| c.downcast_ref::<reqwest::Error>()) {
        if e.is_timeout() {
            return "opencode did not answer in time".into();
        }
        if e.is_connect() || e.is_request() {
            return "opencode is not answering (it is restarting, or it stopped); try again in a moment".into();
        }
        if let Some(status) = e.status() {
            return format!("opencode refused it ({})", status.canonical_reason().unwrap_or("an error"));
        }
        return "the connection to opencode broke; try again in a moment".into();
    }
    let text = error.to_string();
    // Our own refusals ("opencode prompt: 400 Bad Request: {…}") and
    // sentences of the worker's own ("the agent session … no longer
    // exists") read well enough once the prefix and the body are dropped.
    if let Some(rest) = text.strip_prefix("opencode ") {
        if let Some((_, after)) = rest.split_once(": ") {
            let status = after.split(':').next().unwrap_or(after).trim();
            if status.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                return format!("opencode refused it ({status})");
            }
        }
    }
    let first = text.lines().next().unwrap_or("").trim();
    if first.is_empty() || first.len() > 200 {
        "opencode failed; the worker's log says why".into()
    } else {
        first.trim_end_matches('.').to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_reads_as_a_sentence() {
        // The worker's one TLS provider (reqwest's needs one, even for http).
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Nothing listens on port 9 of loopback.
        let e = reqwest::Client::new()
            .get("http://127.0.0.1:9/session")
            .send()
            .await
            .expect_err("refused");
        let e = anyhow::Error::new(e).context("opencode get session");
        let said = for_people("send your message to opencode", &e);
        assert_eq!(
            said,
            "Could not send your message to opencode: opencode is not answering (it is restarting, or it stopped); try again in a moment."
        );
        assert!(!said.contains("127.0.0.1") && !said.contains("os error"), "{said}");
    }

    #[test]
    fn an_http_refusal_and_our_own_words() {
        let e = anyhow::anyhow!("opencode prompt: 400 Bad Request: {{\"name\":\"BadRequest\",\"data\":{{}}}}");
        assert_eq!(for_people("send it", &e), "Could not send it: opencode refused it (400 Bad Request).");
        let e = anyhow::anyhow!("the agent session ses_1 no longer exists");
        assert_eq!(
            for_people("send it", &e),
            "Could not send it: the agent session ses_1 no longer exists."
        );
    }
}
