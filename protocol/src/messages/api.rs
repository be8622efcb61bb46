//! The CLI's API on ALPN `metrom/1`, authenticated by a user certificate: one
//! bidirectional stream per request, one [`ApiRequest`] then one [`ApiResponse`]
//! (long operations may send [`Progress`] frames first, see each call).

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::facts::{HostFacts, HostLoad};
use crate::ids::{EnvId, HostId};
use crate::messages::env::{EnvDetail, Resources, TemplateFile};

/// First and only frame from the client on a request stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiRequest {
    pub version: u32,
    pub call: Call,
}

/// Every operation the CLI can ask for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    Status,
    HostList,
    HostShow {
        id: HostId,
    },
    HostCordon {
        id: HostId,
        cordon: bool,
    },
    HostRevoke {
        id: HostId,
    },
    TokenCreate {
        ttl_secs: u64,
        uses: u32,
        labels: BTreeMap<String, String>,
    },
    TokenList,
    TokenRevoke {
        id: String,
    },
    /// Validate and store a template folder as an immutable version.
    TemplatePush {
        files: Vec<TemplateFile>,
    },
    TemplateList,
    /// `version`: a digest, a unique digest prefix, or None for the latest.
    TemplateShow {
        name: String,
        version: Option<String>,
    },
    TemplateVersions {
        name: String,
    },
    TemplatePull {
        name: String,
        version: Option<String>,
    },
    EnvCreate(EnvCreate),
    EnvList {
        all: bool,
    },
    EnvShow {
        name: String,
    },
    /// Start (`running`) or stop an environment.
    EnvPower {
        name: String,
        running: bool,
    },
    EnvRebuild {
        name: String,
        version: Option<String>,
        elsewhere: bool,
    },
    EnvDelete {
        name: String,
        keep_data: bool,
    },
    EnvEvents {
        name: String,
        limit: u32,
    },
    /// Upload a VM base image: `size` raw bytes follow the request on the same stream.
    ImageImport {
        name: String,
        size: u64,
        format: String,
    },
    ImageList,
    ImageDelete {
        name: String,
    },
    /// Upload a `docker save` archive for hosts without a registry: `size`
    /// raw bytes follow the request on the same stream, as for `ImageImport`.
    DockerArchiveImport {
        name: String,
        size: u64,
    },
    DockerArchiveList,
    DockerArchiveDelete {
        name: String,
    },
    // Lifecycle policies, users, quotas, audit and usage. Appended: postcard
    // numbers variants by position.
    /// `env create` with policy flags (`EnvCreate` itself cannot grow fields).
    EnvCreateWithPolicies {
        create: EnvCreate,
        policies: PolicyOverrides,
    },
    /// Push an environment's ttl deadline later (within the site's `max_extension`).
    EnvExtend {
        name: String,
        by_secs: u64,
    },
    /// An environment's effective policies and what they will do next.
    EnvPolicies {
        name: String,
    },
    /// Create a user and issue their identity bundle.
    UserAdd(UserAdd),
    UserList,
    /// Remove a user and revoke every certificate of theirs at once.
    UserRemove {
        name: String,
    },
    UserSetRole {
        name: String,
        role: String,
    },
    QuotaSet(QuotaSet),
    QuotaList,
    /// The audit log, newest last: at most `limit` entries (0: all).
    AuditList {
        user: Option<String>,
        since: Option<Timestamp>,
        limit: u32,
    },
    /// Environment-hours, hours stopped by policy, cost and savings since `since`
    /// (default: 30 days ago).
    ReportUsage {
        since: Option<Timestamp>,
    },
    // The one-line installer. Appended.
    /// Where the controller's HTTPS endpoint is and the pin of its key, for
    /// `metrom host join-command` (which then creates a token with `TokenCreate`).
    InstallerInfo,
    // Cloud brokerage. Appended.
    /// Add a cloud account (admin).
    CloudAdd(CloudAccountSpec),
    /// The cloud accounts (admin).
    CloudList,
    /// Remove a cloud account no environment lives in (admin).
    CloudRemove {
        name: String,
    },
    /// Sync every account now: reconcile cloud environments with their
    /// instances and refresh the instance list; answers with that list.
    CloudSync,
    /// Every instance of every account's region, as of the last sync (admin).
    CloudInstances,
    /// Terminate these instances, each only if it is still an orphan (tagged
    /// as this controller's, and no environment owns it).
    CloudGc {
        instance_ids: Vec<String>,
    },
}

impl Call {
    /// Whether the call changes state (audited, and refused to viewers).
    pub fn is_mutation(&self) -> bool {
        !matches!(
            self,
            Call::Status
                | Call::HostList
                | Call::HostShow { .. }
                | Call::TokenList
                | Call::TemplateList
                | Call::TemplateShow { .. }
                | Call::TemplateVersions { .. }
                | Call::TemplatePull { .. }
                | Call::EnvList { .. }
                | Call::EnvShow { .. }
                | Call::EnvEvents { .. }
                | Call::ImageList
                | Call::DockerArchiveList
                | Call::EnvPolicies { .. }
                | Call::UserList
                | Call::QuotaList
                | Call::AuditList { .. }
                | Call::ReportUsage { .. }
                | Call::InstallerInfo
                | Call::CloudList
                | Call::CloudInstances
        )
    }
}

/// Policies given to `env create`, as written on the command line (the
/// controller parses them, so every client gets the same errors). Each is
/// `None` to inherit the template's or site's value, or `"off"` to turn the
/// inherited policy off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyOverrides {
    /// A duration such as `7d`.
    pub ttl: Option<String>,
    pub ttl_warning: Option<String>,
    /// A duration such as `30m`.
    pub idle: Option<String>,
    /// `DAYS HOURS TIMEZONE [except DATE,…]`, e.g. `mon-fri 09:00-19:00 Asia/Seoul`.
    pub schedule: Option<String>,
}

impl PolicyOverrides {
    pub fn is_empty(&self) -> bool {
        self == &PolicyOverrides::default()
    }
}

/// `metrom user add`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserAdd {
    pub name: String,
    /// `admin`, `developer` or `viewer`.
    pub role: String,
    pub group: Option<String>,
    /// OpenSSH public keys put into the user's environments.
    pub ssh_keys: Vec<String>,
}

/// A user as `user list` prints them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserView {
    pub name: String,
    pub role: String,
    pub group: Option<String>,
    pub created_at: Timestamp,
    /// Certificates issued to the user.
    pub certificates: u32,
    pub ssh_keys: u32,
    /// Environments they own (not deleted).
    pub environments: u32,
}

/// The answer to [`Call::UserAdd`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserCreated {
    pub user: UserView,
    /// The identity bundle (TOML, with the private key): the CLI writes it
    /// with mode 0600; the controller keeps no copy of the key.
    pub identity: String,
}

/// Whose quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaScope {
    User(String),
    Group(String),
}

/// One limit of `quota set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitChange {
    /// Leave it as it is.
    Keep,
    Set(u64),
    /// Remove the limit.
    Unlimited,
}

/// `metrom quota set`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaSet {
    pub scope: QuotaScope,
    pub envs: LimitChange,
    pub vcpus: LimitChange,
    pub memory_mb: LimitChange,
    pub disk_gb: LimitChange,
}

/// Amounts of the four quota dimensions (limits: `None` is unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaFigures {
    pub envs: Option<u64>,
    pub vcpus: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_gb: Option<u64>,
}

/// A quota and what is used of it now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuotaView {
    /// "user" or "group".
    pub scope: String,
    pub name: String,
    pub limits: QuotaFigures,
    /// Current usage (every figure set).
    pub usage: QuotaFigures,
    pub updated_at: Timestamp,
    pub updated_by: String,
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditView {
    pub at: Timestamp,
    /// The user, or "policy" for the policy engine.
    pub user: String,
    pub role: String,
    /// "env create", "user remove", "policy stop", …
    pub action: String,
    /// What it acted on (an environment, a user, …).
    pub target: String,
    /// Parameters, without secret values.
    pub details: String,
    /// "ok" or "refused".
    pub result: String,
    /// Why it was refused (or what was done).
    pub message: String,
}

/// `metrom report usage`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    pub since: Timestamp,
    pub until: Timestamp,
    /// From `[pricing]`; empty when no prices are configured.
    pub currency: String,
    pub by_user: Vec<UsageRow>,
    pub by_template: Vec<UsageRow>,
    pub total: UsageRow,
}

/// Usage of one user, one template, or everything.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UsageRow {
    pub key: String,
    /// Environments that ran or existed in the period.
    pub environments: u32,
    /// Environment-hours observed Running.
    pub running_hours: f64,
    /// Hours environments stayed stopped because a policy stopped them.
    pub policy_stopped_hours: f64,
    /// Environments a policy deleted (ttl) in the period.
    pub deleted_by_policy: u32,
    /// Estimated cost of the running hours.
    pub cost: f64,
    /// Estimated cost avoided by the policy-stopped hours.
    pub savings: f64,
}

/// One effective policy and the level it comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyLine {
    /// "ttl", "ttl_warning", "idle", "schedule".
    pub key: String,
    pub value: String,
    /// "site", "template" or "environment".
    pub source: String,
}

/// `env show`'s policy part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvPolicyView {
    pub name: String,
    pub policies: Vec<PolicyLine>,
    /// When the ttl deletes it (created + ttl + extensions).
    pub delete_at: Option<Timestamp>,
    pub extended_secs: u64,
    /// Latest activity the agent reported, if it reports activity.
    pub last_active: Option<Timestamp>,
    /// How the idle policy sees it ("active 2m ago", "no activity reports from its host").
    pub activity: String,
    pub next_action: Option<String>,
}

/// `metrom cloud add PROVIDER NAME …`. No credentials travel: the
/// controller takes them from its own environment or AWS profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudAccountSpec {
    pub name: String,
    /// "aws".
    pub provider: String,
    pub region: String,
    /// A profile of the controller's shared AWS files.
    pub profile: Option<String>,
    /// A private endpoint (air-gapped sites, tests).
    pub endpoint: Option<String>,
    pub subnet: Option<String>,
    pub security_group: Option<String>,
    pub key_name: Option<String>,
    /// Template image name → machine image id (`debian-12` → `ami-…`).
    pub image_map: BTreeMap<String, String>,
    /// Call the provider once to check the credentials and endpoint before storing.
    pub verify: bool,
}

/// A cloud account as `cloud list` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudAccountView {
    pub name: String,
    pub provider: String,
    pub region: String,
    pub profile: Option<String>,
    pub endpoint: Option<String>,
    pub subnet: Option<String>,
    pub security_group: Option<String>,
    pub key_name: Option<String>,
    pub image_map: BTreeMap<String, String>,
    pub added_at: Timestamp,
    pub added_by: String,
    /// Environments placed in it (not deleted).
    pub environments: u32,
    pub last_sync: Option<Timestamp>,
    /// Why the last call to the provider failed, if it did.
    pub last_error: Option<String>,
}

/// One instance of a cloud account's region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudInstanceView {
    pub account: String,
    pub provider: String,
    pub region: String,
    pub instance_id: String,
    /// pending, running, stopping, stopped, shutting-down, terminated.
    pub state: String,
    pub instance_type: String,
    pub image: String,
    pub launched_at: Option<Timestamp>,
    /// Seconds since it last started, while running.
    pub uptime_secs: Option<u64>,
    /// Price per hour of its type from the configured table; None when the
    /// table does not list the type.
    pub hourly: Option<f64>,
    /// Estimated cost per hour now: the price while pending or running, 0 otherwise.
    pub cost_per_hour: Option<f64>,
    /// "metrom" (an environment owns it), "orphan" (tagged as this
    /// controller's, no environment owns it) or "foreign" (not ours).
    pub ownership: String,
    pub env: Option<String>,
    pub env_id: Option<String>,
    pub owner: Option<String>,
    /// The instance's Name tag.
    pub name: Option<String>,
    /// Its `metrom:controller` tag, when another Metrom controller's.
    pub controller: Option<String>,
}

/// `metrom cloud instances`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudInventoryView {
    pub instances: Vec<CloudInstanceView>,
    /// Oldest full sync among the accounts (None before the first).
    pub synced_at: Option<Timestamp>,
    /// Accounts the last sync could not list, with why.
    pub errors: Vec<String>,
    /// From `[cloud] currency`.
    pub currency: String,
    /// Sum of `cost_per_hour`.
    pub total_per_hour: f64,
    /// The `metrom:controller` tag value of this controller.
    pub controller: String,
}

/// The answer to `cloud gc`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CloudGcView {
    pub terminated: Vec<String>,
    /// (instance, why it was left alone)
    pub skipped: Vec<(String, String)>,
}

/// `metrom env create`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvCreate {
    pub name: String,
    pub template: String,
    pub version: Option<String>,
    pub params: BTreeMap<String, String>,
    /// Place on exactly this host.
    pub host: Option<HostId>,
    /// Place only on hosts with all these labels.
    pub labels: BTreeMap<String, String>,
}

/// The controller's answer.
pub type ApiResponse = Result<Reply, ApiError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Done {
        message: String,
    },
    Status(StatusView),
    Hosts(Vec<HostView>),
    Host(HostView),
    TokenCreated(TokenCreated),
    Tokens(Vec<TokenView>),
    TemplatePushed(TemplatePushed),
    Templates(Vec<TemplateSummary>),
    Template(TemplateDetail),
    TemplateVersions(Vec<TemplateVersionView>),
    TemplateFiles {
        name: String,
        version: String,
        files: Vec<TemplateFile>,
    },
    Env(EnvView),
    Envs(Vec<EnvView>),
    Events(Vec<EventView>),
    Image(ImageView),
    Images(Vec<ImageView>),
    DockerArchive(DockerArchiveView),
    DockerArchives(Vec<DockerArchiveView>),
    // Appended (see Call).
    UserCreated(UserCreated),
    Users(Vec<UserView>),
    Quotas(Vec<QuotaView>),
    Audit(Vec<AuditView>),
    Usage(UsageReport),
    EnvPolicies(EnvPolicyView),
    // Appended (see Call).
    Installer(InstallerInfo),
    // Appended: cloud brokerage.
    CloudAccounts(Vec<CloudAccountView>),
    CloudInstances(CloudInventoryView),
    CloudGc(CloudGcView),
}

/// A refusal or failure, with what to do about it.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::AlreadyExists, message)
    }
    pub fn denied(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::PermissionDenied, message)
    }
    pub fn precondition(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::FailedPrecondition, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::Internal, message)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    FailedPrecondition,
    NoCapacity,
    QuotaExceeded,
    Unavailable,
    VersionMismatch,
    Internal,
}

impl ErrorKind {
    /// Process exit code the CLI uses for this kind of failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => 2,
            ErrorKind::NotFound => 3,
            ErrorKind::AlreadyExists => 4,
            ErrorKind::PermissionDenied => 5,
            ErrorKind::FailedPrecondition => 6,
            ErrorKind::NoCapacity => 7,
            ErrorKind::QuotaExceeded => 8,
            ErrorKind::Unavailable => 9,
            ErrorKind::VersionMismatch => 10,
            ErrorKind::Internal => 1,
        }
    }
}

/// `metrom status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub controller_version: String,
    pub protocol_version: u32,
    pub started_at: Timestamp,
    pub uptime_secs: u64,
    pub hosts_ready: u32,
    pub hosts_unreachable: u32,
    pub hosts_cordoned: u32,
    pub hosts_revoked: u32,
    /// Who the caller is, as the controller sees them ("user admin (admin)").
    pub you: String,
}

/// A host's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    /// Connected and heartbeating.
    Ready,
    /// No heartbeat for longer than the heartbeat TTL.
    Unreachable,
    /// Certificate revoked; cut off for good.
    Revoked,
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostState::Ready => "Ready",
            HostState::Unreachable => "Unreachable",
            HostState::Revoked => "Revoked",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostView {
    pub id: HostId,
    pub name: String,
    pub state: HostState,
    /// Cordoned hosts keep their environments but get no new ones.
    pub cordoned: bool,
    pub labels: BTreeMap<String, String>,
    pub facts: HostFacts,
    /// Latest heartbeat figures, while connected.
    pub load: Option<HostLoad>,
    /// Address the agent connects from, while connected.
    pub address: Option<String>,
    pub joined_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub cert_expires_at: Timestamp,
    /// Sum of the resources of the environments placed on the host.
    pub allocated: Resources,
    pub environments: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub id: String,
    /// The whole token, `mtj1.…`: shown once, never stored in clear.
    pub token: String,
    pub expires_at: Timestamp,
    pub uses: u32,
    /// The controller address agents should join (`HOST:PORT`).
    pub controller: String,
}

/// What a join command needs besides the token: the controller's HTTPS
/// endpoint (serving `install.sh` and the agent binaries) and its pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallerInfo {
    /// `https://HOST:PORT`, as boxes reach the HTTPS endpoint.
    pub url: String,
    /// `sha256//<base64>`: the SHA-256 of the endpoint certificate's
    /// SubjectPublicKeyInfo, in curl's `--pinnedpubkey` form.
    pub pin: String,
    /// The QUIC address agents join (`HOST:PORT`).
    pub controller: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub created_at: Timestamp,
    pub created_by: String,
    pub expires_at: Timestamp,
    pub uses: u32,
    pub used: u32,
    pub labels: BTreeMap<String, String>,
    /// "active", "expired", "used up" or "revoked".
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplatePushed {
    pub name: String,
    pub version: String,
    /// False when this exact content was already stored.
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateSummary {
    pub name: String,
    pub description: String,
    pub latest: String,
    pub versions: u32,
    pub owner: String,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionView {
    pub version: String,
    pub pushed_at: Timestamp,
    pub pushed_by: String,
    pub latest: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParamView {
    pub name: String,
    /// The default, or "••••" for a secret; None when the parameter is required.
    pub default: Option<String>,
    pub description: String,
    pub required: bool,
    pub secret: bool,
}

/// A template version as `template show` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateDetail {
    pub name: String,
    pub version: String,
    pub description: String,
    pub pushed_at: Timestamp,
    pub pushed_by: String,
    pub latest: bool,
    pub runtime: Vec<String>,
    pub image: Option<String>,
    pub resources: Resources,
    /// "web 8080/tcp"
    pub ports: Vec<String>,
    pub packages: Vec<String>,
    /// "git https://… (branch main) → app"
    pub repos: Vec<String>,
    pub params: Vec<ParamView>,
    /// "web: registry.lan/web:1, depends on db (healthy)"
    pub services: Vec<String>,
    /// "ttl 14d", "idle 60m", "schedule …"
    pub policies: Vec<String>,
    /// (path, size in bytes)
    pub files: Vec<(String, u64)>,
}

/// One phase of an environment's current build and when it was reached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseView {
    /// "requested", "scheduled", "provisioning", "running"
    pub phase: String,
    pub at: Timestamp,
    /// Seconds since the build was requested.
    pub after_secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    pub at: Timestamp,
    pub kind: String,
    pub message: String,
}

/// An environment as `env list` and `env show` print it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvView {
    pub id: EnvId,
    pub name: String,
    pub owner: String,
    pub template: String,
    pub version: String,
    /// Secret parameters are masked.
    pub params: BTreeMap<String, String>,
    pub resources: Resources,
    pub runtime: String,
    pub host: Option<HostId>,
    pub host_name: Option<String>,
    /// "running", "stopped" or "deleted".
    pub desired: String,
    /// Pending, Scheduled, Provisioning, Running, Stopped, Failed, Unknown, Deleted.
    pub state: String,
    /// Why it Failed, or what it is waiting for.
    pub reason: Option<String>,
    pub detail: EnvDetail,
    pub generation: u64,
    pub build: u64,
    pub created_at: Timestamp,
    pub phases: Vec<PhaseView>,
    /// Latest events, newest last (env show only).
    pub events: Vec<EventView>,
    /// The next action a policy will take, and when (e.g. "stop at 2026-11-25 19:00 (schedule)").
    pub next_action: Option<String>,
}

/// A VM base image in the controller's image store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageView {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub format: String,
    pub imported_at: Timestamp,
    pub imported_by: String,
    /// Environments (not deleted) whose template uses the image.
    pub used_by: u32,
}

/// A `docker save` archive in the controller's image store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DockerArchiveView {
    pub name: String,
    pub digest: String,
    pub size: u64,
    /// The image references it holds (`repo:tag`).
    pub images: Vec<String>,
    pub imported_at: Timestamp,
    pub imported_by: String,
}
