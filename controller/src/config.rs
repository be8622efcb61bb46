//! `controller.toml`: the controller's configuration. Every key is optional;
//! unknown keys are refused with the file and the key named. Command-line flags
//! override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use metrom_protocol::duration::serde_str;
use metrom_protocol::messages::env::SiteSettings;

use crate::policy::{Pricing, SitePolicies};
use crate::scheduler::SchedulerConfig;
use serde::{Deserialize, Serialize};

/// The controller's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP address of the QUIC endpoint (agents and the CLI).
    pub listen: SocketAddr,
    /// Address written into identity bundles and join commands (`HOST:PORT`).
    /// Defaults to the one given to `init`.
    pub advertise: Option<String>,
    /// TCP address of the HTTPS endpoint (the installer and agent binaries).
    pub https_listen: SocketAddr,
    /// `HOST:PORT` of the HTTPS endpoint written into join commands
    /// [default: the host of `advertise`, the port of `https_listen`].
    pub https_advertise: Option<String>,
    /// Folder of agent binaries to serve, named `metrom-agent-<arch>`
    /// [default: only `metrom-agent` beside `metrom-controller`].
    pub agent_binaries_dir: Option<PathBuf>,
    /// How often agents send a heartbeat.
    #[serde(with = "serde_str")]
    pub heartbeat_interval: Duration,
    /// A host without a heartbeat for this long is Unreachable.
    #[serde(with = "serde_str")]
    pub heartbeat_ttl: Duration,
    /// Validity of host certificates; agents renew when a third is left.
    #[serde(with = "serde_str")]
    pub host_cert_validity: Duration,
    /// Validity of user certificates.
    #[serde(with = "serde_str")]
    pub user_cert_validity: Duration,
    /// Largest message accepted on any stream, in bytes.
    pub max_frame_bytes: usize,
    /// Limit on each image transfer to an agent, in MiB/s (0: no limit).
    pub transfer_rate_mib: u64,
    /// Placement: strategy and overcommit ratios.
    pub scheduler: SchedulerConfig,
    /// Site-wide provisioning settings handed to agents (internal registry, package mirror).
    pub site: SiteSettings,
    /// How often the policy engine looks at every environment.
    #[serde(with = "serde_str")]
    pub policy_interval: Duration,
    /// Site default policies, caps, and what counts as activity.
    pub policies: SitePolicies,
    /// Prices per hour for the usage report.
    pub pricing: Pricing,
    /// The cloud broker: sync, retries, instance types and their prices.
    pub cloud: crate::cloud::CloudConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], metrom_protocol::DEFAULT_QUIC_PORT)),
            advertise: None,
            https_listen: SocketAddr::from(([0, 0, 0, 0], crate::http::DEFAULT_HTTPS_PORT)),
            https_advertise: None,
            agent_binaries_dir: None,
            heartbeat_interval: Duration::from_secs(5),
            heartbeat_ttl: Duration::from_secs(20),
            host_cert_validity: Duration::from_secs(365 * 86_400),
            user_cert_validity: Duration::from_secs(365 * 86_400),
            max_frame_bytes: metrom_protocol::codec::DEFAULT_MAX_FRAME,
            transfer_rate_mib: 0,
            scheduler: SchedulerConfig::default(),
            site: SiteSettings::default(),
            policy_interval: Duration::from_secs(15),
            policies: SitePolicies::default(),
            pricing: Pricing::default(),
            cloud: crate::cloud::CloudConfig::default(),
        }
    }
}

/// A configuration file that cannot be used.
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
    #[error("config file {path}: key '{key}': {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

impl Config {
    /// The config file `init` writes in a data directory.
    pub fn default_path(data_dir: &Path) -> PathBuf {
        data_dir.join("controller.toml")
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        // toml's message names the key and shows the line.
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if let Some(a) = &self.https_advertise {
            let port = a.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
            if !matches!(port, Some((h, Ok(_))) if !h.is_empty()) {
                return Err(invalid(
                    "https_advertise",
                    "write HOST:PORT, e.g. \"ctl.example.lan:7444\"",
                ));
            }
        }
        if self.heartbeat_interval.is_zero() {
            return Err(invalid("heartbeat_interval", "must be more than 0s"));
        }
        if self.heartbeat_ttl < self.heartbeat_interval * 2 {
            return Err(invalid(
                "heartbeat_ttl",
                "must be at least twice heartbeat_interval, or one lost packet marks a host Unreachable",
            ));
        }
        if self.host_cert_validity < Duration::from_secs(10) {
            return Err(invalid("host_cert_validity", "must be at least 10s"));
        }
        if self.max_frame_bytes < 64 * 1024 {
            return Err(invalid("max_frame_bytes", "must be at least 65536"));
        }
        self.scheduler
            .validate()
            .map_err(|m| invalid("scheduler", &m))?;
        if self.policy_interval < Duration::from_millis(100) {
            return Err(invalid("policy_interval", "must be at least 100ms"));
        }
        self.policies
            .validate()
            .map_err(|(key, m)| invalid(&key, &m))?;
        self.pricing
            .validate()
            .map_err(|(key, m)| invalid(&key, &m))?;
        self.cloud
            .validate()
            .map_err(|(key, m)| invalid(&key, &m))?;
        Ok(())
    }

    /// Re-validates after command-line overrides.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate(Path::new("<command line>"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_name_the_file_and_key() {
        let err = Config::parse(
            "listen = \"127.0.0.1:1\"\nheartbeat = \"1s\"\n",
            Path::new("/etc/m.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/m.toml"), "{err}");
        assert!(err.contains("heartbeat"), "{err}");
    }

    #[test]
    fn policies_and_pricing_are_read_and_checked() {
        let cfg = Config::parse(
            "policy_interval = \"5s\"\n[policies]\nttl = \"14d\"\nmax_ttl = \"30d\"\nidle = \"1h\"\n\
             [policies.schedule]\ntimezone = \"Asia/Seoul\"\ndays = [\"mon\"]\nhours = [\"09:00-18:00\"]\n\
             [pricing]\ncurrency = \"EUR\"\nvcpu_hour = 0.02\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(cfg.policy_interval, Duration::from_secs(5));
        assert_eq!(cfg.policies.ttl, Some(Duration::from_secs(14 * 86_400)));
        assert_eq!(cfg.pricing.currency, "EUR");
        // A site warning alone applies to the ttls templates and environments set.
        Config::parse("[policies]\nttl_warning = \"1d\"\n", Path::new("c.toml")).unwrap();
        for (text, want) in [
            (
                "[policies]\nttl = \"60d\"\nmax_ttl = \"30d\"\n",
                "key 'policies.ttl': 60d exceeds max_ttl (30d)",
            ),
            (
                "[policies]\nmax_ttel = \"30d\"\n",
                "unknown field `max_ttel`",
            ),
            (
                "[policies.schedule]\ntimezone = \"Mars/Base\"\ndays = [\"mon\"]\nhours = [\"09:00-18:00\"]\n",
                "unknown time zone 'Mars/Base'",
            ),
            ("[pricing]\nvcpu_hour = -1.0\n", "key 'pricing.vcpu_hour'"),
            ("policy_interval = \"10ms\"\n", "key 'policy_interval'"),
        ] {
            let err = Config::parse(text, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want) && err.contains("c.toml"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn https_keys_have_defaults_and_are_checked() {
        let cfg = Config::parse("", Path::new("c")).unwrap();
        assert_eq!(cfg.https_listen.to_string(), "0.0.0.0:7444");
        assert!(cfg.https_advertise.is_none() && cfg.agent_binaries_dir.is_none());
        let cfg = Config::parse(
            "https_listen = \"127.0.0.1:9444\"\nhttps_advertise = \"ctl.lan:443\"\nagent_binaries_dir = \"/srv/agents\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(cfg.https_listen.port(), 9444);
        assert_eq!(cfg.https_advertise.as_deref(), Some("ctl.lan:443"));
        assert_eq!(cfg.agent_binaries_dir, Some(PathBuf::from("/srv/agents")));
        let err = Config::parse("https_advertise = \"ctl.lan\"\n", Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 'https_advertise'"), "{err}");
    }

    #[test]
    fn durations_parse_and_are_checked() {
        let cfg = Config::parse(
            "heartbeat_interval = \"1s\"\nheartbeat_ttl = \"3s\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert_eq!(cfg.heartbeat_ttl, Duration::from_secs(3));
        let err = Config::parse(
            "heartbeat_interval = \"2s\"\nheartbeat_ttl = \"3s\"\n",
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("heartbeat_ttl"), "{err}");
    }
}
