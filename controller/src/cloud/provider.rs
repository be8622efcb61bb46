//! The seam to a cloud: one trait, an AWS implementation (`aws.rs`) and an
//! in-memory fake (`fake.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::CloudAccountRecord;

/// Tag: the environment id an instance belongs to.
pub const TAG_ENV: &str = "metrom:env";
/// Tag: the environment's owner.
pub const TAG_OWNER: &str = "metrom:owner";
/// Tag: which controller launched it (the cluster name in the store's meta).
pub const TAG_CONTROLLER: &str = "metrom:controller";
/// Tag: the build of the environment it runs (a rebuild launches a new one).
pub const TAG_BUILD: &str = "metrom:build";
/// Tag: the template it was made from.
pub const TAG_TEMPLATE: &str = "metrom:template";
/// The console's name tag.
pub const TAG_NAME: &str = "Name";

/// A cloud: launch, start, stop, terminate, list, price.
///
/// One value serves one account in one region. Every call is safe to
/// repeat: `launch` by its client token, the others by nature.
#[async_trait::async_trait]
pub trait CloudProvider: Send + Sync {
    /// Launches one instance; a retry with the same `client_token` launches nothing new.
    async fn launch(&self, spec: &LaunchSpec) -> Result<Instance, CloudError>;
    async fn start(&self, ids: &[String]) -> Result<(), CloudError>;
    async fn stop(&self, ids: &[String]) -> Result<(), CloudError>;
    async fn terminate(&self, ids: &[String]) -> Result<(), CloudError>;
    /// The region's instances: all of them, or those tagged
    /// `metrom:controller = <controller>`.
    async fn list(&self, scope: ListScope<'_>) -> Result<Vec<Instance>, CloudError>;
    /// Estimated price per hour of an instance type, if known.
    fn price(&self, instance_type: &str) -> Option<f64>;
}

/// Which instances [`CloudProvider::list`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListScope<'a> {
    All,
    Controller(&'a str),
}

/// Makes providers for accounts (the AWS SDK in the daemon; fakes in tests).
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    async fn connect(
        &self,
        account: &CloudAccountRecord,
        settings: &ProviderSettings,
    ) -> Result<Arc<dyn CloudProvider>, CloudError>;
}

/// What every provider gets from `[cloud]`.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// Instance type → price per hour.
    pub prices: BTreeMap<String, f64>,
    pub max_attempts: u32,
    pub initial_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
}

/// One instance to launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub image: String,
    pub instance_type: String,
    /// cloud-init user-data (text; the provider encodes it as its API wants).
    pub user_data: Vec<u8>,
    pub client_token: String,
    pub tags: BTreeMap<String, String>,
    pub subnet: Option<String>,
    pub security_group: Option<String>,
    pub key_name: Option<String>,
}

/// The life of an instance, as EC2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
    Unknown,
}

impl InstanceState {
    pub fn parse(s: &str) -> InstanceState {
        match s {
            "pending" => InstanceState::Pending,
            "running" => InstanceState::Running,
            "stopping" => InstanceState::Stopping,
            "stopped" => InstanceState::Stopped,
            "shutting-down" => InstanceState::ShuttingDown,
            "terminated" => InstanceState::Terminated,
            _ => InstanceState::Unknown,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
            InstanceState::Unknown => "unknown",
        }
    }

    /// Neither terminated nor on its way there.
    pub fn alive(&self) -> bool {
        !matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }

    /// Billed for compute.
    pub fn billed(&self) -> bool {
        matches!(self, InstanceState::Pending | InstanceState::Running)
    }
}

/// An instance as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub instance_type: String,
    pub image: String,
    /// When it last started.
    pub launched_at: Option<Timestamp>,
    pub tags: BTreeMap<String, String>,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

impl Instance {
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }
}

/// What kind of failure a provider call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudErrorKind {
    /// No credentials could be found.
    Credentials,
    /// The provider refused the credentials.
    Auth,
    /// Still throttled after the bounded retries.
    Throttled,
    /// No answer (connection refused, timeout, dropped).
    Unreachable,
    /// The provider answered with an error about the request.
    Refused,
    /// The provider failed (5xx after the retries).
    ServerError,
    /// An answer Metrom could not use.
    Malformed,
    /// This build cannot talk to this provider.
    Unsupported,
}

/// A failed provider call; the message names the account and says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CloudError {
    pub kind: CloudErrorKind,
    pub message: String,
}

impl CloudError {
    pub fn new(kind: CloudErrorKind, message: impl Into<String>) -> CloudError {
        CloudError {
            kind,
            message: message.into(),
        }
    }

    /// Whether the call may have taken effect although it failed (no answer,
    /// or a server error): a launch may have happened.
    pub fn uncertain(&self) -> bool {
        matches!(
            self.kind,
            CloudErrorKind::Unreachable | CloudErrorKind::ServerError
        )
    }
}
