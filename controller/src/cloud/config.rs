//! `[cloud]` in controller.toml: how often to sync, how hard to retry, and
//! the instance type table (sizes and prices).

use std::collections::BTreeMap;
use std::time::Duration;

use metrom_protocol::duration::serde_str;
use serde::{Deserialize, Serialize};

use super::provider::ProviderSettings;

/// `[cloud]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Every instance of every account is listed this often: drift is
    /// corrected, orphans and foreign instances show up.
    #[serde(with = "serde_str")]
    pub sync_interval: Duration,
    /// While environments change (launching, stopping, …), their instances
    /// are looked at this often.
    #[serde(with = "serde_str")]
    pub poll_interval: Duration,
    /// After a failed call for an environment, the next try waits this long.
    #[serde(with = "serde_str")]
    pub retry_interval: Duration,
    /// Attempts per provider call (throttling, 5xx, no answer), the first included.
    pub max_attempts: u32,
    /// First backoff between attempts; it doubles, with jitter, up to `max_backoff`.
    #[serde(with = "serde_str")]
    pub initial_backoff: Duration,
    #[serde(with = "serde_str")]
    pub max_backoff: Duration,
    /// Launches in flight at once per account.
    pub launch_concurrency: usize,
    /// Shown next to prices.
    pub currency: String,
    /// Instance types Metrom may choose from, with their prices; the
    /// smallest that fits a template's resources is chosen. Also prices
    /// other instances of these types in `cloud instances`.
    pub instance_types: Vec<InstanceType>,
}

/// One row of `[[cloud.instance_types]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceType {
    pub name: String,
    pub vcpus: u32,
    /// `4GiB`, `512MiB`.
    pub memory: String,
    /// Price per hour, in `currency`.
    #[serde(default)]
    pub hourly: f64,
}

impl InstanceType {
    pub fn memory_mb(&self) -> u64 {
        metrom_protocol::template::parse_size_mib(&self.memory).unwrap_or(0)
    }
}

impl Default for CloudConfig {
    fn default() -> Self {
        // On-demand Linux prices of us-east-1 (USD); set your own table for
        // other regions, currencies or negotiated prices.
        let t = |name: &str, vcpus, memory: &str, hourly| InstanceType {
            name: name.into(),
            vcpus,
            memory: memory.into(),
            hourly,
        };
        CloudConfig {
            sync_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
            retry_interval: Duration::from_secs(30),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(20),
            launch_concurrency: 8,
            currency: "USD".into(),
            instance_types: vec![
                t("t3.micro", 2, "1GiB", 0.0104),
                t("t3.small", 2, "2GiB", 0.0208),
                t("t3.medium", 2, "4GiB", 0.0416),
                t("t3.large", 2, "8GiB", 0.0832),
                t("t3.xlarge", 4, "16GiB", 0.1664),
                t("t3.2xlarge", 8, "32GiB", 0.3328),
                t("m5.4xlarge", 16, "64GiB", 0.768),
                t("m5.8xlarge", 32, "128GiB", 1.536),
                t("m5.16xlarge", 64, "256GiB", 3.072),
            ],
        }
    }
}

impl CloudConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("cloud.{k}"), m));
        if self.sync_interval < Duration::from_secs(1) {
            return bad("sync_interval", "must be at least 1s".into());
        }
        if self.poll_interval < Duration::from_millis(100) {
            return bad("poll_interval", "must be at least 100ms".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 20 {
            return bad("max_attempts", "must be 1 to 20".into());
        }
        if self.initial_backoff > self.max_backoff {
            return bad("initial_backoff", "must not exceed max_backoff".into());
        }
        if self.launch_concurrency == 0 {
            return bad("launch_concurrency", "must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, t) in self.instance_types.iter().enumerate() {
            let key = format!("instance_types[{i}]");
            if t.name.is_empty() || !seen.insert(t.name.clone()) {
                return bad(&key, format!("name '{}' is empty or listed twice", t.name));
            }
            if t.vcpus == 0 {
                return bad(&key, format!("{}: vcpus must be at least 1", t.name));
            }
            if let Err(e) = metrom_protocol::template::parse_size_mib(&t.memory) {
                return bad(&key, format!("{}: memory: {e}", t.name));
            }
            if !(t.hourly >= 0.0 && t.hourly.is_finite()) {
                return bad(&key, format!("{}: hourly must be 0 or more", t.name));
            }
        }
        Ok(())
    }

    /// What providers need of it.
    pub fn provider_settings(&self) -> ProviderSettings {
        ProviderSettings {
            prices: self.prices(),
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
        }
    }

    /// Instance type → price per hour.
    pub fn prices(&self) -> BTreeMap<String, f64> {
        self.instance_types
            .iter()
            .map(|t| (t.name.clone(), t.hourly))
            .collect()
    }
}
