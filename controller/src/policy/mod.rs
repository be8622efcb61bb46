//! Lifecycle policies: ttl (aging), schedule (working hours) and idle stop.
//!
//! - [`levels`]: the site, template and environment levels merged into an
//!   environment's effective policies, under the site caps.
//! - [`engine`]: the pure decision (environment, policies, activity, now) →
//!   action, reason and the next planned action.
//! - [`schedule`]: when working hours begin and end, across DST and holidays.
//! - [`activity`]: what agents report about CPU and network activity.
//! - [`task`]: the periodic task that applies decisions through desired
//!   state, as the API does.

pub mod activity;
pub mod config;
pub mod engine;
pub mod levels;
pub mod schedule;
pub mod task;

use std::time::Duration;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use metrom_protocol::duration::format_duration;
use metrom_protocol::messages::api::{EnvPolicyView, PolicyLine};

pub use config::{Pricing, SitePolicies};
use engine::{Action, Activity};

use crate::state::Controller;
use crate::store::EnvRecord;

/// The user name policy actions are recorded under (reserved).
pub const POLICY_USER: &str = "policy";

/// What the policies will do next, for `env show`: "stop at … (in 2h): …".
pub fn next_action(ctrl: &Controller, r: &EnvRecord, now: Timestamp) -> Option<String> {
    let activity = ctrl.activity.activity(&r.id, now);
    let d = engine::decide(r, &r.policy.spec, activity, now);
    let tz = zone(r);
    if d.action != Action::None {
        return Some(format!("{} now: {}", d.action.verb(), d.reason));
    }
    let n = d.next?;
    Some(format!(
        "{} at {} (in {}): {}",
        n.action.verb(),
        local_time(&tz, n.at),
        format_duration(Duration::from_secs(
            n.at.duration_since(now).as_secs().max(0) as u64
        )),
        n.reason
    ))
}

/// The policy part of `env show`.
pub fn env_view(ctrl: &Controller, r: &EnvRecord, now: Timestamp) -> EnvPolicyView {
    let spec = &r.policy.spec;
    let source = |k: &str| r.policy.sources.get(k).cloned().unwrap_or_default();
    let mut policies = Vec::new();
    if let Some(ttl) = spec.ttl {
        policies.push(PolicyLine {
            key: "ttl".into(),
            value: format_duration(ttl),
            source: source("ttl"),
        });
    }
    if let Some(w) = spec.ttl_warning {
        policies.push(PolicyLine {
            key: "ttl_warning".into(),
            value: format_duration(w),
            source: source("ttl_warning"),
        });
    }
    if let Some(idle) = spec.idle {
        policies.push(PolicyLine {
            key: "idle".into(),
            value: format_duration(idle),
            source: source("idle"),
        });
    }
    if let Some(s) = &spec.schedule {
        let mut shown: Vec<String> = s.holidays.iter().take(3).map(|d| d.to_string()).collect();
        if s.holidays.len() > 3 {
            shown.push(format!("and {} more", s.holidays.len() - 3));
        }
        let holidays = if shown.is_empty() {
            String::new()
        } else {
            format!(" except {}", shown.join(","))
        };
        policies.push(PolicyLine {
            key: "schedule".into(),
            value: format!("{}{holidays}", engine::schedule_text(s)),
            source: source("schedule"),
        });
    }
    let activity = match ctrl.activity.activity(&r.id, now) {
        // No agent runs in a cloud instance: nothing measures its activity.
        _ if r.runtime == metrom_protocol::messages::env::RuntimeKind::Cloud => {
            "not measured in the cloud: the idle policy does not apply (docs/cloud.md)".to_string()
        }
        Activity::Unreported => "no activity figures from its host".to_string(),
        Activity::IdleSince(t) => match ctrl.activity.last_active(&r.id) {
            Some(a) => format!(
                "last active {} ago",
                format_duration(Duration::from_secs(
                    now.duration_since(a).as_secs().max(0) as u64
                ))
            ),
            None => format!(
                "no activity since reports began {} ago",
                format_duration(Duration::from_secs(
                    now.duration_since(t).as_secs().max(0) as u64
                ))
            ),
        },
    };
    EnvPolicyView {
        name: r.name.clone(),
        policies,
        delete_at: engine::deadline(r, spec),
        extended_secs: r.policy.extended_secs,
        last_active: ctrl.activity.last_active(&r.id),
        activity,
        next_action: next_action(ctrl, r, now),
    }
}

/// The time zone an environment's times are shown in: its schedule's, or UTC.
pub(crate) fn zone(r: &EnvRecord) -> TimeZone {
    r.policy
        .spec
        .schedule
        .as_ref()
        .and_then(|s| s.time_zone().ok())
        .unwrap_or(TimeZone::UTC)
}

/// `2026-11-25 19:00:00 KST`.
pub fn local_time(tz: &TimeZone, at: Timestamp) -> String {
    at.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}
