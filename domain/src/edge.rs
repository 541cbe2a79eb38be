//! The edge: what stands between a host's request and the domain, written
//! once for both hosts. A host reads its event (an API Gateway event on
//! AWS, an HTTP request or a websocket frame locally), hands the raw parts
//! here, and writes back what it gets: the rules for bearer headers,
//! connection ids, the HTTP routes, error bodies and caching live in this
//! file and nowhere else.
//!
//! Nothing here reads a store or a clock except through the domain, and
//! [`now_millis`] is the hosts' one reading of the wall clock.

use std::net::IpAddr;

use tracing::{debug, info, warn};

use crate::handlers::{ConnectRequest, Domain};
use crate::ids::{ConnectionId, Redacted};
use crate::model::Millis;
use crate::protocol::{peek_request_id, ErrorBody, PairRequest, ServerFrame};
use crate::push::Push;
use crate::store::Store;
use crate::{ApiError, ErrorCode};

/// Milliseconds since the Unix epoch. The domain takes `now` as an argument
/// everywhere; a host reads the clock here (or takes API Gateway's request
/// time), nowhere else.
pub fn now_millis() -> Millis {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX),
        // A clock set before 1970 is broken; 0 keeps the arithmetic sane.
        Err(_) => 0,
    }
}

/// `2026-11-24T10:15:30.123Z` for a time in milliseconds since the epoch.
pub fn iso8601(ms: Millis) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = in_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1000
    )
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's
/// algorithm), so no date crate is needed for one timestamp format.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The token of an `Authorization: Bearer <token>` header value (the
/// scheme in any case, as RFC 7235 says). A header that is not text, or has
/// another scheme or no token, gives none.
pub fn bearer_token(authorization: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(authorization?).ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `{"code","message"}`: the body of every HTTP error answer and of a
/// refused `$connect`.
pub fn error_body(error: ApiError) -> String {
    let body = ErrorBody {
        code: error.code,
        message: error.message,
    };
    serde_json::to_string(&body).unwrap_or_else(|_| r#"{"code":"internal","message":""}"#.into())
}

/// The headers of every answer of the HTTP API: JSON, and never cached
/// (tickets and pairing codes are credentials, and an error is no better
/// kept).
pub const HTTP_HEADERS: [(&str, &str); 2] = [
    ("content-type", "application/json"),
    ("cache-control", "no-store"),
];

/// The HTTP API's paths. Anything else under `/api` is 404.
pub const HTTP_PATHS: [&str; 2] = ["/api/ticket", "/api/pair"];

/// An answer to write back: a status and a JSON body (with
/// [`HTTP_HEADERS`] for the HTTP API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
}

impl Answer {
    fn ok<T: serde::Serialize>(value: &T) -> Self {
        Self {
            status: 200,
            body: serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
        }
    }

    fn error(error: ApiError) -> Self {
        if error.code == ErrorCode::Internal {
            warn!(message = %error.message, "internal error");
        }
        Self {
            status: error.code.http_status(),
            body: error_body(error),
        }
    }
}

/// One request to the HTTP API, as a host read it.
pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The `Authorization` header's value.
    pub authorization: Option<&'a [u8]>,
    /// Where it came from (see each host's rule), for the cap on pending
    /// workers per source.
    pub source: Option<IpAddr>,
    pub body: &'a [u8],
    pub now: Millis,
}

/// A `$connect`, as a host read it.
pub struct ConnectParts<'a> {
    /// The gateway's id for the connection (API Gateway's, or the local
    /// gateway's in the same form).
    pub connection_id: &'a str,
    /// `?ticket=` (browsers).
    pub ticket: Option<&'a str>,
    /// `?v=`: the protocol version the client speaks.
    pub version: Option<&'a str>,
    /// The `Authorization` header's value (workers).
    pub authorization: Option<&'a [u8]>,
    pub now: Millis,
}

/// The domain's name for a gateway's connection id. Gateways mint ids the
/// domain accepts, so a mismatch is a bug (logged, answered `internal`),
/// not a client's mistake.
pub fn connection_id(raw: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(raw).map_err(|e| {
        warn!(connection_id = %Redacted(raw), error = %e, "the domain refuses this connection id");
        ApiError::new(ErrorCode::Internal, "connection id not accepted")
    })
}

impl<S: Store, P: Push> Domain<S, P> {
    /// The HTTP API: `POST /api/ticket` and `POST /api/pair`; another method
    /// on those is 405, any other path 404. The body is parsed here, so a
    /// malformed one gets the protocol's error shape.
    pub async fn http(&self, req: HttpRequest<'_>) -> Answer {
        let bearer = bearer_token(req.authorization);
        let result = match (req.method, req.path) {
            ("POST", "/api/ticket") => self.issue_ticket(bearer, req.now).await.map(|t| Answer::ok(&t)),
            ("POST", "/api/pair") => match serde_json::from_slice::<PairRequest>(req.body) {
                Ok(pair) => self
                    .pair(bearer, req.source, pair, req.now)
                    .await
                    .map(|data| Answer::ok(&data)),
                Err(e) => Err(ApiError::bad_request(format!("bad pairing request: {e}"))),
            },
            (_, path) if HTTP_PATHS.contains(&path) => {
                return Answer {
                    status: 405,
                    body: error_body(ApiError::bad_request(format!("{path} takes POST"))),
                }
            }
            _ => Err(ApiError::not_found("endpoint")),
        };
        result.unwrap_or_else(Answer::error)
    }

    /// `$connect`: `Ok` accepts the upgrade; `Err` is the refusal to answer
    /// instead (the error code's status and `{"code","message"}`).
    pub async fn connect_edge(&self, parts: ConnectParts<'_>) -> Result<(), Answer> {
        let connection_id = connection_id(parts.connection_id).map_err(Answer::error)?;
        let request = ConnectRequest {
            connection_id,
            ticket: parts.ticket.map(str::to_owned),
            bearer: bearer_token(parts.authorization).map(str::to_owned),
            version: parts.version.map(str::to_owned),
            now: parts.now,
        };
        match self.connect(request).await {
            Ok(principal) => {
                info!(?principal, "connected");
                Ok(())
            }
            Err(error) => {
                debug!(code = error.code.as_str(), "connection refused");
                Err(Answer::error(error))
            }
        }
    }

    /// One websocket frame: the reply's JSON text. A binary frame is
    /// answered `bad_json` (the protocol is text).
    pub async fn frame_edge(&self, connection: &str, body: &str, binary: bool, now: Millis) -> String {
        let reply = if binary {
            ServerFrame::err(None, ApiError::new(ErrorCode::BadJson, "binary frames are not supported"))
        } else {
            match connection_id(connection) {
                Ok(id) => self.handle_frame(&id, body, now).await,
                Err(error) => ServerFrame::err(peek_request_id(body), error),
            }
        };
        reply.to_json()
    }

    /// `$disconnect` (best effort on both hosts).
    pub async fn disconnect_edge(&self, connection: &str, now: Millis) {
        if let Ok(id) = connection_id(connection) {
            self.disconnect(&id, now).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_needs_the_scheme_and_a_token() {
        assert_eq!(bearer_token(Some(b"bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some(b"Bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some(b"Basic abc")), None);
        assert_eq!(bearer_token(Some(b"Bearer ")), None);
        assert_eq!(bearer_token(Some(b"Bearer")), None);
        assert_eq!(bearer_token(Some(&[0x42, 0xff, 0x20, 0x61])), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn error_bodies_have_the_code_and_the_message() {
        let body = error_body(ApiError::not_found("endpoint"));
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["code"], "not_found");
        assert!(v["message"].as_str().is_some_and(|m| m.contains("endpoint")));
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
