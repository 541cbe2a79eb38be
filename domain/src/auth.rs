//! Secrets, tickets and pairing codes.
//!
//! Every secret is 32 random bytes, shown once and stored only as its SHA-256
//! digest. A slow hash (argon2) buys nothing for secrets of this entropy and
//! would cost a Lambda tens of milliseconds on every `$connect`.

use std::fmt;

use base64::Engine;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A plaintext secret (user secret, worker credential, ticket). Its `Debug`
/// never shows the value, so it cannot leak into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A fresh secret with the given prefix (`tsk_` user secret, `twk_` worker
    /// credential, `ttk_` ticket).
    pub fn generate(prefix: &str) -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        Self(format!(
            "{prefix}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// Wraps a secret received from a client. Refuses empty or absurd values.
    pub fn from_client(s: impl Into<String>) -> Option<Self> {
        let s = s.into();
        (!s.is_empty() && s.len() <= 256).then_some(Self(s))
    }

    /// The value itself: to show once to its owner, or to send to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest stored server-side.
    pub fn hash(&self) -> SecretHash {
        let digest = Sha256::digest(self.0.as_bytes());
        SecretHash(digest.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The SHA-256 digest of a secret, lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecretHash(String);

impl SecretHash {
    /// Re-wraps a digest read back from a store.
    pub fn from_stored(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const BASE32: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// Pairing codes avoid letters people confuse (0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";

/// Random lowercase characters for ids.
pub fn random_base32(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| BASE32[rng.random_range(0..32)] as char)
        .collect()
}

/// A pairing code such as `KX7P-Q2MD`: 8 characters, about 40 bits, shown by
/// a new worker and typed (or scanned) by its owner. It expires in minutes,
/// and approving needs a signed-in user, so 31^8 is ample.
pub fn pairing_code() -> String {
    let mut rng = rand::rng();
    let mut s = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            s.push('-');
        }
        s.push(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char);
    }
    s
}

/// Normalises what a person typed as a pairing code: case, spaces, dash.
pub fn normalize_code(input: &str) -> Option<String> {
    let chars: Vec<char> = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if chars.len() != 8 || !chars.iter().all(|c| CODE_ALPHABET.contains(&(*c as u8))) {
        return None;
    }
    let mut s: String = chars[..4].iter().collect();
    s.push('-');
    s.extend(&chars[4..]);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hash_stably() {
        let a = Secret::generate("tsk_");
        let b = Secret::generate("tsk_");
        assert_ne!(a, b);
        assert!(a.expose().starts_with("tsk_"));
        assert_eq!(a.hash(), Secret::from_client(a.expose()).unwrap().hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(a.hash().as_str().len(), 64);
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn pairing_codes_normalize() {
        let code = pairing_code();
        assert_eq!(code.len(), 9);
        assert_eq!(normalize_code(&code.to_lowercase()).as_deref(), Some(code.as_str()));
        assert_eq!(normalize_code(&code.replace('-', " ")).as_deref(), Some(code.as_str()));
        assert_eq!(normalize_code("ABC"), None);
        assert_eq!(normalize_code("0000-0000"), None);
    }
}
