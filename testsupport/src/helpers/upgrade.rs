//! Opening a websocket, and what the server says when it refuses one.

use std::net::SocketAddr;

use serde_json::Value;
use tether_domain::ErrorCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An upgrade the server refused: its HTTP status and body.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: String,
}

impl Refused {
    /// Asserts the status, and the error code of the JSON body when the
    /// body came with the response head (the websocket client keeps only
    /// what arrived with it).
    pub fn assert(&self, status: u16, code: ErrorCode, what: &str) {
        assert_eq!(self.status, status, "{what}: refused with {self:?}");
        if !self.body.trim().is_empty() {
            let body: Value = serde_json::from_str(&self.body).unwrap_or_else(|e| {
                panic!(
                    "{what}: the refusal body is not JSON ({e}): {:?}",
                    self.body
                )
            });
            assert_eq!(
                body.get("code").and_then(Value::as_str),
                Some(code.as_str()),
                "{what}: the refusal body: {}",
                self.body
            );
        }
    }
}

/// Asserts that a connection attempt was refused with this status and code.
pub fn assert_refused<T>(attempt: Result<T, Refused>, status: u16, code: ErrorCode, what: &str) {
    match attempt {
        Ok(_) => panic!("{what}: the connection was accepted; expected HTTP {status}"),
        Err(r) => r.assert(status, code, what),
    }
}

/// Opens a websocket; `Err` carries the HTTP status of a refused upgrade.
pub async fn open_ws(
    addr: SocketAddr,
    path_and_query: &str,
    bearer: Option<&str>,
) -> Result<Ws, Refused> {
    let url = format!("ws://{addr}{path_and_query}");
    let mut request = url
        .as_str()
        .into_client_request()
        .expect("a websocket request");
    if let Some(token) = bearer {
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("a header value"),
        );
    }
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("websocket connect to {url} did not finish within {WAIT:?}"));
    match attempt {
        Ok((ws, _response)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(Refused {
                status: response.status().as_u16(),
                body,
            })
        }
        Err(e) => panic!("websocket connect to {url} failed without an HTTP status: {e}"),
    }
}
