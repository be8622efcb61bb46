//! `agent.toml`: the agent's configuration, in its data directory or given with
//! `--config`. Every key is optional; unknown keys are refused with the file
//! and the key named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use metrom_protocol::duration::serde_str;
use metrom_protocol::messages::env::RuntimeKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Controller address (`HOST:PORT`), overriding the one recorded at join.
    pub controller: Option<String>,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// Docker Engine socket.
    pub docker_socket: String,
    /// Longest wait between reconnection attempts.
    #[serde(with = "serde_str")]
    pub max_backoff: Duration,
    /// Runtime kinds served by the built-in fake runtime instead of a real one
    /// ("kvm", "docker", "fake"): for tests and demos on machines without KVM or Docker.
    pub fake_runtimes: Vec<String>,
    /// How long the fake runtime takes to create an instance.
    #[serde(with = "serde_str")]
    pub fake_delay: Duration,
    /// An environment that is not Running this long after it was (re)started is reported Failed.
    #[serde(with = "serde_str")]
    pub provision_timeout: Duration,
    /// How often CPU and network activity per environment is measured and
    /// sent to the controller (for the idle policy).
    #[serde(with = "serde_str")]
    pub activity_interval: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            controller: None,
            libvirt_uri: "qemu:///system".into(),
            docker_socket: "/var/run/docker.sock".into(),
            max_backoff: Duration::from_secs(30),
            fake_runtimes: Vec::new(),
            fake_delay: Duration::from_millis(200),
            provision_timeout: Duration::from_secs(15 * 60),
            activity_interval: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Reads `path`, or the data directory's `agent.toml` if present, or defaults.
    pub fn load(path: Option<&Path>, data_dir: &Path) -> Result<AgentConfig, ConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => {
                let p = data_dir.join("agent.toml");
                if !p.exists() {
                    return Ok(AgentConfig::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let cfg: AgentConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        if cfg.activity_interval < Duration::from_millis(100) {
            return Err(ConfigError::Parse {
                path,
                message: "key 'activity_interval': must be at least 100ms".into(),
            });
        }
        for k in &cfg.fake_runtimes {
            if RuntimeKind::parse(k).is_none() {
                return Err(ConfigError::Parse {
                    path,
                    message: format!(
                        "key 'fake_runtimes': unknown runtime '{k}' (use kvm, docker or fake)"
                    ),
                });
            }
        }
        Ok(cfg)
    }

    /// The runtime kinds the fake serves.
    pub fn fake_kinds(&self) -> Vec<RuntimeKind> {
        self.fake_runtimes
            .iter()
            .filter_map(|k| RuntimeKind::parse(k))
            .collect()
    }
}
