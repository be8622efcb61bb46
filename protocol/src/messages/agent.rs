//! The agent's session on ALPN `metrom/1`, authenticated by its host certificate.
//!
//! The agent opens the **control stream** (its first bidirectional stream) and
//! sends [`Hello`]; the controller answers [`HelloReply`]. From then on the agent
//! writes [`AgentMessage`]s and the controller writes [`ControllerMessage`]s on
//! that stream. The controller sends each command on a bidirectional stream of
//! its own ([`Command`] → [`CommandReply`]); the agent opens a stream of its own
//! for each request it makes ([`AgentRequest`]).

use serde::{Deserialize, Serialize};

use crate::facts::{HostFacts, HostLoad};
use crate::ids::{EnvId, HostId};
use crate::messages::env::{EnvReport, EnvSpec};

/// First frame on the control stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub host_id: HostId,
    pub facts: HostFacts,
    /// Every environment in the agent's ledger, as it is now.
    pub environments: Vec<EnvReport>,
}

/// Controller's answer to [`Hello`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HelloReply {
    Welcome(Welcome),
    Refused { reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Welcome {
    pub version: u32,
    /// How often to send a heartbeat.
    pub heartbeat_interval_ms: u64,
    /// The controller considers the host Unreachable after this long without one.
    pub heartbeat_ttl_ms: u64,
    /// Renew the host certificate when less than this much validity is left.
    pub renew_before_ms: u64,
}

/// Agent → controller on the control stream, after Hello.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentMessage {
    Heartbeat(HostLoad),
    /// An environment's observed state changed (or is re-asserted).
    EnvStatus(EnvReport),
    /// Ask for a fresh certificate for a key generated on the host.
    RenewCertificate {
        csr_pem: String,
    },
    /// Activity figures per environment, for the idle policy.
    Activity(Vec<EnvActivity>),
}

/// Controller → agent on the control stream, after HelloReply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerMessage {
    /// The answer to [`AgentMessage::RenewCertificate`].
    Certificate { cert_pem: String },
    /// Renewal refused; the agent keeps its current certificate and retries later.
    RenewRefused { reason: String },
}

/// Controller → agent, one per command stream. Commands are idempotent by
/// (environment id, generation): the agent ignores a generation older than the
/// one it has recorded and never creates a second instance of an environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Make the environment match the spec: create it if missing, rebuild it if
    /// the spec's build serial is newer, start or stop it per its desired power.
    Apply(EnvSpec),
    /// Delete the environment (and its data unless `keep_data`).
    Delete {
        env_id: EnvId,
        generation: u64,
        keep_data: bool,
    },
}

/// Agent → controller on the command's stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CommandReply {
    /// Recorded durably in the agent's ledger; progress follows as EnvStatus.
    Accepted {
        env_id: EnvId,
        generation: u64,
    },
    /// Ignored: the agent has already seen a newer generation.
    Stale {
        env_id: EnvId,
        current_generation: u64,
    },
    Refused {
        reason: String,
    },
}

/// Agent → controller, one per stream the agent opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AgentRequest {
    /// Stream a VM image's bytes from `offset` (to resume a broken transfer).
    /// Answered with [`ImageStreamHeader`] then the raw bytes to the end.
    FetchImage { digest: String, offset: u64 },
    /// Stream a Docker image archive (`docker save`) from `offset`.
    FetchDockerArchive { digest: String, offset: u64 },
}

/// First frame of an image transfer; raw bytes follow until `size - offset`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ImageStreamHeader {
    Found {
        size: u64,
        digest: String,
        offset: u64,
    },
    NotFound {
        reason: String,
    },
}

/// Activity of one environment over the last reporting interval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvActivity {
    pub env_id: EnvId,
    /// CPU time used, in percent of one CPU, averaged over the interval.
    pub cpu_percent: f32,
    /// Bytes received plus sent over the interval.
    pub net_bytes: u64,
    /// Interval length.
    pub interval_ms: u64,
}
