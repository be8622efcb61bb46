//! Identifiers. Each is a short lowercase string with a kind prefix
//! (`h-` host, `e-` environment), so an id pasted in the wrong place is caught.

use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// `n` random characters from an alphabet without look-alikes (no l, o, 0, 1).
pub fn random_string(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $len:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_string($len)))
            }

            /// Parses an id, checking its prefix and characters.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                let rest = s.strip_prefix($prefix).ok_or_else(|| IdError {
                    kind: stringify!($name),
                    value: s.to_string(),
                    expected: concat!("to start with '", $prefix, "'"),
                })?;
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    return Err(IdError {
                        kind: stringify!($name),
                        value: s.to_string(),
                        expected: "lowercase letters, digits and '-' after the prefix",
                    });
                }
                Ok(Self(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
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

prefixed_id!(
    /// A host (one agent), assigned by the controller at enrollment.
    HostId, "h-", 10
);
prefixed_id!(
    /// An environment, assigned by the controller at creation.
    EnvId, "e-", 12
);

/// An id that does not have the expected form.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {kind} '{value}': expected {expected}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The identity a client certificate carries in its common name: a host
/// (`host:h-…`) or a user (`user:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    Host(HostId),
    User(String),
}

impl Principal {
    /// The certificate common name for this principal.
    pub fn common_name(&self) -> String {
        match self {
            Principal::Host(id) => format!("host:{id}"),
            Principal::User(name) => format!("user:{name}"),
        }
    }

    /// Parses a certificate common name.
    pub fn from_common_name(cn: &str) -> Option<Principal> {
        if let Some(id) = cn.strip_prefix("host:") {
            return HostId::parse(id).ok().map(Principal::Host);
        }
        cn.strip_prefix("user:")
            .filter(|n| valid_user_name(n))
            .map(|n| Principal::User(n.to_string()))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Host(id) => write!(f, "host {id}"),
            Principal::User(name) => write!(f, "user {name}"),
        }
    }
}

/// User names: 1–32 characters, lowercase letters, digits, '-', '_' and '.',
/// starting with a letter (they become Unix user names inside environments).
pub fn valid_user_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_check_prefix() {
        let h = HostId::generate();
        assert!(h.as_str().starts_with("h-"));
        assert_eq!(HostId::parse(h.as_str()).unwrap(), h);
        assert!(HostId::parse("e-abc").is_err());
        assert!(HostId::parse("h-").is_err());
        assert!(HostId::parse("h-ABC").is_err());
    }

    #[test]
    fn principals_round_trip_through_common_names() {
        let h = Principal::Host(HostId::generate());
        assert_eq!(Principal::from_common_name(&h.common_name()), Some(h));
        let u = Principal::User("alice".into());
        assert_eq!(Principal::from_common_name(&u.common_name()), Some(u));
        assert_eq!(Principal::from_common_name("user:Root"), None);
        assert_eq!(Principal::from_common_name("something"), None);
    }
}
