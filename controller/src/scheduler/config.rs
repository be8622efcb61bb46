//! `[scheduler]` settings: the scoring strategy and the overcommit ratios.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the scheduler chooses among the hosts that can take an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Prefer the host that ends up most utilised, so whole hosts stay idle
    /// (and can be powered down).
    #[default]
    Binpack,
    /// Prefer the host that ends up least utilised, so load is even.
    Spread,
}

/// The scheduler's configuration. Every key is optional.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    pub strategy: Strategy,
    /// vCPUs that may be promised per host CPU.
    pub cpu_overcommit: f64,
    /// Memory that may be promised per MiB of host memory.
    pub memory_overcommit: f64,
    /// Disk that may be promised per GiB of host disk.
    pub disk_overcommit: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            strategy: Strategy::Binpack,
            cpu_overcommit: 4.0,
            memory_overcommit: 1.0,
            disk_overcommit: 1.0,
        }
    }
}

impl SchedulerConfig {
    /// Checks the ratios: each must be finite and at least 1.0. The error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, ratio) in [
            ("cpu_overcommit", self.cpu_overcommit),
            ("memory_overcommit", self.memory_overcommit),
            ("disk_overcommit", self.disk_overcommit),
        ] {
            if !ratio.is_finite() || ratio < 1.0 {
                return Err(format!(
                    "{key}: must be a finite number of at least 1.0 (1.0 means no overcommit), got {ratio}"
                ));
            }
        }
        Ok(())
    }
}

impl Strategy {
    pub fn as_str(&self) -> &'static str {
        match self {
            Strategy::Binpack => "binpack",
            Strategy::Spread => "spread",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Strategy, String> {
        match s {
            "binpack" => Ok(Strategy::Binpack),
            "spread" => Ok(Strategy::Spread),
            other => Err(format!(
                "unknown strategy '{other}' (expected binpack or spread)"
            )),
        }
    }
}

/// The overcommit ratios in use, sanitised: a ratio that is not finite or is
/// below 1.0 (a config that skipped `validate`) counts as 1.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Ratios {
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
}

impl Ratios {
    pub fn from_config(config: &SchedulerConfig) -> Ratios {
        let sane = |r: f64| if r.is_finite() && r >= 1.0 { r } else { 1.0 };
        Ratios {
            cpu: sane(config.cpu_overcommit),
            memory: sane(config.memory_overcommit),
            disk: sane(config.disk_overcommit),
        }
    }
}

/// `floor(capacity × ratio)`: how much of a resource may be promised in all.
/// Saturates instead of overflowing.
pub(super) fn limit(capacity: u64, ratio: f64) -> u64 {
    // `as` from f64 saturates at u64::MAX; capacities up to 2^53 are exact.
    (capacity as f64 * ratio).floor() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_toml_keys() {
        let cfg: SchedulerConfig = toml::from_str("strategy = \"spread\"").unwrap();
        assert_eq!(cfg.strategy, Strategy::Spread);
        assert_eq!(cfg.cpu_overcommit, 4.0);
        assert_eq!(cfg.memory_overcommit, 1.0);
        let err = toml::from_str::<SchedulerConfig>("cpu_ratio = 2.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cpu_ratio"), "{err}");
        let err = toml::from_str::<SchedulerConfig>("strategy = \"random\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("random"), "{err}");
    }

    #[test]
    fn validate_names_the_key() {
        assert_eq!(SchedulerConfig::default().validate(), Ok(()));
        let bad = SchedulerConfig {
            memory_overcommit: 0.5,
            ..Default::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.starts_with("memory_overcommit:"), "{err}");
        assert!(err.contains("0.5"), "{err}");
        let bad = SchedulerConfig {
            disk_overcommit: f64::NAN,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("disk_overcommit:"));
        let bad = SchedulerConfig {
            cpu_overcommit: f64::INFINITY,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("cpu_overcommit:"));
    }

    #[test]
    fn limits_floor_and_saturate() {
        assert_eq!(limit(10, 1.0), 10);
        assert_eq!(limit(3, 1.5), 4);
        assert_eq!(limit(8, 4.0), 32);
        assert_eq!(limit(u64::MAX, 4.0), u64::MAX);
        let ratios = Ratios::from_config(&SchedulerConfig {
            cpu_overcommit: 0.5,
            memory_overcommit: f64::NAN,
            ..Default::default()
        });
        assert_eq!((ratios.cpu, ratios.memory, ratios.disk), (1.0, 1.0, 1.0));
    }
}
