//! What a function reads from its environment, once, at cold start.
//!
//! | variable | meaning |
//! |---|---|
//! | `TETHER_TABLE` | **required**: the DynamoDB table (template: `!Ref Table`) |
//! | `TETHER_MANAGEMENT_ENDPOINT` | the Management API endpoint, e.g. `http://127.0.0.1:8787/local`; default: `https://{requestContext.domainName}/{requestContext.stage}` of each event |
//! | `TETHER_DYNAMODB_ENDPOINT` | a DynamoDB endpoint other than AWS's (moto in tests); the SDK's own `AWS_ENDPOINT_URL_DYNAMODB` works too |
//! | `TETHER_PUSH_CONCURRENCY` | pushes in flight per fan-out (default 16) |
//! | `TETHER_TICKET_TTL_MS`, `TETHER_PAIRING_TTL_MS`, `TETHER_HEARTBEAT_MS`, `TETHER_PRESENCE_TIMEOUT_MS`, `TETHER_CONNECTION_TTL_MS` | the domain's timings (default: `tether_domain::Config::default()`) |
//!
//! Region and credentials come from the standard AWS variables, which
//! Lambda sets. A missing or malformed variable is an error at cold start,
//! never at the first request.

use std::collections::HashMap;

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
}

pub const TABLE_VAR: &str = "TETHER_TABLE";
pub const MANAGEMENT_ENDPOINT_VAR: &str = "TETHER_MANAGEMENT_ENDPOINT";
pub const DYNAMODB_ENDPOINT_VAR: &str = "TETHER_DYNAMODB_ENDPOINT";
pub const PUSH_CONCURRENCY_VAR: &str = "TETHER_PUSH_CONCURRENCY";
pub const TICKET_TTL_VAR: &str = "TETHER_TICKET_TTL_MS";
pub const PAIRING_TTL_VAR: &str = "TETHER_PAIRING_TTL_MS";
pub const HEARTBEAT_VAR: &str = "TETHER_HEARTBEAT_MS";
pub const PRESENCE_TIMEOUT_VAR: &str = "TETHER_PRESENCE_TIMEOUT_MS";
pub const CONNECTION_TTL_VAR: &str = "TETHER_CONNECTION_TTL_MS";

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
        Ok(Self {
            table,
            management_endpoint,
            dynamodb_endpoint,
            push_concurrency,
            domain,
        })
    }
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
