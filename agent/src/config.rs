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
    /// kvm: the libvirt NAT network environments' VMs join (created when missing).
    pub kvm_network: String,
    /// kvm: that network's gateway address and prefix.
    pub kvm_subnet: String,
    /// kvm: the libvirt storage pool for overlays, data disks and seeds (created when missing).
    pub kvm_pool: String,
    /// kvm: the pool's folder [default: DATA_DIR/pool].
    pub kvm_pool_dir: Option<PathBuf>,
    /// kvm: `auto` (KVM only where a VM really boots with it), `kvm` or `tcg`.
    pub acceleration: String,
    /// kvm: how long an ACPI shutdown may take before the VM is powered off.
    #[serde(with = "serde_str")]
    pub kvm_stop_timeout: Duration,
    /// kvm: size of each environment's data disk (thin).
    pub kvm_data_disk: String,
    /// kvm: host ports for forwarding environments' exposed ports.
    pub kvm_port_range: PortRange,
    /// Size cap of the base image cache; least recently used unused images go first.
    pub image_cache_max: String,
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
    /// How often CPU and network activity per environment is measured and
    /// sent to the controller (for the idle policy).
    #[serde(with = "serde_str")]
    pub activity_interval: Duration,
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
            kvm_network: "metrom".into(),
            kvm_subnet: "192.168.213.1/24".into(),
            kvm_pool: "metrom".into(),
            kvm_pool_dir: None,
            acceleration: "auto".into(),
            kvm_stop_timeout: Duration::from_secs(60),
            kvm_data_disk: "10GiB".into(),
            kvm_port_range: PortRange {
                first: 30000,
                last: 32767,
            },
            image_cache_max: "50GiB".into(),
            registry: None,
            registry_insecure: false,
            docker_port_range: PortRange {
                first: 20000,
                last: 29999,
            },
            docker_stop_timeout: Duration::from_secs(10),
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
        if let Err(message) = cfg.kvm_settings(Path::new("/")) {
            return Err(ConfigError::Parse { path, message });
        }
        if cfg.activity_interval < Duration::from_millis(100) {
            return Err(ConfigError::Parse {
                path,
                message: "key 'activity_interval': must be at least 100ms".into(),
            });
        }
        for k in &cfg.fake_runtimes {
            if matches!(RuntimeKind::parse(k), None | Some(RuntimeKind::Cloud)) {
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

    /// The kvm runtime's settings; the error names the key.
    pub fn kvm_settings(
        &self,
        data_dir: &Path,
    ) -> Result<crate::runtime::kvm::KvmSettings, String> {
        use crate::runtime::kvm::{Accel, KvmSettings};
        let size = |key: &str, v: &str| {
            metrom_protocol::template::parse_size_mib(v)
                .map(|m| m << 20)
                .map_err(|e| format!("key '{key}': {e}"))
        };
        let (gw, prefix) = self
            .kvm_subnet
            .split_once('/')
            .and_then(|(g, p)| Some((g.parse::<std::net::Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
            .filter(|(_, p)| (8..=30).contains(p))
            .ok_or_else(|| {
                format!(
                    "key 'kvm_subnet': '{}' is not GATEWAY/PREFIX like 192.168.213.1/24",
                    self.kvm_subnet
                )
            })?;
        let bridge: String = format!("{}0", self.kvm_network).chars().take(15).collect();
        Ok(KvmSettings {
            uri: self.libvirt_uri.clone(),
            network: self.kvm_network.clone(),
            bridge,
            gateway: gw,
            prefix,
            pool: self.kvm_pool.clone(),
            pool_dir: self
                .kvm_pool_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("pool")),
            state_dir: data_dir.join("kvm"),
            image_dir: data_dir.join("images"),
            image_cache_max: size("image_cache_max", &self.image_cache_max)?,
            port_range: (self.kvm_port_range.first, self.kvm_port_range.last),
            stop_timeout: self.kvm_stop_timeout,
            acceleration: Accel::parse(&self.acceleration).ok_or_else(|| {
                format!(
                    "key 'acceleration': '{}' (use auto, kvm or tcg)",
                    self.acceleration
                )
            })?,
            data_disk_bytes: size("kvm_data_disk", &self.kvm_data_disk)?,
        })
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
