//! Session titles. opencode names a session after its first message (it
//! asks the model, in the background) and says so with a `session.updated`
//! event whose `info.title` is the new title. Before that the title is a
//! placeholder, `New session - <ISO time>` (a child session's: `Child
//! session - <ISO time>`), which is no title for a person: it is never
//! forwarded. Text that reaches the host is one line and bounded.

use serde_json::Value;
use tether_domain::protocol::MAX_AGENT_TITLE_CHARS;

/// The opencode session and its title, if `event` is a `session.updated` of
/// a top-level session (not a subagent's child) with a real title.
pub fn from_event(event: &Value) -> Option<(&str, String)> {
    if event["type"].as_str() != Some("session.updated") {
        return None;
    }
    let props = &event["properties"];
    let info = &props["info"];
    if info.get("parentID").is_some_and(|p| !p.is_null()) {
        return None;
    }
    let id = info["id"].as_str().or_else(|| props["sessionID"].as_str())?;
    let title = clean(info["title"].as_str()?)?;
    Some((id, title))
}

/// A title as the host takes it: one line, at most
/// [`MAX_AGENT_TITLE_CHARS`] characters; `None` for a blank one or
/// opencode's placeholder.
pub fn clean(raw: &str) -> Option<String> {
    let line = one_line(raw);
    if line.is_empty() || is_placeholder(&line) {
        return None;
    }
    Some(line.chars().take(MAX_AGENT_TITLE_CHARS).collect::<String>().trim_end().to_owned())
}

/// opencode's default title: `New session - ` or `Child session - ` and a time.
fn is_placeholder(title: &str) -> bool {
    ["New session - ", "Child session - "].iter().any(|prefix| {
        title
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.chars().take(4).filter(char::is_ascii_digit).count() == 4)
    })
}

/// Control characters and runs of white space become one space; the ends
/// are trimmed.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c.is_whitespace() {
            if !out.is_empty() && !out.ends_with(' ') {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
    out.truncate(out.trim_end().len());
    out
}

/// `text` as one line of at most `max` bytes (cut at a character boundary).
pub fn one_line_within(text: &str, max: usize) -> String {
    let mut line = one_line(text);
    if line.len() > max {
        let mut end = max;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
        line.truncate(line.trim_end().len());
    }
    line
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn updated(info: Value) -> Value {
        json!({"id": "evt_1", "type": "session.updated", "properties": {"sessionID": info["id"], "info": info}})
    }

    #[test]
    fn a_real_title_of_a_top_level_session_is_taken() {
        let event = updated(json!({"id": "ses_a", "title": "Fix the parser", "time": {"created": 1}}));
        assert_eq!(from_event(&event), Some(("ses_a", "Fix the parser".to_owned())));
    }

    #[test]
    fn placeholders_children_and_other_events_are_not() {
        let placeholder = updated(json!({"id": "ses_a", "title": "New session - 2026-02-10T12:34:56.789Z"}));
        assert_eq!(from_event(&placeholder), None);
        let child = updated(json!({"id": "ses_b", "parentID": "ses_a", "title": "Say hello (@general subagent)"}));
        assert_eq!(from_event(&child), None);
        let child_placeholder = updated(json!({"id": "ses_b", "title": "Child session - 2026-02-10T12:34:56.789Z"}));
        assert_eq!(from_event(&child_placeholder), None);
        let blank = updated(json!({"id": "ses_a", "title": " \n\t "}));
        assert_eq!(from_event(&blank), None);
        let created = json!({"type": "session.created", "properties": {"info": {"id": "ses_a", "title": "Fix it"}}});
        assert_eq!(from_event(&created), None);
        // A title that merely starts like the placeholder is a title.
        assert_eq!(clean("New session - ideas"), Some("New session - ideas".to_owned()));
        assert_eq!(clean("New session - é"), Some("New session - é".to_owned()));
    }

    #[test]
    fn titles_are_one_bounded_line() {
        assert_eq!(clean("  Fix\nthe \u{7}parser\t\ttests  "), Some("Fix the parser tests".to_owned()));
        let long = "é".repeat(MAX_AGENT_TITLE_CHARS + 50);
        let cut = clean(&long).expect("a title");
        assert_eq!(cut.chars().count(), MAX_AGENT_TITLE_CHARS);
    }

    #[test]
    fn reasons_are_one_line_within_bytes() {
        assert_eq!(one_line_within("exit\nstatus 1\r\n", 100), "exit status 1");
        let cut = one_line_within(&"é".repeat(10), 5);
        assert_eq!(cut, "éé", "cut at a character boundary");
    }
}
