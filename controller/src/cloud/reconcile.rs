//! The cloud reconciler: takes no input. Each pass re-reads every cloud
//! environment, lists the instances of each account that has work (all of
//! them at every full sync), decides per environment (`decide.rs`, pure) and
//! acts; what failed is retried by a later pass. It runs every
//! `poll_interval` and whenever something changed; every `sync_interval`
//! the pass is a full sync of every account.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use metrom_protocol::messages::env::{EnvState, RuntimeKind};
use tracing::{debug, info, warn};

use super::decide::{self, Plan};
use super::provider::{CloudError, CloudProvider, Instance, ListScope, TAG_ENV};
use super::{CloudPlacement, launch};
use crate::envs::event;
use crate::state::Controller;
use crate::store::{CloudAccountRecord, Desired, EnvRecord, StoreError};

/// Runs the reconciler forever.
pub async fn run(ctrl: Arc<Controller>) {
    let config = &ctrl.config.cloud;
    loop {
        tokio::select! {
            _ = ctrl.cloud.nudge.notified() => {}
            _ = tokio::time::sleep(config.poll_interval) => {}
        }
        let full = ctrl.cloud.full_sync_due(config.sync_interval);
        if let Err(e) = pass(&ctrl, full).await {
            warn!("cloud pass failed: {}", crate::error_chain(&e));
        }
    }
}

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub accounts: usize,
    pub calls: usize,
}

/// One pass; `full` lists every instance of every account.
pub async fn pass(ctrl: &Controller, full: bool) -> Result<Summary, StoreError> {
    let _one_at_a_time = ctrl.cloud.pass_lock.lock().await;
    let now = Timestamp::now();
    let accounts = ctrl.store.cloud_accounts.values()?;
    let mut by_account: HashMap<String, Vec<EnvRecord>> = HashMap::new();
    for (_, env) in ctrl.store.envs.list()? {
        if env.runtime != RuntimeKind::Cloud || env.state == EnvState::Deleted {
            continue;
        }
        let Some(c) = &env.cloud else { continue };
        by_account.entry(c.account.clone()).or_default().push(env);
    }
    let mut summary = Summary::default();
    for a in &accounts {
        let envs = by_account.remove(&a.name).unwrap_or_default();
        let busy = envs.iter().any(|e| !decide::settled(e, now));
        if !full && !busy {
            continue;
        }
        summary.accounts += 1;
        summary.calls += account_pass(ctrl, a, envs, full, now).await;
    }
    // Environments whose account was removed behind our back (the API
    // refuses while any live there).
    for env in by_account.into_values().flatten() {
        let account = env.cloud.as_ref().map(|c| c.account.clone());
        let plan = Plan {
            mark: Some(if env.desired == Desired::Deleted {
                EnvState::Deleted
            } else {
                EnvState::Failed(format!(
                    "its cloud account {} no longer exists",
                    account.unwrap_or_default()
                ))
            }),
            ..Plan::default()
        };
        if env.state != plan.mark.clone().unwrap_or(EnvState::Pending) {
            record(ctrl, &env, &plan, Outcome::default(), None, now);
        }
    }
    if full {
        ctrl.cloud.full_sync_done();
    }
    ctrl.store.flush().await?;
    Ok(summary)
}

/// What the calls for one environment did.
#[derive(Debug, Default)]
struct Outcome {
    launched: Option<Instance>,
    error: Option<CloudError>,
    /// A call was made and none failed.
    ok: bool,
}

/// Lists one account and acts for its environments; returns the calls made.
async fn account_pass(
    ctrl: &Controller,
    account: &CloudAccountRecord,
    envs: Vec<EnvRecord>,
    full: bool,
    now: Timestamp,
) -> usize {
    let config = &ctrl.config.cloud;
    let controller = ctrl.cloud.controller_id.clone();
    let listed = async {
        let p = ctrl.cloud.provider(account, config).await?;
        let scope = if full {
            ListScope::All
        } else {
            ListScope::Controller(&controller)
        };
        let list = p.list(scope).await?;
        Ok::<_, CloudError>((p, list))
    }
    .await;
    let (provider, list) = match listed {
        Ok(x) => x,
        Err(e) => {
            warn!(account = %account.name, "{e}");
            ctrl.cloud
                .inventory
                .lock()
                .expect("inventory lock")
                .failed(&account.name, &e.message);
            for env in envs.iter().filter(|e| !decide::settled(e, now)) {
                not_reached(ctrl, env, &e, now);
            }
            return 1;
        }
    };
    let mut by_env: HashMap<String, Vec<Instance>> = HashMap::new();
    for i in list
        .iter()
        .filter(|i| i.tag(super::provider::TAG_CONTROLLER) == Some(controller.as_str()))
    {
        if let Some(e) = i.tag(TAG_ENV) {
            by_env.entry(e.to_string()).or_default().push(i.clone());
        }
    }
    ctrl.cloud.inventory.lock().expect("inventory lock").record(
        &account.name,
        &controller,
        full,
        list,
    );

    let work: Vec<(EnvRecord, Vec<Instance>, Plan)> = envs
        .into_iter()
        .map(|env| {
            let mine = by_env.remove(env.id.as_str()).unwrap_or_default();
            let refs: Vec<&Instance> = mine.iter().collect();
            let plan = decide::decide(&env, &refs, now);
            (env, mine, plan)
        })
        .filter(|(_, _, plan)| plan != &Plan::default())
        .collect();
    let calls = work.iter().filter(|(_, _, p)| p.calls()).count();
    futures::stream::iter(work)
        .for_each_concurrent(config.launch_concurrency, |(env, mine, plan)| {
            let provider = provider.clone();
            async move {
                let outcome = act(ctrl, provider.as_ref(), account, &env, &plan).await;
                let recorded = env.cloud.as_ref().and_then(|c| c.instance_id.clone());
                let current = plan.adopt.clone().or(recorded);
                let current = mine.into_iter().find(|i| Some(&i.id) == current.as_ref());
                record(ctrl, &env, &plan, outcome, current, now);
            }
        })
        .await;
    calls
}

/// Makes the plan's calls, in a safe order: terminate, stop, start, launch.
async fn act(
    ctrl: &Controller,
    provider: &dyn CloudProvider,
    account: &CloudAccountRecord,
    env: &EnvRecord,
    plan: &Plan,
) -> Outcome {
    let mut out = Outcome::default();
    if !plan.calls() {
        return out;
    }
    let steps: [(&str, &Vec<String>); 3] = [
        ("terminate", &plan.terminate),
        ("stop", &plan.stop),
        ("start", &plan.start),
    ];
    for (verb, ids) in steps {
        if ids.is_empty() {
            continue;
        }
        let res = match verb {
            "terminate" => provider.terminate(ids).await,
            "stop" => provider.stop(ids).await,
            _ => provider.start(ids).await,
        };
        match res {
            Ok(()) => {
                info!(env_id = %env.id, "{verb} {}", ids.join(", "));
                event(ctrl, &env.id, "cloud", format!("{verb} {}", ids.join(", ")));
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    if plan.launch {
        let Some(placement) = &env.cloud else {
            return out;
        };
        let spec = match launch::spec(ctrl, env, placement, account) {
            Ok(s) => s,
            Err(e) => {
                // Nothing was sent; retrying will not help until the
                // environment changes.
                out.error = Some(CloudError::new(
                    super::CloudErrorKind::Refused,
                    format!("cannot launch {}: {}", env.name, crate::error_chain(&e)),
                ));
                return out;
            }
        };
        // Recorded before the call: an instance may exist from here on.
        mark_launch_sent(ctrl, env);
        debug!(env_id = %env.id, token = %spec.client_token, "launching");
        match provider.launch(&spec).await {
            Ok(i) => {
                event(
                    ctrl,
                    &env.id,
                    "launched",
                    format!(
                        "launched {} ({}, {}) in {}",
                        i.id,
                        placement.instance_type,
                        placement.image,
                        placement.place()
                    ),
                );
                out.launched = Some(i);
            }
            Err(e) => {
                out.error = Some(e);
                return out;
            }
        }
    }
    out.ok = true;
    out
}

fn mark_launch_sent(ctrl: &Controller, env: &EnvRecord) {
    let _ = ctrl.store.envs.update(env.id.as_str(), |r| match r {
        Some(mut r) if r.build == env.build => match r.cloud.as_mut() {
            Some(c) if !c.launch_sent => {
                c.launch_sent = true;
                Ok(Some(r))
            }
            _ => Err(()),
        },
        _ => Err(()),
    });
}

/// The account could not be listed: environments waiting for a launch fail
/// with the reason (and are retried later); a deletion that never sent a
/// launch is done, since nothing can exist.
fn not_reached(ctrl: &Controller, env: &EnvRecord, e: &CloudError, now: Timestamp) {
    let sent = env
        .cloud
        .as_ref()
        .is_some_and(|c| c.launch_sent || c.instance_id.is_some());
    if env.desired == Desired::Deleted && !sent {
        let plan = Plan {
            mark: Some(EnvState::Deleted),
            ..Plan::default()
        };
        return record(ctrl, env, &plan, Outcome::default(), None, now);
    }
    let outcome = Outcome {
        error: Some(e.clone()),
        ..Outcome::default()
    };
    record(ctrl, env, &Plan::default(), outcome, None, now);
}

/// Writes what a pass learnt and did to the environment (one compare-and-swap
/// on the record: skipped if the environment changed meanwhile; the next pass
/// decides again), then the events.
fn record(
    ctrl: &Controller,
    env: &EnvRecord,
    plan: &Plan,
    outcome: Outcome,
    current: Option<Instance>,
    now: Timestamp,
) {
    let retry = SignedDuration::try_from(ctrl.config.cloud.retry_interval)
        .unwrap_or(SignedDuration::from_secs(30));
    let mut first_failure = false;
    let res = ctrl.store.envs.update(env.id.as_str(), |cur| {
        let Some(mut r) = cur else { return Err(()) };
        if r.generation != env.generation || r.build != env.build || r.state == EnvState::Deleted {
            return Err(());
        }
        let build = r.build;
        let Some(c) = r.cloud.as_mut() else {
            return Err(());
        };
        let mut state = plan.mark.clone();
        if let Some(id) = &plan.adopt {
            c.instance_id = Some(id.clone());
            c.instance_build = build;
        }
        if let Some(i) = &outcome.launched {
            c.instance_id = Some(i.id.clone());
            c.instance_build = build;
            c.launch_sent = true;
            state = Some(if i.state == super::provider::InstanceState::Running {
                EnvState::Running
            } else {
                EnvState::Provisioning
            });
        }
        match &outcome.error {
            Some(e) => {
                first_failure = c.retry_at.is_none();
                c.retry_at = Some(now + retry);
                let launching = matches!(
                    r.state,
                    EnvState::Pending | EnvState::Scheduled | EnvState::Failed(_)
                ) || c.instance_id.is_none();
                if launching && r.desired != Desired::Deleted {
                    state = Some(EnvState::Failed(e.message.clone()));
                }
            }
            None if outcome.ok || plan.mark.is_some() => c.retry_at = None,
            None => {}
        }
        let c_id = c.instance_id.clone();
        let c_type = c.instance_type.clone();
        if let Some(i) = outcome.launched.as_ref().or(current.as_ref()) {
            let addresses: Vec<String> = [&i.private_ip, &i.public_ip]
                .into_iter()
                .flatten()
                .cloned()
                .collect();
            c.addresses = addresses.clone();
            r.detail.addresses = addresses;
        }
        r.detail.runtime = "cloud".into();
        if let Some(id) = c_id {
            r.detail.instance = format!("{id} ({c_type})");
        }
        if let Some(s) = state {
            match s {
                EnvState::Provisioning if r.timings.provisioning_at.is_none() => {
                    r.timings.provisioning_at = Some(now)
                }
                EnvState::Running => {
                    r.timings.provisioning_at.get_or_insert(now);
                    r.timings.running_at.get_or_insert(now);
                }
                EnvState::Deleted => r.deleted_at = Some(now),
                _ => {}
            }
            r.state = s;
        }
        Ok(Some(r))
    });
    let Ok(Ok(Some(after))) = res else { return };
    for (kind, message) in &plan.events {
        event(ctrl, &after.id, kind, message.clone());
    }
    if let Some(e) = &outcome.error
        && (first_failure || after.state != env.state)
    {
        event(ctrl, &after.id, "cloud_error", e.message.clone());
    }
    if after.state == env.state {
        return;
    }
    crate::usage::state_changed(ctrl, &after, now);
    match &after.state {
        EnvState::Deleted => {
            ctrl.envs.forget(&after.id);
            event(
                ctrl,
                &after.id,
                "deleted",
                format!("deleted (its instance in {} is terminated)", place(&after)),
            );
        }
        _ => crate::envs::state_event(ctrl, &after, &env.state),
    }
}

fn place(r: &EnvRecord) -> String {
    r.cloud
        .as_ref()
        .map(CloudPlacement::place)
        .unwrap_or_default()
}
