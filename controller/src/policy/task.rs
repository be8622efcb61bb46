//! The periodic task that drives the policy engine: every `policy_interval`
//! it asks the engine about every environment and applies what it decides
//! the way the API does — desired state changed with a new generation,
//! written, an event with the reason, an audit entry by "policy", then the
//! store flushed and the reconciler nudged.

use std::sync::Arc;

use jiff::Timestamp;
use metrom_protocol::messages::env::EnvState;
use tracing::{info, warn};

use super::engine::{self, Action, Decision};
use super::{POLICY_USER, local_time, zone};
use crate::state::Controller;
use crate::store::{Desired, EnvRecord, StoreError};
use crate::{audit, envs, usage};

/// At most this many actions per environment and pass (a warning and a stop
/// can be due together).
const ACTIONS_PER_PASS: usize = 3;

/// Runs the task forever.
pub async fn run(ctrl: Arc<Controller>) {
    let mut tick = tokio::time::interval(ctrl.config.policy_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = pass(&ctrl, Timestamp::now()).await {
            warn!("policy pass failed: {}", crate::error_chain(&e));
        }
    }
}

/// One pass over every environment at `now`; returns how many actions it took.
pub async fn pass(ctrl: &Controller, now: Timestamp) -> Result<usize, StoreError> {
    let mut acted = 0;
    for (_, mut env) in ctrl.store.envs.list()? {
        if env.desired == Desired::Deleted || env.state == EnvState::Deleted {
            continue;
        }
        for _ in 0..ACTIONS_PER_PASS {
            let activity = ctrl.activity.activity(&env.id, now);
            let d = engine::decide(&env, &env.policy.spec, activity, now);
            if d.action == Action::None {
                break;
            }
            match apply(ctrl, &env, &d, now)? {
                Some(updated) => {
                    acted += 1;
                    env = updated;
                }
                // Changed meanwhile by someone else: the next pass decides again.
                None => break,
            }
        }
    }
    if acted > 0 {
        ctrl.store.flush().await?;
        ctrl.envs.nudge.notify_one();
    }
    Ok(acted)
}

/// Applies one decision if the environment is still as the engine saw it.
fn apply(
    ctrl: &Controller,
    env: &EnvRecord,
    d: &Decision,
    now: Timestamp,
) -> Result<Option<EnvRecord>, StoreError> {
    let res = ctrl.store.envs.update(env.id.as_str(), |cur| {
        let Some(mut cur) = cur else { return Err(()) };
        if cur.generation != env.generation
            || cur.desired != env.desired
            || cur.policy != env.policy
        {
            return Err(());
        }
        match d.action {
            Action::Warn => cur.policy.warned_for = d.deadline,
            Action::Stop | Action::Start | Action::Delete => {
                cur.desired = match d.action {
                    Action::Stop => Desired::Stopped,
                    Action::Start => Desired::Running,
                    _ => Desired::Deleted,
                };
                cur.generation += 1;
                cur.policy.power_changed_at = Some(now);
                cur.policy.power_changed_by = Some(POLICY_USER.into());
                cur.policy.stopped_by_policy = (d.action == Action::Stop).then(|| d.reason.clone());
                if d.action == Action::Delete {
                    cur.keep_data = false;
                    cur.policy.deleted_by_policy = Some(now);
                }
            }
            Action::None => return Err(()),
        }
        Ok(Some(cur))
    })?;
    let Ok(Some(after)) = res else {
        return Ok(None);
    };
    match d.action {
        Action::Warn => {
            let at = d
                .deadline
                .map(|t| local_time(&zone(&after), t))
                .unwrap_or_default();
            envs::event(
                ctrl,
                &after.id,
                "ttl_warning",
                format!("will be deleted at {at}: {}", d.reason),
            );
        }
        action => {
            if action == Action::Delete {
                ctrl.envs.release_name(&after.name, &after.id);
                ctrl.activity.forget(&after.id);
            }
            let (kind, done) = match action {
                Action::Stop => ("policy_stop", "stopped"),
                Action::Start => ("policy_start", "started"),
                _ => ("policy_delete", "deleted"),
            };
            info!(env_id = %after.id, "{done} by policy: {}", d.reason);
            envs::event(
                ctrl,
                &after.id,
                kind,
                format!("{done} by policy: {}", d.reason),
            );
            usage::desired_changed(ctrl, &after, now);
            audit::record(
                ctrl,
                &audit::Entry {
                    user: POLICY_USER.into(),
                    role: "system".into(),
                    action: format!("policy {}", action.verb()),
                    target: after.name.clone(),
                    details: format!("owner {}", after.owner),
                },
                true,
                &d.reason,
            );
        }
    }
    Ok(Some(after))
}
