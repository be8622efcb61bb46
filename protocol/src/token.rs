//! Join tokens: `mtj1.<id>.<secret>.<ca-pin>`.
//!
//! The id names the token in the controller's store, the secret proves the
//! holder may join (only its SHA-256 is stored), and the pin is the SHA-256 of
//! the controller's CA certificate: the joining agent checks the controller's
//! chain against it before it sends anything.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::ids::random_string;

pub const TOKEN_PREFIX: &str = "mtj1";
pub const TOKEN_ID_LEN: usize = 8;
pub const TOKEN_SECRET_LEN: usize = 32;

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    pub secret: String,
    pub ca_pin: CaPin,
}

/// SHA-256 of a CA certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin(pub [u8; 32]);

impl CaPin {
    pub fn of_der(der: &[u8]) -> CaPin {
        CaPin(Sha256::digest(der).into())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(s: &str) -> Option<CaPin> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(CaPin(out))
    }
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({})", self.to_hex())
    }
}

/// Why a string is not a join token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TokenParseError {
    #[error(
        "malformed join token: expected 4 dot-separated parts 'mtj1.<id>.<secret>.<ca-pin>', found {0}"
    )]
    Parts(usize),
    #[error("malformed join token: unknown format '{0}' (this agent understands 'mtj1')")]
    Format(String),
    #[error("malformed join token: the id must be {TOKEN_ID_LEN} lowercase characters")]
    Id,
    #[error("malformed join token: the secret must be {TOKEN_SECRET_LEN} lowercase characters")]
    Secret,
    #[error("malformed join token: the CA pin must be 64 hexadecimal characters")]
    Pin,
}

impl JoinToken {
    /// A fresh token for a CA with the given pin.
    pub fn generate(ca_pin: CaPin) -> JoinToken {
        JoinToken {
            id: random_string(TOKEN_ID_LEN),
            secret: random_string(TOKEN_SECRET_LEN),
            ca_pin,
        }
    }

    pub fn parse(s: &str) -> Result<JoinToken, TokenParseError> {
        let parts: Vec<&str> = s.trim().split('.').collect();
        if parts.len() != 4 {
            return Err(TokenParseError::Parts(parts.len()));
        }
        if parts[0] != TOKEN_PREFIX {
            return Err(TokenParseError::Format(parts[0].to_string()));
        }
        let ok = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok(parts[1], TOKEN_ID_LEN) {
            return Err(TokenParseError::Id);
        }
        if !ok(parts[2], TOKEN_SECRET_LEN) {
            return Err(TokenParseError::Secret);
        }
        let ca_pin = CaPin::from_hex(parts[3]).ok_or(TokenParseError::Pin)?;
        Ok(JoinToken {
            id: parts[1].to_string(),
            secret: parts[2].to_string(),
            ca_pin,
        })
    }

    /// The hash stored by the controller instead of the secret.
    pub fn secret_hash(secret: &str) -> String {
        hex::encode(Sha256::digest(secret.as_bytes()))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}.{}",
            self.id, self.secret, self.ca_pin
        )
    }
}

impl fmt::Debug for JoinToken {
    // Never print the secret, even in debug logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("ca_pin", &self.ca_pin)
            .finish()
    }
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = JoinToken::generate(CaPin::of_der(b"ca"));
        let s = t.to_string();
        assert!(s.starts_with("mtj1."));
        assert_eq!(JoinToken::parse(&s).unwrap(), t);
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        let pin = CaPin::of_der(b"ca").to_hex();
        assert_eq!(JoinToken::parse("garbage"), Err(TokenParseError::Parts(1)));
        assert_eq!(
            JoinToken::parse(&format!("mtj2.abcdefgh.{}.{pin}", "a".repeat(32))),
            Err(TokenParseError::Format("mtj2".into()))
        );
        assert_eq!(
            JoinToken::parse(&format!("mtj1.abc.{}.{pin}", "a".repeat(32))),
            Err(TokenParseError::Id)
        );
        assert_eq!(
            JoinToken::parse(&format!("mtj1.abcdefgh.short.{pin}")),
            Err(TokenParseError::Secret)
        );
        assert_eq!(
            JoinToken::parse(&format!("mtj1.abcdefgh.{}.zz", "a".repeat(32))),
            Err(TokenParseError::Pin)
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }
}
