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

/// A template: its versions, newest last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateRecord {
    pub name: String,
    pub description: String,
    /// Who pushed the first version; only they (or an admin) may push more.
    pub owner: String,
    pub versions: Vec<TemplateVersionMeta>,
}

impl TemplateRecord {
    pub fn latest(&self) -> &TemplateVersionMeta {
        self.versions
            .last()
            .expect("a template has at least one version")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionMeta {
    pub version: String,
    pub pushed_at: Timestamp,
    pub pushed_by: String,
}

/// The files of one template version (immutable), keyed `name@version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionRecord {
    pub name: String,
    pub version: String,
    pub files: Vec<metrom_protocol::messages::env::TemplateFile>,
}

/// What the owner wants of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Desired {
    Running,
    Stopped,
    Deleted,
}

impl Desired {
    pub fn as_str(&self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Deleted => "deleted",
        }
    }
}

/// When the current build reached each phase.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    pub requested_at: Option<Timestamp>,
    pub scheduled_at: Option<Timestamp>,
    pub provisioning_at: Option<Timestamp>,
    pub running_at: Option<Timestamp>,
}

/// An environment: desired state (durable before a request is acknowledged)
/// and the last observed state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvRecord {
    pub id: metrom_protocol::ids::EnvId,
    pub name: String,
    pub owner: String,
    pub template: String,
    pub version: String,
    pub params: BTreeMap<String, String>,
    /// Parameter names whose values are secret (masked in views).
    #[serde(default)]
    pub secret_params: Vec<String>,
    pub resources: metrom_protocol::messages::env::Resources,
    pub runtime: metrom_protocol::messages::env::RuntimeKind,
    /// The host it is placed on.
    pub host: Option<HostId>,
    /// Placement constraints given at create.
    #[serde(default)]
    pub pin_host: Option<HostId>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The base image (name, digest) it was created from, if any.
    #[serde(default)]
    pub image: Option<metrom_protocol::messages::env::ImageRef>,
    pub desired: Desired,
    #[serde(default)]
    pub keep_data: bool,
    /// Increments on every change of desired state.
    pub generation: u64,
    /// Increments on every rebuild.
    pub build: u64,
    pub state: metrom_protocol::messages::env::EnvState,
    #[serde(default)]
    pub detail: metrom_protocol::messages::env::EnvDetail,
    pub created_at: Timestamp,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub deleted_at: Option<Timestamp>,
    /// Lifecycle policies and their bookkeeping. Kept in the record so that a
    /// change of desired state and the facts the policy engine reads (who
    /// changed the power, when) are one write.
    #[serde(default)]
    pub policy: EnvPolicy,
    /// Where it runs in a cloud (runtime `cloud`): account, region, instance.
    #[serde(default)]
    pub cloud: Option<crate::cloud::CloudPlacement>,
}

/// An environment's effective lifecycle policies and what they have done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvPolicy {
    /// Merged at create from the site, the template and the environment's flags.
    #[serde(default)]
    pub spec: metrom_protocol::template::PolicySpec,
    /// Where each policy came from: key → "site", "template", "environment" or "default".
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// Total ttl extensions, in seconds.
    #[serde(default)]
    pub extended_secs: u64,
    /// The deletion time the latest ttl warning announced (an extension moves
    /// the deadline, so a new warning is due before the new one).
    #[serde(default)]
    pub warned_for: Option<Timestamp>,
    /// Last change of the desired power: at create, by a user, or by a policy.
    /// A schedule acts only on on/off times after it, so a manual start after
    /// hours lasts until the next off time.
    #[serde(default)]
    pub power_changed_at: Option<Timestamp>,
    /// Who made that change: a user name or "policy".
    #[serde(default)]
    pub power_changed_by: Option<String>,
    /// Why a policy stopped it; cleared when it is started again.
    #[serde(default)]
    pub stopped_by_policy: Option<String>,
    /// When a policy (ttl) deleted it.
    #[serde(default)]
    pub deleted_by_policy: Option<Timestamp>,
}

impl EnvRecord {
    /// When the desired power last changed (create time if never).
    pub fn power_changed_at(&self) -> Timestamp {
        self.policy.power_changed_at.unwrap_or(self.created_at)
    }

    /// Whether it stands stopped because a policy stopped it.
    pub fn stopped_by_policy(&self) -> bool {
        self.desired == Desired::Stopped && self.policy.stopped_by_policy.is_some()
    }

    /// For unit tests: `dev` of `alice` (1 vCPU, 512 MiB, 1 GB), generation
    /// and build 1, on a new host with the fake runtime, created now.
    #[cfg(test)]
    pub fn sample(desired: Desired, state: metrom_protocol::messages::env::EnvState) -> EnvRecord {
        use metrom_protocol::messages::env::{Resources, RuntimeKind};
        EnvRecord {
            id: metrom_protocol::ids::EnvId::generate(),
            name: "dev".into(),
            owner: "alice".into(),
            template: "t".into(),
            version: "sha256:0".into(),
            params: Default::default(),
            secret_params: vec![],
            resources: Resources {
                vcpus: 1,
                memory_mb: 512,
                disk_gb: 1,
            },
            runtime: RuntimeKind::Fake,
            host: Some(HostId::generate()),
            pin_host: None,
            labels: Default::default(),
            image: None,
            desired,
            keep_data: false,
            generation: 1,
            build: 1,
            state,
            detail: Default::default(),
            created_at: Timestamp::now(),
            timings: Default::default(),
            deleted_at: None,
            policy: Default::default(),
            cloud: None,
        }
    }
}

/// One state-changing request (or policy action), refused or done; keyed
/// `<unix nanos, 20 digits>-<sequence>` so keys sort by time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: Timestamp,
    pub user: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub details: String,
    pub ok: bool,
    pub message: String,
}

/// Limits of a user or a group, keyed `user:NAME` or `group:NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaRecord {
    /// "user" or "group".
    pub scope: String,
    pub name: String,
    pub limits: metrom_protocol::messages::api::QuotaFigures,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// What an interval of an environment's life was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalKind {
    /// Observed Running.
    Running,
    /// Stopped by a policy (schedule or idle) and not started since.
    PolicyStopped,
}

impl IntervalKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            IntervalKind::Running => "running",
            IntervalKind::PolicyStopped => "policy_stopped",
        }
    }
}

/// A stretch of an environment's life, written when it opens and again when it
/// closes; keyed `<env-id>/<start nanos, 20 digits>/<kind>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IntervalRecord {
    pub env: metrom_protocol::ids::EnvId,
    pub owner: String,
    pub template: String,
    pub resources: metrom_protocol::messages::env::Resources,
    pub kind: IntervalKind,
    pub start: Timestamp,
    pub end: Option<Timestamp>,
}

/// Something that happened to an environment, keyed `<env-id>/<sequence>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    pub at: Timestamp,
    pub kind: String,
    pub message: String,
}

/// A VM base image in the image store (the file is `images/<hex digest>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub format: String,
    pub imported_at: Timestamp,
    pub imported_by: String,
}

/// A `docker save` archive in the image store, for sites without a registry:
/// agents fetch it when an environment needs one of its images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerArchiveRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
    /// The image references it holds (`repo:tag`), from its manifest.
    pub images: Vec<String>,
    pub imported_at: Timestamp,
    pub imported_by: String,
}

/// A cloud account (`metrom cloud add`). No credentials: the controller
/// takes them from its environment or the named AWS profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudAccountRecord {
    pub name: String,
    /// "aws".
    pub provider: String,
    pub region: String,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub security_group: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    /// Template image name → machine image id.
    #[serde(default)]
    pub image_map: BTreeMap<String, String>,
    pub added_at: Timestamp,
    pub added_by: String,
}
