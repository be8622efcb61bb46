//! Runtimes: how an environment becomes a running instance on this host.
//!
//! Every runtime (KVM via libvirt, Docker via the Engine API, the in-memory
//! fake) implements [`Runtime`]. The per-environment worker in `work.rs` decides
//! what to do (create, start, stop, rebuild, destroy) from the ledger and what
//! the runtime observes; runtimes only carry out single steps, each idempotent.

pub mod docker;
pub mod fake;
pub mod kvm;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvDetail, EnvSpec, RuntimeKind};

/// What a runtime sees of an environment's instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No instance exists.
    Missing,
    /// The instance for `build` exists and is stopped.
    Stopped { build: u64, detail: EnvDetail },
    /// The instance for `build` is running; `ready` once it is usable (the
    /// guest answered, the services are up).
    Running {
        build: u64,
        ready: bool,
        detail: EnvDetail,
    },
    /// The instance exists but is broken.
    Failed { build: u64, reason: String },
}

/// Cumulative activity counters of a running instance, since it started.
/// The agent turns two readings into a rate for the idle policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// CPU time used, in nanoseconds.
    pub cpu_ns: u64,
    /// Network bytes received plus sent.
    pub net_bytes: u64,
}

/// A runtime step that failed; the message is shown to the environment's owner.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime's backend (libvirtd, dockerd) is not answering; retried.
    #[error("{0}")]
    Unavailable(String),
    /// The spec cannot be run here as it is (bad image, unsupported feature); not retried until the spec changes.
    #[error("{0}")]
    Invalid(String),
    /// Anything else; retried with backoff.
    #[error("{0}")]
    Failed(String),
}

/// Reports intermediate progress ("fetching image 40%") of a long step.
#[derive(Clone)]
pub struct Progress {
    sink: Arc<dyn Fn(String) + Send + Sync>,
}

impl Progress {
    pub fn new(sink: impl Fn(String) + Send + Sync + 'static) -> Progress {
        Progress {
            sink: Arc::new(sink),
        }
    }

    /// A progress sink that drops everything.
    pub fn none() -> Progress {
        Progress::new(|_| {})
    }

    pub fn say(&self, message: impl Into<String>) {
        (self.sink)(message.into())
    }
}

/// One way of running environments. Every method is idempotent: calling it
/// again after it succeeded (or after a crash half-way) converges, never
/// duplicates.
#[async_trait]
pub trait Runtime: Send + Sync {
    fn kind(&self) -> RuntimeKind;

    /// What exists for this environment now.
    async fn observe(&self, spec: &EnvSpec) -> Result<Observed, RuntimeError>;

    /// Creates the instance for `spec.build` and starts it (or leaves it
    /// stopped when `spec.power` is Stopped). Data from an earlier build of
    /// the same environment is reused.
    async fn create(&self, spec: &EnvSpec, progress: &Progress) -> Result<(), RuntimeError>;

    async fn start(&self, spec: &EnvSpec) -> Result<(), RuntimeError>;

    /// Graceful stop with a timeout, then forced.
    async fn stop(&self, spec: &EnvSpec) -> Result<(), RuntimeError>;

    /// Removes the instance; its data too unless `keep_data`.
    async fn destroy(&self, env: &EnvId, keep_data: bool) -> Result<(), RuntimeError>;

    /// Environments this runtime has instances for on this host.
    async fn instances(&self) -> Result<Vec<EnvId>, RuntimeError>;

    /// Activity counters of a running instance, for the idle policy. `None`
    /// when the runtime does not measure them (the controller then never
    /// stops the environment for idleness).
    async fn counters(&self, _spec: &EnvSpec) -> Result<Option<Counters>, RuntimeError> {
        Ok(None)
    }
}

/// The runtimes this agent offers, by kind.
#[derive(Default, Clone)]
pub struct Runtimes {
    by_kind: BTreeMap<RuntimeKind, Arc<dyn Runtime>>,
}

impl Runtimes {
    /// The runtimes this host can offer: each real one whose backend answers,
    /// and the fake one for the kinds `fake_runtimes` names.
    pub async fn for_host(
        data_dir: &std::path::Path,
        config: &crate::config::AgentConfig,
        link: Arc<crate::link::Link>,
    ) -> Runtimes {
        let mut runtimes = Runtimes::default();
        if !config.is_fake(RuntimeKind::Docker) {
            let settings = docker::Settings::from_config(config);
            match docker::DockerRuntime::connect(
                &config.docker_socket,
                data_dir,
                link.clone(),
                settings,
            )
            .await
            {
                Ok(rt) => runtimes.insert(RuntimeKind::Docker, Arc::new(rt)),
                Err(why) => tracing::info!("no docker runtime: {why}"),
            }
        }
        let fake_kinds = config.fake_kinds();
        if !fake_kinds.is_empty() {
            let fake: Arc<dyn Runtime> =
                Arc::new(fake::FakeRuntime::open(data_dir, config.fake_delay));
            for k in fake_kinds.iter().copied() {
                tracing::warn!(
                    "the {k} runtime is served by the FAKE runtime (agent.toml fake_runtimes): nothing really runs"
                );
                runtimes.insert(k, fake.clone());
            }
        }
        if !config.is_fake(RuntimeKind::Kvm) {
            match config.kvm_settings(data_dir) {
                Ok(settings) => match kvm::KvmRuntime::open(settings, link.clone()).await {
                    Ok(rt) => runtimes.insert(RuntimeKind::Kvm, Arc::new(rt)),
                    Err(e) => tracing::warn!("the kvm runtime is not available: {e}"),
                },
                Err(e) => tracing::warn!("the kvm runtime is not available: {e}"),
            }
        }
        runtimes
    }

    pub fn insert(&mut self, kind: RuntimeKind, runtime: Arc<dyn Runtime>) {
        self.by_kind.insert(kind, runtime);
    }

    pub fn get(&self, kind: RuntimeKind) -> Option<Arc<dyn Runtime>> {
        self.by_kind.get(&kind).cloned()
    }

    pub fn kinds(&self) -> Vec<RuntimeKind> {
        self.by_kind.keys().copied().collect()
    }

    /// Every distinct runtime (one served under several kinds counts once).
    pub fn distinct(&self) -> Vec<Arc<dyn Runtime>> {
        let mut out: Vec<Arc<dyn Runtime>> = Vec::new();
        for r in self.by_kind.values() {
            if !out.iter().any(|o| Arc::ptr_eq(o, r)) {
                out.push(r.clone());
            }
        }
        out
    }
}
