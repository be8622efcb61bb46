//! What agents tell the controller about environments: the full list in Hello
//! (after either side restarted) and each change of state as it happens.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::agent::EnvActivity;
use metrom_protocol::messages::env::{EnvReport, EnvState};
use tracing::{info, warn};

use super::event;
use crate::state::Controller;
use crate::store::{Desired, EnvRecord};

/// An agent connected and listed the environments in its ledger.
pub fn host_connected(ctrl: &Arc<Controller>, host: &HostId, reports: Vec<EnvReport>) {
    let mut seen = HashSet::new();
    for report in reports {
        seen.insert(report.env_id.clone());
        match ctrl.store.envs.get(report.env_id.as_str()) {
            Ok(Some(r)) if r.host.as_ref() == Some(host) && r.state != EnvState::Deleted => {
                ctrl.envs
                    .set_acked(&r.id, report.generation.min(r.generation));
                apply(ctrl, host, &report);
            }
            Ok(other) => orphan(ctrl, host, &report, other),
            Err(e) => warn!("store: {}", crate::error_chain(&e)),
        }
    }
    // Environments placed here that the agent does not have: send them again,
    // or, if they were being deleted, they are gone.
    let placed = match ctrl.store.envs.list() {
        Ok(l) => l,
        Err(e) => return warn!("store: {}", crate::error_chain(&e)),
    };
    for (_, r) in placed {
        if r.host.as_ref() != Some(host) || r.state == EnvState::Deleted || seen.contains(&r.id) {
            continue;
        }
        if r.desired == Desired::Deleted {
            finish_delete(ctrl, &r);
        } else {
            ctrl.envs.set_acked(&r.id, 0);
        }
    }
    ctrl.envs.nudge.notify_one();
}

/// The host's session ended. Its environments become Unknown after the TTL
/// (the reconciler decides), not at once: a blip should not alarm anyone.
pub fn host_disconnected(ctrl: &Controller, _host: &HostId) {
    ctrl.envs.nudge.notify_one();
}

/// One environment's state changed on an agent.
pub fn env_report(ctrl: &Arc<Controller>, host: &HostId, report: EnvReport) {
    match ctrl.store.envs.get(report.env_id.as_str()) {
        Ok(Some(r)) if r.host.as_ref() == Some(host) => apply(ctrl, host, &report),
        Ok(_) => {} // an old copy elsewhere, being removed
        Err(e) => warn!("store: {}", crate::error_chain(&e)),
    }
}

/// Activity figures for the idle policy, kept if they are about an
/// environment placed on that host.
pub fn activity(ctrl: &Controller, host: &HostId, activity: Vec<EnvActivity>) {
    let now = Timestamp::now();
    let thresholds = crate::policy::activity::Thresholds {
        cpu_percent: ctrl.config.policies.idle_cpu_percent,
        net_bytes_per_sec: ctrl.config.policies.idle_net_bytes_per_sec,
    };
    for a in activity {
        match ctrl.store.envs.get(a.env_id.as_str()) {
            Ok(Some(r)) if r.host.as_ref() == Some(host) => {
                ctrl.activity.record(&a, now, thresholds)
            }
            Ok(_) => {}
            Err(e) => warn!("store: {}", crate::error_chain(&e)),
        }
    }
}

/// Records a report on the environment it is about.
fn apply(ctrl: &Controller, host: &HostId, report: &EnvReport) {
    let now = Timestamp::now();
    let before = ctrl.store.envs.get(report.env_id.as_str()).ok().flatten();
    let res = ctrl.store.envs.update(report.env_id.as_str(), |r| {
        let Some(mut r) = r else { return Err(()) };
        if r.host.as_ref() != Some(host) || r.state == EnvState::Deleted {
            return Err(());
        }
        if report.state == EnvState::Deleted && r.desired != Desired::Deleted {
            // A deletion the controller did not ask for at this generation
            // (an older order): the reconciler will recreate it.
            return Err(());
        }
        if r.state == report.state && r.detail == report.detail {
            return Err(());
        }
        r.state = report.state.clone();
        r.detail = report.detail.clone();
        if report.build == r.build {
            match report.state {
                EnvState::Provisioning if r.timings.provisioning_at.is_none() => {
                    r.timings.provisioning_at = Some(now)
                }
                EnvState::Running if r.timings.running_at.is_none() => {
                    r.timings.running_at = Some(now)
                }
                _ => {}
            }
        }
        if report.state == EnvState::Deleted {
            r.deleted_at = Some(now);
        }
        Ok(Some(r))
    });
    let Ok(Ok(Some(after))) = res else { return };
    let before_state = before.map(|b| b.state).unwrap_or(EnvState::Pending);
    if before_state == after.state {
        return;
    }
    crate::usage::state_changed(ctrl, &after, now);
    match &after.state {
        EnvState::Deleted => {
            if let Some(h) = &after.host {
                ctrl.envs.release(h, after.resources);
            }
            ctrl.envs.forget(&after.id);
            ctrl.activity.forget(&after.id);
            event(
                ctrl,
                &after.id,
                "deleted",
                format!("deleted on host {host}"),
            );
        }
        _ => super::state_event(ctrl, &after, &before_state),
    }
}

/// The environment was being deleted and the agent no longer has it.
fn finish_delete(ctrl: &Controller, r: &EnvRecord) {
    apply(
        ctrl,
        r.host.as_ref().expect("placed"),
        &EnvReport {
            env_id: r.id.clone(),
            generation: r.generation,
            build: r.build,
            state: EnvState::Deleted,
            detail: Default::default(),
        },
    );
}

/// An agent runs something the controller does not want there (deleted, or
/// rebuilt elsewhere, or never acknowledged before a controller crash):
/// tell it to delete it.
fn orphan(ctrl: &Arc<Controller>, host: &HostId, report: &EnvReport, record: Option<EnvRecord>) {
    if report.state == EnvState::Deleted {
        return;
    }
    let generation = report
        .generation
        .max(record.as_ref().map(|r| r.generation).unwrap_or(0))
        + 1;
    let why = match &record {
        None => "unknown to the controller".to_string(),
        Some(r) if r.state == EnvState::Deleted => "deleted".to_string(),
        Some(r) => format!(
            "now placed on {}",
            r.host
                .as_ref()
                .map(|h| h.to_string())
                .unwrap_or_else(|| "no host".into())
        ),
    };
    info!(host_id = %host, env_id = %report.env_id, "removing an orphan environment ({why})");
    ctrl.envs.queue_removal(host, &report.env_id, generation);
    ctrl.envs.nudge.notify_one();
}

/// Asks a host to delete its copy of an environment that now lives elsewhere.
pub fn remove_from(ctrl: &Controller, host: &HostId, r: &EnvRecord) {
    ctrl.envs.queue_removal(host, &r.id, r.generation);
    ctrl.envs.nudge.notify_one();
}
