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
    /// The internal container registry (`host[:port]`) for compose images that
    /// name none (Docker runtime). A template's `registry` wins over it; it
    /// wins over the controller's `[site] registry`.
    pub registry: Option<String>,
    /// Whether that registry speaks plain HTTP (dockerd must list it in its
    /// `insecure-registries`; loopback registries are insecure by default).
    pub registry_insecure: bool,
    /// Host ports published containers get, `FIRST-LAST` (Docker runtime).
    pub docker_port_range: PortRange,
    /// How long containers get to stop after SIGTERM before they are killed.
    #[serde(with = "serde_str")]
    pub docker_stop_timeout: Duration,
}

/// An inclusive range of ports, written `FIRST-LAST` (`"20000-29999"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn parse(s: &str) -> Result<PortRange, String> {
        let bad = || format!("port range '{s}': write FIRST-LAST, e.g. \"20000-29999\"");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(format!(
                "port range '{s}': FIRST must be at least 1 and not above LAST"
            ));
        }
        Ok(PortRange { first, last })
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PortRange, D::Error> {
        let s = String::deserialize(d)?;
        PortRange::parse(&s).map_err(serde::de::Error::custom)
    }
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
            registry: None,
            registry_insecure: false,
            docker_port_range: PortRange {
                first: 20000,
                last: 29999,
            },
            docker_stop_timeout: Duration::from_secs(10),
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

    /// Whether the fake serves `kind`.
    pub fn is_fake(&self, kind: RuntimeKind) -> bool {
        self.fake_kinds().contains(&kind)
    }

    /// The runtime kinds the fake serves.
    pub fn fake_kinds(&self) -> Vec<RuntimeKind> {
        self.fake_runtimes
            .iter()
            .filter_map(|k| RuntimeKind::parse(k))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_keys_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "registry = \"127.0.0.1:5000\"\nregistry_insecure = true\n\
             docker_port_range = \"31000-31009\"\ndocker_stop_timeout = \"3s\"\n",
        )
        .unwrap();
        let c = AgentConfig::load(Some(&path), dir.path()).unwrap();
        assert_eq!(c.registry.as_deref(), Some("127.0.0.1:5000"));
        assert!(c.registry_insecure);
        assert_eq!(
            c.docker_port_range,
            PortRange {
                first: 31000,
                last: 31009
            }
        );
        assert_eq!(c.docker_stop_timeout, Duration::from_secs(3));
        std::fs::write(&path, "docker_port_range = \"30000-20000\"\n").unwrap();
        let e = AgentConfig::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.toml") && e.contains("30000-20000"), "{e}");
        std::fs::write(&path, "docker_ports = \"1-2\"\n").unwrap();
        let e = AgentConfig::load(Some(&path), dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker_ports"), "{e}");
    }
}
