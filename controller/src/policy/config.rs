//! The site's level of the policies (`[policies]` in controller.toml): default
//! policies for every environment, the caps templates and environments cannot
//! exceed, and what counts as activity; and `[pricing]` for the usage report.

use std::time::Duration;

use metrom_protocol::duration::{format_duration, serde_opt_str, serde_str};
use metrom_protocol::template::{PolicySpec, ScheduleSpec};
use serde::{Deserialize, Serialize};

/// `[policies]` in controller.toml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SitePolicies {
    /// Default ttl of every environment whose template and flags set none.
    #[serde(with = "serde_opt_str")]
    pub ttl: Option<Duration>,
    #[serde(with = "serde_opt_str")]
    pub ttl_warning: Option<Duration>,
    /// Default idle stop.
    #[serde(with = "serde_opt_str")]
    pub idle: Option<Duration>,
    /// Default working hours.
    pub schedule: Option<ScheduleSpec>,
    /// Cap: no environment lives longer than this before extensions. When no
    /// level sets a ttl, this is the ttl.
    #[serde(with = "serde_opt_str")]
    pub max_ttl: Option<Duration>,
    /// Cap: the extensions of one environment add up to at most this.
    #[serde(with = "serde_str")]
    pub max_extension: Duration,
    /// Cap: no idle timeout longer than this. When no level sets one, this is the idle timeout.
    #[serde(with = "serde_opt_str")]
    pub max_idle: Option<Duration>,
    /// Floor: no idle timeout shorter than this.
    #[serde(with = "serde_opt_str")]
    pub min_idle: Option<Duration>,
    /// A reporting interval with more CPU than this (percent of one CPU) is activity.
    pub idle_cpu_percent: f32,
    /// A reporting interval with more network traffic than this (bytes per second) is activity.
    pub idle_net_bytes_per_sec: u64,
}

impl Default for SitePolicies {
    fn default() -> Self {
        SitePolicies {
            ttl: None,
            ttl_warning: None,
            idle: None,
            schedule: None,
            max_ttl: None,
            max_extension: Duration::from_secs(30 * 86_400),
            max_idle: None,
            min_idle: None,
            idle_cpu_percent: 5.0,
            idle_net_bytes_per_sec: 2048,
        }
    }
}

/// `[pricing]`: what an hour of each resource costs, for the usage report's
/// estimates. All zero (the default) means no prices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// Shown next to amounts ("EUR", "KRW", "$").
    pub currency: String,
    pub vcpu_hour: f64,
    pub memory_gib_hour: f64,
    pub disk_gib_hour: f64,
}

impl SitePolicies {
    /// The site's default policies as a spec.
    pub fn defaults(&self) -> PolicySpec {
        PolicySpec {
            ttl: self.ttl,
            ttl_warning: self.ttl_warning,
            idle: self.idle,
            schedule: self.schedule.clone(),
        }
    }

    /// Checks the section on its own: `(key, message)` of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // A site warning without a site ttl is the warning for the ttls
        // templates and environments set: fine here.
        let mut d = self.defaults();
        if d.ttl.is_none() {
            d.ttl_warning = None;
        }
        if self.ttl_warning.is_some_and(|w| w.is_zero()) {
            return Err((
                "policies.ttl_warning".into(),
                "must be longer than zero: remove it to turn the policy off".into(),
            ));
        }
        if let Err(e) = d.validate() {
            return Err((format!("policies.{}", e.key()), e.to_string()));
        }
        for (key, v) in [
            ("max_ttl", self.max_ttl),
            ("max_idle", self.max_idle),
            ("min_idle", self.min_idle),
        ] {
            if v.is_some_and(|v| v.is_zero()) {
                return Err((
                    format!("policies.{key}"),
                    "must be longer than zero: remove it for no cap".into(),
                ));
            }
        }
        if let (Some(ttl), Some(max)) = (self.ttl, self.max_ttl)
            && ttl > max
        {
            return Err((
                "policies.ttl".into(),
                format!(
                    "{} exceeds max_ttl ({})",
                    format_duration(ttl),
                    format_duration(max)
                ),
            ));
        }
        if let (Some(idle), Some(max)) = (self.idle, self.max_idle)
            && idle > max
        {
            return Err((
                "policies.idle".into(),
                format!(
                    "{} exceeds max_idle ({})",
                    format_duration(idle),
                    format_duration(max)
                ),
            ));
        }
        if let (Some(idle), Some(min)) = (self.idle, self.min_idle)
            && idle < min
        {
            return Err((
                "policies.idle".into(),
                format!(
                    "{} is shorter than min_idle ({})",
                    format_duration(idle),
                    format_duration(min)
                ),
            ));
        }
        if let (Some(min), Some(max)) = (self.min_idle, self.max_idle)
            && min > max
        {
            return Err((
                "policies.min_idle".into(),
                "must not exceed max_idle".into(),
            ));
        }
        if !(self.idle_cpu_percent >= 0.0 && self.idle_cpu_percent.is_finite()) {
            return Err((
                "policies.idle_cpu_percent".into(),
                "must be a number of at least 0".into(),
            ));
        }
        Ok(())
    }
}

impl Pricing {
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, v) in [
            ("vcpu_hour", self.vcpu_hour),
            ("memory_gib_hour", self.memory_gib_hour),
            ("disk_gib_hour", self.disk_gib_hour),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err((
                    format!("pricing.{key}"),
                    "must be a price of at least 0".into(),
                ));
            }
        }
        Ok(())
    }

    /// Whether any price is set.
    pub fn is_set(&self) -> bool {
        self.vcpu_hour > 0.0 || self.memory_gib_hour > 0.0 || self.disk_gib_hour > 0.0
    }
}
