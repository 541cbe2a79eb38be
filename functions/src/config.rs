//! What a function reads from its environment, once, at cold start.
//!
//! | variable | meaning |
//! |---|---|
//! | `TETHER_TABLE` | **required**: the DynamoDB table (template: `!Ref Table`) |
//! | `TETHER_MANAGEMENT_ENDPOINT` | the Management API endpoint, e.g. `http://127.0.0.1:8787/local`; default: `https://{requestContext.domainName}/{requestContext.stage}` of each event |
//! | `TETHER_DYNAMODB_ENDPOINT` | a DynamoDB endpoint other than AWS's (moto in tests); the SDK's own `AWS_ENDPOINT_URL_DYNAMODB` works too |
//! | `TETHER_PUSH_CONCURRENCY` | pushes in flight per fan-out (default 16) |
//! | `TETHER_TICKET_TTL_MS`, `TETHER_PAIRING_TTL_MS`, `TETHER_HEARTBEAT_MS`, `TETHER_PRESENCE_TIMEOUT_MS`, `TETHER_WORKER_LEASE_MS`, `TETHER_FRAME_INTERVAL_MS`, `TETHER_CONNECTION_TTL_MS` | the domain's timings (default: `tether_domain::Config::default()`) |
//! | `TETHER_ORIGIN_SECRET` | **required by `tether-connect` and `tether-http`**: the value CloudFront puts in the [`ORIGIN_HEADER`] of every request it forwards to the APIs (32 to 256 visible ASCII characters); requests without it are refused |
//!
//! Region and credentials come from the standard AWS variables, which
//! Lambda sets. A missing or malformed variable is an error at cold start,
//! never at the first request.

use std::collections::HashMap;
use std::fmt;

use tether_domain::auth::{Secret, SecretHash};

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the environment variable {0} is required")]
    Missing(&'static str),
    #[error("the environment variable {name} is malformed: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Everything a function's environment says.
#[derive(Clone, Debug)]
pub struct FunctionConfig {
    pub table: String,
    /// A fixed Management API endpoint (local emulation, custom domains).
    pub management_endpoint: Option<String>,
    pub dynamodb_endpoint: Option<String>,
    pub push_concurrency: usize,
    pub domain: tether_domain::Config,
    /// CloudFront's origin secret, if the environment has one (the
    /// functions that take requests from outside, `$connect` and the HTTP
    /// API, require it: [`FunctionConfig::require_origin_secret`]).
    pub origin_secret: Option<OriginSecret>,
}

pub const TABLE_VAR: &str = "TETHER_TABLE";
pub const MANAGEMENT_ENDPOINT_VAR: &str = "TETHER_MANAGEMENT_ENDPOINT";
pub const DYNAMODB_ENDPOINT_VAR: &str = "TETHER_DYNAMODB_ENDPOINT";
pub const PUSH_CONCURRENCY_VAR: &str = "TETHER_PUSH_CONCURRENCY";
pub const TICKET_TTL_VAR: &str = "TETHER_TICKET_TTL_MS";
pub const PAIRING_TTL_VAR: &str = "TETHER_PAIRING_TTL_MS";
pub const HEARTBEAT_VAR: &str = "TETHER_HEARTBEAT_MS";
pub const PRESENCE_TIMEOUT_VAR: &str = "TETHER_PRESENCE_TIMEOUT_MS";
pub const WORKER_LEASE_VAR: &str = "TETHER_WORKER_LEASE_MS";
pub const FRAME_INTERVAL_VAR: &str = "TETHER_FRAME_INTERVAL_MS";
pub const CONNECTION_TTL_VAR: &str = "TETHER_CONNECTION_TTL_MS";
pub const ORIGIN_SECRET_VAR: &str = "TETHER_ORIGIN_SECRET";

/// The header CloudFront adds to every request it forwards to the two APIs
/// (template.yaml, `OriginCustomHeaders`), with the origin secret as its
/// value. CloudFront overwrites a header of that name that a viewer sends.
pub const ORIGIN_HEADER: &str = "x-tether-origin";

/// Fan-out width when nothing else is configured.
pub const DEFAULT_PUSH_CONCURRENCY: usize = 16;

impl FunctionConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&std::env::vars().collect())
    }

    /// Reads a set of variables (tests pass their own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            vars.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let table = get(TABLE_VAR).ok_or(ConfigError::Missing(TABLE_VAR))?;
        let management_endpoint = get(MANAGEMENT_ENDPOINT_VAR)
            .map(|url| endpoint(MANAGEMENT_ENDPOINT_VAR, url))
            .transpose()?;
        let dynamodb_endpoint = get(DYNAMODB_ENDPOINT_VAR)
            .map(|url| endpoint(DYNAMODB_ENDPOINT_VAR, url))
            .transpose()?;
        let push_concurrency = match get(PUSH_CONCURRENCY_VAR) {
            None => DEFAULT_PUSH_CONCURRENCY,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => n,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: PUSH_CONCURRENCY_VAR,
                        reason: format!("{v:?} is not a number from 1 to 256"),
                    })
                }
            },
        };
        let mut domain = tether_domain::Config::default();
        for (name, field) in [
            (TICKET_TTL_VAR, &mut domain.ticket_ttl_ms),
            (PAIRING_TTL_VAR, &mut domain.pairing_ttl_ms),
            (HEARTBEAT_VAR, &mut domain.heartbeat_ms),
            (PRESENCE_TIMEOUT_VAR, &mut domain.presence_timeout_ms),
            (WORKER_LEASE_VAR, &mut domain.worker_lease_ms),
            (FRAME_INTERVAL_VAR, &mut domain.frame_interval_ms),
            (CONNECTION_TTL_VAR, &mut domain.connection_ttl_ms),
        ] {
            if let Some(v) = get(name) {
                *field = match v.parse::<i64>() {
                    Ok(ms) if ms > 0 => ms,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name,
                            reason: format!("{v:?} is not a positive number of milliseconds"),
                        })
                    }
                };
            }
        }
        let origin_secret = get(ORIGIN_SECRET_VAR)
            .map(|value| OriginSecret::new(&value))
            .transpose()?;
        Ok(Self {
            table,
            management_endpoint,
            dynamodb_endpoint,
            push_concurrency,
            domain,
            origin_secret,
        })
    }

    /// The origin secret, which the functions reachable from outside
    /// (`$connect`, the HTTP API) cannot start without.
    pub fn require_origin_secret(&self) -> Result<OriginSecret, ConfigError> {
        self.origin_secret
            .clone()
            .ok_or(ConfigError::Missing(ORIGIN_SECRET_VAR))
    }
}

/// The secret that proves a request came through this deployment's
/// CloudFront distribution: CloudFront sends it in [`ORIGIN_HEADER`] to
/// both APIs, whose `execute-api` endpoints are otherwise open to anyone
/// who finds them. Only its SHA-256 digest is kept; it never shows in
/// `Debug` (nor, so, in a log line).
#[derive(Clone)]
pub struct OriginSecret(SecretHash);

/// A secret shorter than this is refused: the template's own (derived from
/// the stack) is longer, and one given as a parameter should be random.
pub const ORIGIN_SECRET_MIN_LEN: usize = 32;
/// The longest secret (and the longest header value compared at all).
pub const ORIGIN_SECRET_MAX_LEN: usize = 256;

impl OriginSecret {
    /// A secret from its value: 32 to 256 visible ASCII characters (no
    /// space), as an HTTP header carries it unchanged.
    pub fn new(value: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            name: ORIGIN_SECRET_VAR,
            reason,
        };
        // The reasons never quote the value.
        if !(ORIGIN_SECRET_MIN_LEN..=ORIGIN_SECRET_MAX_LEN).contains(&value.len()) {
            return Err(invalid(format!(
                "it has {} characters; it needs {ORIGIN_SECRET_MIN_LEN} to {ORIGIN_SECRET_MAX_LEN}",
                value.len()
            )));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "it may hold visible ASCII characters only (no spaces)".into(),
            ));
        }
        let secret = Secret::from_client(value)
            .ok_or_else(|| invalid("it is not a usable secret".into()))?;
        Ok(Self(secret.hash()))
    }

    /// Whether `presented` (a request's header value) is the secret. The
    /// comparison is of the two SHA-256 digests, in time that depends on
    /// neither value (a byte-wise fold over fixed-length digests, no early
    /// exit), so timing tells an attacker nothing about how close a guess was.
    pub fn matches(&self, presented: &str) -> bool {
        let Some(presented) = Secret::from_client(presented) else {
            return false;
        };
        constant_time_eq(
            presented.hash().as_str().as_bytes(),
            self.0.as_str().as_bytes(),
        )
    }
}

impl fmt::Debug for OriginSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OriginSecret(<redacted>)")
    }
}

/// Equality of two byte strings in time that depends only on their lengths
/// (here always the 64 hex digits of a SHA-256 digest).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

/// An endpoint URL: `http(s)://host[:port][/path]`, kept without a trailing `/`.
fn endpoint(name: &'static str, url: String) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ConfigError::Invalid {
            name,
            reason: format!("{url:?} is not an http:// or https:// URL"),
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{url:?} has no host"),
        });
    }
    Ok(url.trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_table_is_required() {
        let err = FunctionConfig::from_vars(&vars(&[])).expect_err("no table");
        assert!(matches!(err, ConfigError::Missing(TABLE_VAR)), "{err}");
        let err = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "  ")])).expect_err("blank");
        assert!(matches!(err, ConfigError::Missing(TABLE_VAR)), "{err}");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "tether")])).expect("config");
        assert_eq!(c.table, "tether");
        assert_eq!(c.management_endpoint, None);
        assert_eq!(c.push_concurrency, DEFAULT_PUSH_CONCURRENCY);
        assert_eq!(c.domain.ticket_ttl_ms, tether_domain::Config::default().ticket_ttl_ms);

        let c = FunctionConfig::from_vars(&vars(&[
            (TABLE_VAR, "t"),
            (MANAGEMENT_ENDPOINT_VAR, "http://127.0.0.1:8787/local/"),
            (DYNAMODB_ENDPOINT_VAR, "http://127.0.0.1:5959"),
            (PUSH_CONCURRENCY_VAR, "4"),
            (TICKET_TTL_VAR, "1000"),
            (PRESENCE_TIMEOUT_VAR, "1500"),
            (WORKER_LEASE_VAR, "3000"),
        ]))
        .expect("config");
        assert_eq!(
            c.management_endpoint.as_deref(),
            Some("http://127.0.0.1:8787/local")
        );
        assert_eq!(c.dynamodb_endpoint.as_deref(), Some("http://127.0.0.1:5959"));
        assert_eq!(c.push_concurrency, 4);
        assert_eq!(c.domain.ticket_ttl_ms, 1000);
        assert_eq!(c.domain.presence_timeout_ms, 1500);
        assert_eq!(c.domain.worker_lease_ms, 3000);
    }

    const SECRET: &str = "2b9e4c1a-7f3d-11f0-9a2b-0a1b2c3d4e5f.tether-Table-1ABCDEF234567";

    #[test]
    fn the_origin_secret_is_optional_here_and_required_where_asked() {
        let c = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "t")])).expect("config");
        assert!(c.origin_secret.is_none());
        let err = c.require_origin_secret().expect_err("no secret");
        assert!(matches!(err, ConfigError::Missing(ORIGIN_SECRET_VAR)), "{err}");

        let c = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "t"), (ORIGIN_SECRET_VAR, SECRET)]))
            .expect("config");
        let secret = c.require_origin_secret().expect("a secret");
        assert!(secret.matches(SECRET));
        for wrong in ["", "x", &SECRET[1..], &format!("{SECRET}x"), &SECRET.to_uppercase()] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
        // Never in Debug, so never in a log line.
        let shown = format!("{c:?}");
        assert!(!shown.contains(SECRET) && !shown.contains("tether-Table"), "{shown}");
    }

    #[test]
    fn a_weak_or_unusable_origin_secret_is_refused_without_quoting_it() {
        for bad in ["short-secret", &"x".repeat(257), "an origin secret with spaces in it, long enough"] {
            let err = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "t"), (ORIGIN_SECRET_VAR, bad)]))
                .expect_err(bad);
            assert!(matches!(err, ConfigError::Invalid { name: ORIGIN_SECRET_VAR, .. }), "{err}");
            assert!(!err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn malformed_values_are_refused() {
        for (name, value) in [
            (MANAGEMENT_ENDPOINT_VAR, "127.0.0.1:8787"),
            (MANAGEMENT_ENDPOINT_VAR, "https:///x"),
            (PUSH_CONCURRENCY_VAR, "0"),
            (TICKET_TTL_VAR, "-5"),
            (HEARTBEAT_VAR, "soon"),
        ] {
            let err = FunctionConfig::from_vars(&vars(&[(TABLE_VAR, "t"), (name, value)]))
                .expect_err(value);
            assert!(matches!(err, ConfigError::Invalid { .. }), "{name}={value}: {err}");
        }
    }
}
