//! Enrollment, on ALPN `metrom-join/1`: one bidirectional stream, one request,
//! one response. The agent has already checked the controller's certificate
//! chain against the token's CA pin during the TLS handshake.

use serde::{Deserialize, Serialize};

use crate::ids::HostId;

/// Agent → controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: u32,
    pub token_id: String,
    pub secret: String,
    /// PEM certificate signing request for a key generated on the host; only
    /// its public key is used.
    pub csr_pem: String,
    pub hostname: String,
}

/// Controller → agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum JoinResponse {
    Accepted(JoinAccepted),
    Refused(JoinRefused),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinAccepted {
    pub host_id: HostId,
    pub cert_pem: String,
    pub ca_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRefused {
    /// What was wrong and what to do, for the sysadmin running the join.
    pub reason: String,
}
