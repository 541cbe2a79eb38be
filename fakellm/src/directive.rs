//! Directives: `[name args…]` instructions embedded in a user message.
//!
//! A directive starts at `[` and ends at the matching `]` (brackets nest, so
//! `[bash [ -f x ] && echo yes]` is one directive). Bracketed text whose first
//! word is not a known directive name, or whose arguments do not fit, stays
//! part of the message text.

/// One parsed directive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Directive {
    /// `[tokens N]`: answer with `w0 w1 … w(N-1)`.
    Tokens(usize),
    /// `[delay MS]`: pause this many milliseconds between streamed pieces.
    Delay(u64),
    /// `[think]`: stream reasoning before the answer.
    Think,
    /// `[bash COMMAND]`: call the `bash` tool.
    Bash(String),
    /// `[write PATH CONTENT…]`: call the `write` tool.
    Write { path: String, content: String },
    /// `[edit PATH OLD NEW]`: `read` the file, then call the `edit` tool.
    Edit { path: String, old: String, new: String },
    /// `[question]`: call the `question` tool (Blue or Red).
    Question,
    /// `[subagent PROMPT…]` or `[subagent "DESCRIPTION" PROMPT…]`: call the
    /// `task` tool (a `general` subagent) with PROMPT, which may itself hold
    /// directives for the subagent's own requests (`[subagent [bash ls]]`).
    Subagent { description: String, prompt: String },
    /// `[error]`, `[error STATUS]`, `[error STATUS COUNT]`: answer with an
    /// HTTP error (default 500); with COUNT, only the first COUNT attempts
    /// fail and later ones are answered normally.
    Error { status: u16, count: Option<u32> },
    /// `[hang]`: stream a little, then stall until the client goes away.
    Hang,
    /// `[cached N]`: report N of the prompt tokens as cached.
    Cached(u64),
    /// `[retry-after MS]`: send `retry-after-ms: MS` with a scripted error,
    /// so the client's retries come quickly.
    RetryAfter(u64),
    /// `[burst N]`: stream N pieces at a time: the same text in fewer,
    /// larger deltas (long answers without hours of tiny events).
    Burst(usize),
}

/// The task description of a `[subagent …]` that names none.
pub const SUBAGENT_DESCRIPTION: &str = "Run a subtask";

/// A user message split into its directives and its remaining text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub directives: Vec<Directive>,
    /// The text with the directives cut out, whitespace runs left by the cuts
    /// collapsed, and trimmed.
    pub text: String,
}

impl Parsed {
    pub fn tokens(&self) -> Option<usize> {
        self.directives.iter().find_map(|d| match d {
            Directive::Tokens(n) => Some(*n),
            _ => None,
        })
    }

    pub fn burst(&self) -> Option<usize> {
        self.directives.iter().find_map(|d| match d {
            Directive::Burst(n) => Some(*n),
            _ => None,
        })
    }

    pub fn delay(&self) -> Option<u64> {
        self.directives.iter().find_map(|d| match d {
            Directive::Delay(ms) => Some(*ms),
            _ => None,
        })
    }

    pub fn has(&self, wanted: fn(&Directive) -> bool) -> bool {
        self.directives.iter().any(wanted)
    }

    pub fn cached(&self) -> Option<u64> {
        self.directives.iter().find_map(|d| match d {
            Directive::Cached(n) => Some(*n),
            _ => None,
        })
    }

    pub fn retry_after(&self) -> Option<u64> {
        self.directives.iter().find_map(|d| match d {
            Directive::RetryAfter(ms) => Some(*ms),
            _ => None,
        })
    }

    pub fn think(&self) -> bool {
        self.has(|d| matches!(d, Directive::Think))
    }

    pub fn hang(&self) -> bool {
        self.has(|d| matches!(d, Directive::Hang))
    }

    pub fn error(&self) -> Option<(u16, Option<u32>)> {
        self.directives.iter().find_map(|d| match d {
            Directive::Error { status, count } => Some((*status, *count)),
            _ => None,
        })
    }

    /// The first tool-using directive (bash, write, edit, question, subagent).
    pub fn action(&self) -> Option<&Directive> {
        self.directives.iter().find(|d| {
            matches!(
                d,
                Directive::Bash(_)
                    | Directive::Write { .. }
                    | Directive::Edit { .. }
                    | Directive::Question
                    | Directive::Subagent { .. }
            )
        })
    }
}

/// Splits `input` into directives and text.
pub fn parse(input: &str) -> Parsed {
    let mut directives = Vec::new();
    let mut text = String::new();
    let mut rest = input;
    while let Some(open) = rest.find('[') {
        text.push_str(&rest[..open]);
        let after = &rest[open..];
        match matching_close(after) {
            Some(close) => {
                let inner = &after[1..close];
                match parse_one(inner) {
                    Some(d) => {
                        directives.push(d);
                        // Keep a separator so the words around the cut stay apart.
                        text.push(' ');
                    }
                    None => text.push_str(&after[..=close]),
                }
                rest = &after[close + 1..];
            }
            None => {
                text.push_str(after);
                rest = "";
            }
        }
    }
    text.push_str(rest);
    Parsed {
        directives,
        text: tidy(&text),
    }
}

/// Index (in `s`, which starts with `[`) of the `]` that closes it.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Collapses the whitespace that directive cuts leave behind, per line, and trims.
fn tidy(s: &str) -> String {
    let lines: Vec<String> = s
        .lines()
        .map(|line| line.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" "))
        .collect();
    lines.join("\n").trim().to_string()
}

fn parse_one(inner: &str) -> Option<Directive> {
    let inner = inner.trim();
    let (name, args) = match inner.find(char::is_whitespace) {
        Some(i) => (&inner[..i], inner[i..].trim()),
        None => (inner, ""),
    };
    match name {
        "tokens" => args.parse().ok().map(Directive::Tokens),
        "delay" => args.parse().ok().map(Directive::Delay),
        "retry-after" => args.parse().ok().map(Directive::RetryAfter),
        "cached" => args.parse().ok().map(Directive::Cached),
        "burst" => args.parse().ok().filter(|n| *n > 0).map(Directive::Burst),
        "think" if args.is_empty() => Some(Directive::Think),
        "question" if args.is_empty() => Some(Directive::Question),
        "hang" if args.is_empty() => Some(Directive::Hang),
        "bash" if !args.is_empty() => Some(Directive::Bash(args.to_string())),
        "subagent" if !args.is_empty() => {
            let (description, prompt) = if args.starts_with('"') {
                let (d, used) = quoted(args)?;
                (d, args[used..].trim().to_string())
            } else {
                (SUBAGENT_DESCRIPTION.to_string(), args.to_string())
            };
            if prompt.is_empty() {
                return None;
            }
            Some(Directive::Subagent { description, prompt })
        }
        "write" => {
            let (path, rest) = first_word(args)?;
            let content = match split_args(rest) {
                Some(words) if words.len() == 1 && rest.starts_with('"') => words[0].clone(),
                _ => rest.to_string(),
            };
            Some(Directive::Write { path, content })
        }
        "edit" => {
            let mut words = split_args(args)?;
            if words.len() != 3 {
                return None;
            }
            let new = words.pop()?;
            let old = words.pop()?;
            let path = words.pop()?;
            Some(Directive::Edit { path, old, new })
        }
        "error" => {
            let words: Vec<&str> = args.split_whitespace().collect();
            let status = match words.first() {
                Some(w) => w.parse().ok().filter(|s| (400..600).contains(s))?,
                None => 500,
            };
            let count = match words.get(1) {
                Some(w) => Some(w.parse().ok()?),
                None => None,
            };
            if words.len() > 2 {
                return None;
            }
            Some(Directive::Error { status, count })
        }
        _ => None,
    }
}

/// The first argument (quoted or bare) and the trimmed rest.
fn first_word(args: &str) -> Option<(String, &str)> {
    if args.is_empty() {
        return None;
    }
    if args.starts_with('"') {
        let (word, used) = quoted(args)?;
        Some((word, args[used..].trim()))
    } else {
        let end = args.find(char::is_whitespace).unwrap_or(args.len());
        Some((args[..end].to_string(), args[end..].trim()))
    }
}

/// Splits on whitespace; `"…"` groups words and understands `\"`, `\\`, `\n`
/// and `\t`. `None` if a quote is left open.
pub fn split_args(args: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = args.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let (word, used) = quoted(rest)?;
            words.push(word);
            rest = rest[used..].trim_start();
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
    }
    Some(words)
}

/// Reads a quoted string at the start of `s`: its value and the bytes used.
fn quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_groups_pieces_and_needs_a_positive_count() {
        assert_eq!(parse("[burst 100] x").burst(), Some(100));
        assert_eq!(parse("[burst 0] x").burst(), None);
        assert_eq!(parse("[burst x] y").burst(), None);
    }

    #[test]
    fn plain_text_has_no_directives() {
        let p = parse("hello there");
        assert!(p.directives.is_empty());
        assert_eq!(p.text, "hello there");
    }

    #[test]
    fn simple_directives() {
        let p = parse("[tokens 50] [delay 20] [think] go");
        assert_eq!(
            p.directives,
            vec![Directive::Tokens(50), Directive::Delay(20), Directive::Think]
        );
        assert_eq!(p.text, "go");
        assert_eq!(p.tokens(), Some(50));
        assert_eq!(p.delay(), Some(20));
        assert!(p.think());
        assert!(!p.hang());
    }

    #[test]
    fn text_around_directives_is_kept_tidy() {
        let p = parse("please [think] answer\nnow [hang]");
        assert_eq!(p.text, "please answer\nnow");
        assert!(p.hang());
    }

    #[test]
    fn bash_takes_the_rest_and_brackets_nest() {
        let p = parse("[bash echo hi]");
        assert_eq!(p.directives, vec![Directive::Bash("echo hi".into())]);
        let p = parse("run [bash [ -f x ] && echo \"yes\"] please");
        assert_eq!(
            p.directives,
            vec![Directive::Bash("[ -f x ] && echo \"yes\"".into())]
        );
        assert_eq!(p.text, "run please");
        assert_eq!(p.action(), Some(&Directive::Bash("[ -f x ] && echo \"yes\"".into())));
    }

    #[test]
    fn write_content_is_the_rest_or_one_quoted_string() {
        let p = parse("[write hello.txt hi there]");
        assert_eq!(
            p.directives,
            vec![Directive::Write {
                path: "hello.txt".into(),
                content: "hi there".into()
            }]
        );
        let p = parse(r#"[write "a b.txt" "line 1\nline \"2\""]"#);
        assert_eq!(
            p.directives,
            vec![Directive::Write {
                path: "a b.txt".into(),
                content: "line 1\nline \"2\"".into()
            }]
        );
        let p = parse("[write empty.txt]");
        assert_eq!(
            p.directives,
            vec![Directive::Write {
                path: "empty.txt".into(),
                content: String::new()
            }]
        );
    }

    #[test]
    fn edit_takes_three_words() {
        let p = parse(r#"[edit notes.md "old text" new]"#);
        assert_eq!(
            p.directives,
            vec![Directive::Edit {
                path: "notes.md".into(),
                old: "old text".into(),
                new: "new".into()
            }]
        );
        // Wrong arity: not a directive, stays text.
        let p = parse("[edit a b]");
        assert!(p.directives.is_empty());
        assert_eq!(p.text, "[edit a b]");
    }

    #[test]
    fn error_forms() {
        assert_eq!(parse("[error]").error(), Some((500, None)));
        assert_eq!(parse("[error 429]").error(), Some((429, None)));
        assert_eq!(parse("[error 503 2]").error(), Some((503, Some(2))));
        assert_eq!(parse("[error 200]").error(), None);
        assert_eq!(parse("[error x]").error(), None);
        assert_eq!(parse("[error] [retry-after 10]").retry_after(), Some(10));
        assert_eq!(parse("[cached 100] hi").cached(), Some(100));
    }

    #[test]
    fn unknown_or_malformed_brackets_stay_text() {
        let p = parse("see [1] and [tokens many] and [think hard] and [oops");
        assert!(p.directives.is_empty());
        assert_eq!(p.text, "see [1] and [tokens many] and [think hard] and [oops");
    }

    #[test]
    fn question_directive() {
        let p = parse("[question]");
        assert_eq!(p.action(), Some(&Directive::Question));
    }

    #[test]
    fn subagent_keeps_its_inner_directives_as_the_prompt() {
        let p = parse("[subagent [bash echo hi]] go");
        assert_eq!(
            p.directives,
            vec![Directive::Subagent {
                description: SUBAGENT_DESCRIPTION.into(),
                prompt: "[bash echo hi]".into()
            }]
        );
        assert_eq!(p.text, "go");
        let p = parse(r#"[subagent "Say hi" [bash echo hi] please]"#);
        assert_eq!(
            p.action(),
            Some(&Directive::Subagent {
                description: "Say hi".into(),
                prompt: "[bash echo hi] please".into()
            })
        );
        assert!(parse("[subagent]").directives.is_empty());
        assert!(parse(r#"[subagent "only a description"]"#).directives.is_empty());
    }

    #[test]
    fn split_args_quotes() {
        assert_eq!(
            split_args(r#"a "b c" d\e"#),
            Some(vec!["a".into(), "b c".into(), "d\\e".into()])
        );
        assert_eq!(split_args(r#""open"#), None);
    }
}
