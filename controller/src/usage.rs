//! Usage: the intervals an environment was Running, and stopped by a policy,
//! written to the `intervals` table as they open and again as they close; and
//! the report built from them (`metrom report usage`).
//!
//! A Running interval opens when the environment is observed Running and
//! closes when it is observed in any other state except Unknown (an
//! unreachable host keeps running what it ran). A policy-stopped interval
//! opens when a policy stops the environment and closes when anyone starts or
//! deletes it. Cost is running hours × the hourly price of its vCPUs, memory
//! and disk; savings are policy-stopped hours × the price of its vCPUs and
//! memory (a stopped environment keeps its disk).

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::api::{UsageReport, UsageRow};
use metrom_protocol::messages::env::{EnvState, Resources};
use tracing::warn;

use crate::policy::Pricing;
use crate::state::Controller;
use crate::store::{EnvRecord, IntervalKind, IntervalRecord, StoreError};

/// The observed state changed: open or close its Running interval.
pub fn state_changed(ctrl: &Controller, after: &EnvRecord, now: Timestamp) {
    let res = match &after.state {
        EnvState::Running => open(ctrl, after, IntervalKind::Running, now),
        EnvState::Unknown => Ok(()),
        _ => close(ctrl, &after.id, IntervalKind::Running, now),
    };
    if let Err(e) = res {
        warn!(env_id = %after.id, "usage interval not recorded: {}", crate::error_chain(&e));
    }
}

/// The desired state changed: open or close its policy-stopped interval.
pub fn desired_changed(ctrl: &Controller, after: &EnvRecord, now: Timestamp) {
    let res = if after.stopped_by_policy() {
        open(ctrl, after, IntervalKind::PolicyStopped, now)
    } else {
        close(ctrl, &after.id, IntervalKind::PolicyStopped, now)
    };
    if let Err(e) = res {
        warn!(env_id = %after.id, "usage interval not recorded: {}", crate::error_chain(&e));
    }
}

/// Builds the report over `[since, until]`; `owner` limits it to one user's environments.
pub fn report(
    ctrl: &Controller,
    since: Timestamp,
    until: Timestamp,
    owner: Option<&str>,
) -> Result<UsageReport, StoreError> {
    let intervals: Vec<IntervalRecord> = ctrl
        .store
        .intervals
        .list()?
        .into_iter()
        .map(|(_, i)| i)
        .filter(|i| owner.is_none_or(|o| i.owner == o))
        .collect();
    let deletions: Vec<(String, String, EnvId)> = ctrl
        .store
        .envs
        .list()?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| owner.is_none_or(|o| r.owner == o))
        .filter(|r| {
            r.policy
                .deleted_by_policy
                .is_some_and(|t| t >= since && t <= until)
        })
        .map(|r| (r.owner, r.template, r.id))
        .collect();
    Ok(compute(
        &intervals,
        &deletions,
        since,
        until,
        &ctrl.config.pricing,
    ))
}

/// The report from intervals and policy deletions. Pure.
pub fn compute(
    intervals: &[IntervalRecord],
    deletions: &[(String, String, EnvId)],
    since: Timestamp,
    until: Timestamp,
    pricing: &Pricing,
) -> UsageReport {
    #[derive(Default)]
    struct Acc {
        envs: BTreeSet<EnvId>,
        row: UsageRow,
    }
    let mut by_user: BTreeMap<String, Acc> = BTreeMap::new();
    let mut by_template: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    for i in intervals {
        let start = i.start.max(since);
        let end = i.end.unwrap_or(until).min(until);
        if end <= start {
            continue;
        }
        let hours = end.duration_since(start).as_secs_f64() / 3600.0;
        for acc in [
            by_user.entry(i.owner.clone()).or_default(),
            by_template.entry(i.template.clone()).or_default(),
            &mut total,
        ] {
            acc.envs.insert(i.env.clone());
            match i.kind {
                IntervalKind::Running => {
                    acc.row.running_hours += hours;
                    acc.row.cost += hours * hourly(&i.resources, pricing, true);
                }
                IntervalKind::PolicyStopped => {
                    acc.row.policy_stopped_hours += hours;
                    acc.row.savings += hours * hourly(&i.resources, pricing, false);
                }
            }
        }
    }
    for (owner, template, env) in deletions {
        for acc in [
            by_user.entry(owner.clone()).or_default(),
            by_template.entry(template.clone()).or_default(),
            &mut total,
        ] {
            acc.envs.insert(env.clone());
            acc.row.deleted_by_policy += 1;
        }
    }
    let finish = |key: String, acc: Acc| UsageRow {
        key,
        environments: acc.envs.len() as u32,
        running_hours: round(acc.row.running_hours),
        policy_stopped_hours: round(acc.row.policy_stopped_hours),
        cost: round(acc.row.cost),
        savings: round(acc.row.savings),
        ..acc.row
    };
    UsageReport {
        since,
        until,
        currency: if pricing.is_set() {
            pricing.currency.clone()
        } else {
            String::new()
        },
        by_user: by_user.into_iter().map(|(k, a)| finish(k, a)).collect(),
        by_template: by_template.into_iter().map(|(k, a)| finish(k, a)).collect(),
        total: finish("total".into(), total),
    }
}

/// What an hour of these resources costs (without the disk: what stopping saves).
pub fn hourly(r: &Resources, p: &Pricing, with_disk: bool) -> f64 {
    let mut v = r.vcpus as f64 * p.vcpu_hour + r.memory_mb as f64 / 1024.0 * p.memory_gib_hour;
    if with_disk {
        v += r.disk_gb as f64 * p.disk_gib_hour;
    }
    v
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn open(
    ctrl: &Controller,
    r: &EnvRecord,
    kind: IntervalKind,
    now: Timestamp,
) -> Result<(), StoreError> {
    if !open_keys(ctrl, &r.id, kind)?.is_empty() {
        return Ok(());
    }
    let key = format!(
        "{}/{:020}/{}",
        r.id,
        now.as_nanosecond().max(0),
        kind.as_str()
    );
    ctrl.store.intervals.put(
        &key,
        &IntervalRecord {
            env: r.id.clone(),
            owner: r.owner.clone(),
            template: r.template.clone(),
            resources: r.resources,
            kind,
            start: now,
            end: None,
        },
    )
}

fn close(
    ctrl: &Controller,
    env: &EnvId,
    kind: IntervalKind,
    now: Timestamp,
) -> Result<(), StoreError> {
    for key in open_keys(ctrl, env, kind)? {
        ctrl.store
            .intervals
            .update(&key, |i| -> Result<_, ()> {
                Ok(i.map(|mut i| {
                    if i.end.is_none() {
                        i.end = Some(now.max(i.start));
                    }
                    i
                }))
            })?
            .ok();
    }
    Ok(())
}

fn open_keys(
    ctrl: &Controller,
    env: &EnvId,
    kind: IntervalKind,
) -> Result<Vec<String>, StoreError> {
    Ok(ctrl
        .store
        .intervals
        .scan_prefix(&format!("{env}/"))?
        .into_iter()
        .filter(|(_, i)| i.kind == kind && i.end.is_none())
        .map(|(k, _)| k)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn interval(
        owner: &str,
        template: &str,
        kind: IntervalKind,
        start: &str,
        end: Option<&str>,
    ) -> IntervalRecord {
        IntervalRecord {
            env: EnvId::generate(),
            owner: owner.into(),
            template: template.into(),
            resources: Resources {
                vcpus: 2,
                memory_mb: 4096,
                disk_gb: 100,
            },
            kind,
            start: at(start),
            end: end.map(at),
        }
    }

    #[test]
    fn hours_are_clipped_to_the_period_and_priced() {
        let pricing = Pricing {
            currency: "EUR".into(),
            vcpu_hour: 0.5,
            memory_gib_hour: 0.25,
            disk_gib_hour: 0.01,
        };
        let mut stopped = interval(
            "alice",
            "web",
            IntervalKind::PolicyStopped,
            "2026-03-02T10:00:00Z",
            None,
        );
        let running = interval(
            "alice",
            "web",
            IntervalKind::Running,
            "2026-03-01T22:00:00Z",
            Some("2026-03-02T10:00:00Z"),
        );
        stopped.env = running.env.clone();
        let other = interval(
            "bob",
            "db",
            IntervalKind::Running,
            "2026-03-02T00:00:00Z",
            Some("2026-03-02T01:30:00Z"),
        );
        let r = compute(
            &[running, stopped, other],
            &[("bob".into(), "db".into(), EnvId::generate())],
            at("2026-03-02T00:00:00Z"),
            at("2026-03-02T12:00:00Z"),
            &pricing,
        );
        let alice = &r.by_user[0];
        assert_eq!(alice.key, "alice");
        assert_eq!(alice.environments, 1);
        // 22:00 → 10:00 clipped at midnight: 10 h; stopped 10:00 → 12:00: 2 h.
        assert_eq!(alice.running_hours, 10.0);
        assert_eq!(alice.policy_stopped_hours, 2.0);
        // 2 vCPU × 0.5 + 4 GiB × 0.25 + 100 GiB × 0.01 = 3.0 per hour running;
        // 2.0 per hour saved (the disk stays).
        assert_eq!(alice.cost, 30.0);
        assert_eq!(alice.savings, 4.0);
        let bob = &r.by_user[1];
        assert_eq!(
            (bob.running_hours, bob.deleted_by_policy, bob.environments),
            (1.5, 1, 2)
        );
        assert_eq!(r.total.running_hours, 11.5);
        assert_eq!(r.by_template.len(), 2);
        assert_eq!(r.currency, "EUR");
    }
}
