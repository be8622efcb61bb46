//! Records kept in the store.

use std::collections::BTreeMap;

use jiff::Timestamp;
use metrom_protocol::facts::HostFacts;
use metrom_protocol::ids::HostId;
use serde::{Deserialize, Serialize};

/// An enrolled host. Liveness (connected, last heartbeat, load) is kept in
/// memory, not here: heartbeats must not cost a durable write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub id: HostId,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub facts: HostFacts,
    pub joined_at: Timestamp,
    /// The join token that enrolled the host.
    pub token_id: String,
    /// Serials (hex) of every certificate issued to the host, newest last.
    pub cert_serials: Vec<String>,
    pub cert_not_after: Timestamp,
    #[serde(default)]
    pub cordoned: bool,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
    /// Written when the host disconnects or goes Unreachable, not per heartbeat.
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
    #[serde(default)]
    pub last_address: Option<String>,
}

impl HostRecord {
    pub fn revoked(&self) -> bool {
        self.revoked_at.is_some()
    }
}

/// A join token. Only a hash of the secret is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub secret_hash: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Timestamp,
    pub uses: u32,
    pub used: u32,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

impl TokenRecord {
    /// "active", "expired", "used up" or "revoked" at `now`.
    pub fn state(&self, now: Timestamp) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.used >= self.uses {
            "used up"
        } else if now >= self.expires_at {
            "expired"
        } else {
            "active"
        }
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Their own environments, templates and reads.
    Developer,
    /// Reads only.
    Viewer,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "developer" => Some(Role::Developer),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// A person with an identity bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub created_at: Timestamp,
    /// Serials (hex) of the user's certificates, newest last.
    pub cert_serials: Vec<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
}

/// A revoked certificate, kept until it would have expired anyway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedCert {
    pub principal: String,
    pub revoked_at: Timestamp,
    pub not_after: Timestamp,
}
