//! What an agent reports about its host: static facts in Hello, load in heartbeats.

use serde::{Deserialize, Serialize};

use crate::messages::env::RuntimeKind;

/// Facts about a host, gathered by the agent at connect time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HostFacts {
    pub hostname: String,
    /// Distribution name and version, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    pub kernel: String,
    /// CPU architecture as Rust names it: x86_64, aarch64, …
    pub arch: String,
    pub cpus: u32,
    pub cpu_model: String,
    pub memory_bytes: u64,
    /// Every mounted local disk.
    pub disks: Vec<DiskFact>,
    /// The filesystem holding the agent's data directory, where environments'
    /// disks and cached images live: the host's schedulable storage.
    pub storage: DiskFact,
    pub capabilities: Capabilities,
    pub agent_version: String,
    /// Runtimes this agent offers for environments, usable now.
    pub runtimes: Vec<RuntimeKind>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiskFact {
    pub mount: String,
    pub device: String,
    pub filesystem: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
}

/// What the host can run. Each probe says whether it works and, if not, why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Capabilities {
    /// `/dev/kvm` exists and can be opened for reading and writing.
    pub kvm: Probe,
    /// The libvirt daemon answers at the agent's configured URI.
    pub libvirt: Probe,
    /// The Docker Engine answers on its socket.
    pub docker: Probe,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Probe {
    pub available: bool,
    /// A version when available, the reason when not.
    pub detail: String,
}

impl Probe {
    pub fn ok(detail: impl Into<String>) -> Probe {
        Probe {
            available: true,
            detail: detail.into(),
        }
    }
    pub fn missing(reason: impl Into<String>) -> Probe {
        Probe {
            available: false,
            detail: reason.into(),
        }
    }
}

/// Load figures carried by every heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct HostLoad {
    /// 1-minute load average.
    pub load1: f32,
    /// CPU busy, percent of all CPUs, since the previous heartbeat.
    pub cpu_percent: f32,
    pub memory_available_bytes: u64,
    /// Available bytes on the storage filesystem (see [`HostFacts::storage`]).
    pub storage_available_bytes: u64,
}
