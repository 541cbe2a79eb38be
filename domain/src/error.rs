//! Errors a client sees. Each has a stable `code` (part of the protocol) and
//! a human message. Infrastructure failures are not client errors: they are
//! [`crate::store::StoreError`] and surface as `internal`.

use serde::{Deserialize, Serialize};

/// The stable error codes of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object.
    BadJson,
    /// A field is missing, of the wrong type, or out of range.
    BadRequest,
    /// `action` is missing or names no action.
    UnknownAction,
    /// One websocket frame was over 32 KB.
    FrameTooLarge,
    /// One websocket message was over 128 KB.
    MessageTooLarge,
    /// No valid credential or ticket (also: an expired ticket).
    Unauthorized,
    /// The caller's role may not take this action.
    Forbidden,
    /// No such thing, or it belongs to someone else (the two look the same).
    NotFound,
    /// The id is taken by something different (a retry must repeat the request exactly).
    Conflict,
    /// The worker is not approved (pending, rejected or revoked).
    WorkerNotApproved,
    /// The session has ended or failed.
    SessionClosed,
    /// A chunk beyond the end of an answer that is already final.
    MessageFinal,
    /// A second, different completion of an answer.
    AlreadyComplete,
    /// The prompt was already answered.
    AlreadyAnswered,
    /// The request does not fit the current state (e.g. a model the worker does not offer).
    InvalidState,
    /// `message_send` named a model its session's worker does not offer.
    UnknownModel,
    /// The user, worker or source address already has as many open
    /// websockets as it may (`$connect`, HTTP 429).
    TooManyConnections,
    /// The user already has as many sessions that are not ended or failed
    /// as they may (`session_start`); ending one frees a slot.
    TooManySessions,
    /// The user already has as many messages waiting for an answer
    /// (queued, dispatched or streaming) as they may (`message_send`).
    QueueFull,
    /// The pairing code (or pairing token) has expired.
    Expired,
    /// Too many attempts of this kind in a short time; the message says when
    /// to try again.
    RateLimited,
    /// This address already has as many workers waiting for approval as it
    /// may (`POST /api/pair`); approve or let one expire first.
    TooManyPending,
    /// Unsupported protocol version.
    UnsupportedVersion,
    /// Something failed on the server; retrying later may help.
    Internal,
}

impl ErrorCode {
    /// Every code, in the order of the protocol's table (`docs/PROTOCOL.md`,
    /// checked by `domain/tests/protocol_doc.rs`).
    pub const ALL: [ErrorCode; 24] = [
        Self::BadJson,
        Self::BadRequest,
        Self::UnknownAction,
        Self::FrameTooLarge,
        Self::MessageTooLarge,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::Conflict,
        Self::WorkerNotApproved,
        Self::SessionClosed,
        Self::MessageFinal,
        Self::AlreadyComplete,
        Self::AlreadyAnswered,
        Self::InvalidState,
        Self::UnknownModel,
        Self::TooManyConnections,
        Self::TooManySessions,
        Self::QueueFull,
        Self::Expired,
        Self::RateLimited,
        Self::TooManyPending,
        Self::UnsupportedVersion,
        Self::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadRequest => "bad_request",
            Self::UnknownAction => "unknown_action",
            Self::FrameTooLarge => "frame_too_large",
            Self::MessageTooLarge => "message_too_large",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::WorkerNotApproved => "worker_not_approved",
            Self::SessionClosed => "session_closed",
            Self::MessageFinal => "message_final",
            Self::AlreadyComplete => "already_complete",
            Self::AlreadyAnswered => "already_answered",
            Self::InvalidState => "invalid_state",
            Self::UnknownModel => "unknown_model",
            Self::TooManyConnections => "too_many_connections",
            Self::TooManySessions => "too_many_sessions",
            Self::QueueFull => "queue_full",
            Self::Expired => "expired",
            Self::RateLimited => "rate_limited",
            Self::TooManyPending => "too_many_pending",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status for this code where it answers an HTTP request ($connect, /api).
    pub fn http_status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden | Self::WorkerNotApproved => 403,
            Self::NotFound => 404,
            Self::Conflict | Self::AlreadyComplete | Self::AlreadyAnswered => 409,
            Self::Expired => 410,
            Self::FrameTooLarge | Self::MessageTooLarge => 413,
            Self::TooManyConnections | Self::TooManySessions | Self::QueueFull => 429,
            Self::RateLimited | Self::TooManyPending => 429,
            Self::UnsupportedVersion => 426,
            Self::Internal => 500,
            _ => 400,
        }
    }
}

/// A client error: a stable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` holds every code once. Its length is the number of variants: the
    /// match below has no wildcard, so a new variant does not compile until
    /// it is named there, and its count (the array's length) goes up with it.
    #[test]
    fn all_holds_every_code_once_with_its_wire_name() {
        fn named(code: ErrorCode) -> ErrorCode {
            use ErrorCode::*;
            match code {
                BadJson | BadRequest | UnknownAction | FrameTooLarge | MessageTooLarge
                | Unauthorized | Forbidden | NotFound | Conflict | WorkerNotApproved
                | SessionClosed | MessageFinal | AlreadyComplete | AlreadyAnswered
                | InvalidState | UnknownModel | TooManyConnections | TooManySessions | QueueFull | Expired
                | RateLimited | TooManyPending | UnsupportedVersion | Internal => code,
            }
        }
        let names: std::collections::HashSet<&str> =
            ErrorCode::ALL.iter().map(|c| named(*c).as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a code is listed twice");
        for code in ErrorCode::ALL {
            let wire = serde_json::to_string(&code).expect("serializes");
            assert_eq!(wire, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).expect("parses"), code);
        }
    }

    /// What a cap refuses answers 429, over HTTP (`$connect`) as elsewhere.
    #[test]
    fn the_caps_answer_too_many_requests() {
        for code in [ErrorCode::TooManyConnections, ErrorCode::TooManySessions, ErrorCode::QueueFull] {
            assert_eq!(code.http_status(), 429, "{}", code.as_str());
        }
    }
}
