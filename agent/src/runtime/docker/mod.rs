//! The Docker runtime: an environment is a compose project on this host's
//! Docker Engine, driven through its API (bollard).
//!
//! Per environment (project `metrom-<env name>`): one bridge network (plus
//! the networks the compose file declares, namespaced), a container per
//! service (`<project>-<service>`), the named volumes (namespaced with the
//! environment id, so they survive rebuilds and never meet another
//! environment's), host ports from the agent's range, and the template's files
//! under the agent's data directory for bind mounts. Every object carries the
//! label `io.metrom.env=<env id>`: that is how the runtime finds them again
//! after a restart, and what `destroy` removes.
//!
//! The files: `plan` (compose → container specs, pure), `ports` (host port
//! allocation), `images` (local, archive from the controller, or pull),
//! `lifecycle` (create/start/stop/destroy), `observe` (containers → state).

mod images;
mod lifecycle;
mod observe;
mod plan;
mod ports;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvSpec, RuntimeKind};

use super::{Observed, Progress, Runtime, RuntimeError};
use crate::config::{AgentConfig, PortRange};
use crate::link::Link;

/// Label keys on every object the runtime makes.
pub mod label {
    pub const ENV: &str = "io.metrom.env";
    pub const BUILD: &str = "io.metrom.build";
    pub const SERVICE: &str = "io.metrom.service";
    pub const OWNER: &str = "io.metrom.owner";
    pub const PROJECT: &str = "io.metrom.project";
    pub const TEMPLATE: &str = "io.metrom.template";
    /// A container's published ports: `<target>/<proto>=<host port>,…`.
    pub const PORTS: &str = "io.metrom.ports";
    /// A volume's or network's name in the compose file.
    pub const NAME: &str = "io.metrom.name";
}

/// How long a request to dockerd may take to answer (stops wait for the
/// containers; image loads read the whole archive first).
const API_TIMEOUT_SECS: u64 = 900;
/// How long a probe of dockerd may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings from agent.toml.
#[derive(Debug, Clone)]
pub struct Settings {
    pub registry: Option<String>,
    pub registry_insecure: bool,
    pub port_range: PortRange,
    pub stop_timeout: Duration,
    /// How long a service may take to become healthy (or to complete) before
    /// the services that wait for it are given up on.
    pub dependency_timeout: Duration,
}

impl Settings {
    pub fn from_config(c: &AgentConfig) -> Settings {
        Settings {
            registry: c.registry.clone(),
            registry_insecure: c.registry_insecure,
            port_range: c.docker_port_range,
            stop_timeout: c.docker_stop_timeout,
            dependency_timeout: Duration::from_secs(300),
        }
    }
}

/// The Docker runtime.
pub struct DockerRuntime {
    docker: Docker,
    /// `<agent data dir>/docker`: per-environment files and port records.
    dir: PathBuf,
    link: Arc<Link>,
    settings: Settings,
    /// Serialises the steps that must not interleave between environments
    /// (choosing host ports, creating containers).
    lock: tokio::sync::Mutex<()>,
}

impl DockerRuntime {
    /// Connects to dockerd on `socket`; fails if it does not answer.
    pub async fn connect(
        socket: &str,
        data_dir: &Path,
        link: Arc<Link>,
        settings: Settings,
    ) -> Result<DockerRuntime, String> {
        let docker = connect(socket).await?;
        Ok(DockerRuntime {
            docker,
            dir: data_dir.join("docker"),
            link,
            settings,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The Docker client, for tests and the benchmark.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

/// A client for dockerd on `socket`, speaking the newest API version both
/// sides know: bollard's default, or the daemon's maximum when that is older
/// (Debian 12's Docker 20.10 speaks 1.41).
pub async fn connect(socket: &str) -> Result<Docker, String> {
    if !Path::new(socket).exists() {
        return Err(format!("no Docker socket at {socket}"));
    }
    let at = |v: &bollard::ClientVersion| {
        Docker::connect_with_socket(socket, API_TIMEOUT_SECS, v)
            .map_err(|e| format!("Docker at {socket}: {e}"))
    };
    let docker = at(bollard::API_DEFAULT_VERSION)?;
    let answer = tokio::time::timeout(PROBE_TIMEOUT, docker.version()).await;
    let message = match answer {
        Ok(Ok(_)) => return Ok(docker),
        Ok(Err(e)) => e.to_string(),
        Err(_) => return Err(format!("Docker did not answer on {socket} within 5s")),
    };
    // "client version 1.53 is too new. Maximum supported API version is 1.41"
    let max = message
        .split("Maximum supported API version is ")
        .nth(1)
        .and_then(|v| {
            let v = v.trim().trim_end_matches(|c: char| !c.is_ascii_digit());
            let (a, b) = v.split_once('.')?;
            Some(bollard::ClientVersion {
                major_version: a.parse().ok()?,
                minor_version: b.parse().ok()?,
            })
        });
    let Some(max) = max else {
        return Err(format!("Docker not answering on {socket}: {message}"));
    };
    let docker = at(&max)?;
    match tokio::time::timeout(PROBE_TIMEOUT, docker.version()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(format!("Docker not answering on {socket}: {e}")),
        Err(_) => Err(format!("Docker did not answer on {socket} within 5s")),
    }
}

/// A Docker API failure as a runtime error: dockerd gone is `Unavailable`.
pub(crate) fn api_error(what: &str, e: bollard::errors::Error) -> RuntimeError {
    use bollard::errors::Error as E;
    match &e {
        E::HyperResponseError { .. } | E::IOError { .. } | E::RequestTimeoutError => {
            RuntimeError::Unavailable(format!("{what}: Docker is not answering: {e}"))
        }
        _ => RuntimeError::Failed(format!("{what}: {}", docker_message(&e))),
    }
}

/// The daemon's own message, without bollard's wrapping.
pub(crate) fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Whether the error is dockerd's "no such …" (404).
pub(crate) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    async fn observe(&self, spec: &EnvSpec) -> Result<Observed, RuntimeError> {
        observe::observe(self, spec).await
    }

    async fn create(&self, spec: &EnvSpec, progress: &Progress) -> Result<(), RuntimeError> {
        lifecycle::converge(self, spec, progress).await
    }

    async fn start(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        lifecycle::converge(self, spec, &Progress::none()).await
    }

    async fn stop(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        lifecycle::stop(self, spec).await
    }

    async fn destroy(&self, env: &EnvId, keep_data: bool) -> Result<(), RuntimeError> {
        lifecycle::destroy(self, env, keep_data).await
    }

    async fn instances(&self) -> Result<Vec<EnvId>, RuntimeError> {
        lifecycle::instances(self).await
    }

    async fn counters(&self, spec: &EnvSpec) -> Result<Option<super::Counters>, RuntimeError> {
        lifecycle::counters(self, &spec.env_id).await
    }
}
