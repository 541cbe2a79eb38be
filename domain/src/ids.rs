//! Identifier newtypes. Every id is parsed at the edge, so code past the
//! protocol layer never sees an unchecked string.
//!
//! Server-minted ids carry a short prefix (`usr_`, `wkr_`, …) and random
//! base32 characters. Client-minted ids (sessions, messages, request ids) are
//! any 1–64 characters of `[A-Za-z0-9_.:=-]`, so a client can pick UUIDs or
//! ULIDs and retry a request with the same id. (`=` because API Gateway's
//! connection ids end in it.)

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest id accepted from a client.
pub const MAX_ID_LEN: usize = 64;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

fn check(kind: &str, s: &str) -> Result<(), IdError> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Err(IdError(format!("{kind} must be 1 to {MAX_ID_LEN} characters")));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'='))
    {
        return Err(IdError(format!(
            "{kind} may contain only letters, digits, '_', '-', '.', ':' and '='"
        )));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[cfg_attr(feature = "ts", derive(ts_rs::TS))]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix of ids this server mints (empty for client-minted ids).
            pub const PREFIX: &'static str = $prefix;

            /// Parses an id received from outside.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($kind, &s)?;
                Ok(Self(s))
            }

            /// Mints a fresh random id.
            pub fn random() -> Self {
                Self(format!("{}{}", $prefix, crate::auth::random_base32(20)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

id_type!(
    /// A user (an owner of machines, workers and sessions).
    UserId, "user id", "usr_"
);
id_type!(
    /// One worker process on a machine, with its working directory.
    WorkerId, "worker id", "wkr_"
);
id_type!(
    /// A websocket connection, as the gateway (local or API Gateway) names it.
    ConnectionId, "connection id", "c"
);
id_type!(
    /// A chat session on one worker; minted by the client that starts it.
    SessionId, "session id", "ses_"
);
id_type!(
    /// One user message and the agent's answer to it; minted by the client.
    MessageId, "message id", "msg_"
);
id_type!(
    /// The client's id of one request frame, echoed in its reply.
    RequestId, "request id", "req_"
);
id_type!(
    /// A question the agent asks (a permission prompt or a `question` tool call).
    PromptId, "prompt id", "prm_"
);

impl ConnectionId {
    /// The id as logs show it: see [`Redacted`].
    pub fn redacted(&self) -> Redacted<'_> {
        Redacted(&self.0)
    }
}

/// A connection id as logs show it: its first four characters. Enough to
/// tell a log's connections apart, too little to address one (a connection
/// id is what a push or a disconnect names, so logs never carry it whole,
/// except at debug level).
#[derive(Clone, Copy)]
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self.0.char_indices().nth(4).map_or(self.0.len(), |(i, _)| i);
        write!(f, "{}…", &self.0[..end])
    }
}

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_see_only_a_connection_ids_head() {
        let id = ConnectionId::parse("L0SM9cOFvHcCIhw=").expect("id");
        assert_eq!(id.redacted().to_string(), "L0SM…");
        assert_eq!(Redacted("ab").to_string(), "ab…");
    }

    #[test]
    fn parse_accepts_uuid_and_rejects_junk() {
        assert!(SessionId::parse("0b9f0e2a-3c1d-4f7e-9a55-5b2f1c3d4e5f").is_ok());
        assert!(SessionId::parse("").is_err());
        assert!(SessionId::parse("a b").is_err());
        assert!(SessionId::parse("x".repeat(65)).is_err());
        assert!(MessageId::parse("msg_ABC.1:2-3").is_ok());
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
    }

    #[test]
    fn random_ids_have_prefix_and_parse() {
        let id = WorkerId::random();
        assert!(id.as_str().starts_with("wkr_"));
        assert_eq!(WorkerId::parse(id.as_str()).unwrap(), id);
        assert_ne!(WorkerId::random(), WorkerId::random());
    }

    #[test]
    fn deserialize_checks_format() {
        let ok: Result<UserId, _> = serde_json::from_str("\"usr_1\"");
        assert!(ok.is_ok());
        let bad: Result<UserId, _> = serde_json::from_str("\"no spaces\"");
        assert!(bad.is_err());
    }
}
