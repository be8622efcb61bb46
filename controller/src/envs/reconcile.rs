//! The reconciler: takes no input. Each run re-reads every environment's
//! desired and observed state and the liveness of its host, decides (a pure
//! function), and acts; the next run is the retry. It runs every second and
//! whenever something changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use metrom_protocol::codec;
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::agent::{Command, CommandReply};
use metrom_protocol::messages::env::{EnvState, RuntimeKind};
use tracing::{debug, warn};

use super::{event, spec};
use crate::state::Controller;
use crate::store::{Desired, EnvRecord};

/// How long to wait for an agent's answer to a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// A command without an answer is sent again after this long.
const RESEND_AFTER: Duration = Duration::from_secs(30);

/// What the reconciler knows about the host of an environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostLink {
    Connected,
    /// Not connected; silent for this long (since it was last seen, or since
    /// the controller started, whichever is later).
    Silent(Duration),
    /// Revoked or no longer known: whatever ran there is gone for us.
    Gone,
}

/// What to do for one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Send the current spec (create / start / stop / rebuild).
    Apply,
    Delete,
    /// Record an observed state the agent cannot report itself.
    Mark(EnvState),
}

/// The decision. Pure: no clock, no I/O.
pub fn decide(env: &EnvRecord, link: Option<HostLink>, acked: u64, ttl: Duration) -> Action {
    if env.state == EnvState::Deleted {
        return Action::None;
    }
    let Some(link) = link else {
        // Never placed.
        return if env.desired == Desired::Deleted {
            Action::Mark(EnvState::Deleted)
        } else {
            Action::None
        };
    };
    match link {
        HostLink::Gone if env.desired == Desired::Deleted => Action::Mark(EnvState::Deleted),
        HostLink::Gone => {
            let failed = EnvState::Failed(
                "its host was revoked; recreate it on another host with `metrom env rebuild NAME --elsewhere`".into(),
            );
            if env.state == failed {
                Action::None
            } else {
                Action::Mark(failed)
            }
        }
        HostLink::Connected if acked < env.generation => {
            if env.desired == Desired::Deleted {
                Action::Delete
            } else {
                Action::Apply
            }
        }
        HostLink::Connected => Action::None,
        HostLink::Silent(for_) if for_ > ttl && env.state != EnvState::Unknown => {
            Action::Mark(EnvState::Unknown)
        }
        HostLink::Silent(_) => Action::None,
    }
}

/// Runs the reconciler forever.
pub async fn run(ctrl: Arc<Controller>) {
    loop {
        tokio::select! {
            _ = ctrl.envs.nudge.notified() => {
                // Whatever changed may concern a cloud environment too.
                ctrl.cloud.nudge.notify_one();
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if let Err(e) = pass(&ctrl) {
            warn!("reconcile pass failed: {}", crate::error_chain(&e));
        }
    }
}

/// One pass over every environment.
fn pass(ctrl: &Arc<Controller>) -> Result<(), crate::store::StoreError> {
    // Stray copies on hosts the environment left: best effort now; a host that
    // is away gets the deletion when its Hello lists the copy.
    for (host, env_id, generation) in ctrl.envs.take_removals() {
        let ctrl = ctrl.clone();
        tokio::spawn(async move {
            let cmd = Command::Delete {
                env_id,
                generation,
                keep_data: false,
            };
            if let Err(e) = exchange(&ctrl, &host, &cmd).await {
                debug!(host_id = %host, "stray copy not removed now ({e}); removed when the host reconnects");
            }
        });
    }
    let now = Timestamp::now();
    let started = ctrl.started_at;
    for (_, env) in ctrl.store.envs.list()? {
        if env.runtime == RuntimeKind::Cloud {
            // The cloud broker's (crate::cloud::reconcile).
            continue;
        }
        let link = match &env.host {
            None => None,
            Some(h) => Some(host_link(ctrl, h, now, started)?),
        };
        let action = decide(
            &env,
            link,
            ctrl.envs.acked(&env.id),
            ctrl.config.heartbeat_ttl,
        );
        match action {
            Action::None => {}
            Action::Mark(state) => mark(ctrl, &env, state),
            Action::Apply | Action::Delete => {
                let host = env.host.clone().expect("a connected host");
                if ctrl.envs.begin_send(&env.id, env.generation, RESEND_AFTER) {
                    let ctrl = ctrl.clone();
                    tokio::spawn(async move { send(ctrl, env, host).await });
                }
            }
        }
    }
    Ok(())
}

fn host_link(
    ctrl: &Controller,
    host: &HostId,
    now: Timestamp,
    started: Timestamp,
) -> Result<HostLink, crate::store::StoreError> {
    if ctrl.sessions.is_connected(host) {
        return Ok(HostLink::Connected);
    }
    Ok(match ctrl.store.hosts.get(host.as_str())? {
        None => HostLink::Gone,
        Some(h) if h.revoked() => HostLink::Gone,
        Some(h) => {
            let since = h.last_seen.map(|s| s.max(started)).unwrap_or(started);
            HostLink::Silent(now.duration_since(since).unsigned_abs())
        }
    })
}

/// Records a state the controller decided on its own.
fn mark(ctrl: &Controller, env: &EnvRecord, state: EnvState) {
    let res = ctrl.store.envs.update(env.id.as_str(), |r| match r {
        Some(mut r) if r.generation == env.generation && r.state != EnvState::Deleted => {
            r.state = state.clone();
            if state == EnvState::Deleted {
                r.deleted_at = Some(Timestamp::now());
            }
            Ok(Some(r))
        }
        _ => Err(()),
    });
    if let Ok(Ok(Some(r))) = res {
        crate::usage::state_changed(ctrl, &r, Timestamp::now());
        if state == EnvState::Deleted {
            if let Some(h) = &r.host {
                ctrl.envs.release(h, r.resources);
            }
            ctrl.envs.forget(&r.id);
            event(ctrl, &r.id, "deleted", "deleted (its host is gone)");
        } else {
            event(
                ctrl,
                &r.id,
                "state",
                format!("{} → {state}", env.state.name()),
            );
        }
    }
}

/// Sends the command for an environment's current generation and records the answer.
async fn send(ctrl: Arc<Controller>, env: EnvRecord, host: HostId) {
    let command = if env.desired == Desired::Deleted {
        Command::Delete {
            env_id: env.id.clone(),
            generation: env.generation,
            keep_data: env.keep_data,
        }
    } else {
        match spec::build(&ctrl, &env) {
            Ok(s) => Command::Apply(s),
            Err(e) => {
                warn!(env_id = %env.id, "cannot build the spec: {}", crate::error_chain(&e));
                mark(&ctrl, &env, EnvState::Failed(e.to_string()));
                return;
            }
        }
    };
    let started = Instant::now();
    let reply = exchange(&ctrl, &host, &command).await;
    match reply {
        Ok(CommandReply::Accepted { generation, .. }) => {
            debug!(env_id = %env.id, generation, "accepted in {:?}", started.elapsed());
            ctrl.envs.set_acked(&env.id, generation);
            ctrl.envs.end_send(&env.id);
            if env.desired != Desired::Deleted {
                let _ = ctrl.store.envs.update(env.id.as_str(), |r| match r {
                    Some(mut r) if r.timings.provisioning_at.is_none() && r.build == env.build => {
                        r.timings.provisioning_at = Some(Timestamp::now());
                        Ok(Some(r))
                    }
                    _ => Err(()),
                });
            }
        }
        Ok(CommandReply::Stale {
            current_generation, ..
        }) => {
            // The agent saw a newer generation than we have (we lost a write in
            // a crash): move past it and send again.
            warn!(env_id = %env.id, current_generation, "agent holds a newer generation; moving past it");
            let _ = ctrl.store.envs.update(env.id.as_str(), |r| match r {
                Some(mut r) if r.generation <= current_generation => {
                    r.generation = current_generation + 1;
                    Ok(Some(r))
                }
                _ => Err(()),
            });
            ctrl.envs.end_send(&env.id);
            ctrl.envs.nudge.notify_one();
        }
        Ok(CommandReply::Refused { reason }) => {
            event(
                &ctrl,
                &env.id,
                "refused",
                format!("host {host} refused: {reason}"),
            );
            mark(&ctrl, &env, EnvState::Failed(reason));
            // Leave it in flight: it is retried after RESEND_AFTER.
        }
        Err(e) => {
            debug!(env_id = %env.id, "command not delivered: {e}");
            // Retried after RESEND_AFTER, or at once when the host reconnects.
        }
    }
}

/// Sends one command to a host's agent and waits for its answer.
pub(crate) async fn exchange(
    ctrl: &Controller,
    host: &HostId,
    command: &Command,
) -> Result<CommandReply, String> {
    let conn = ctrl.sessions.connection(host).ok_or("host not connected")?;
    let max = ctrl.config.max_frame_bytes;
    let work = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        codec::write_message(&mut send, command, max)
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        codec::read_message::<CommandReply, _>(&mut recv, max)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the agent closed the command stream".to_string())
    };
    tokio::time::timeout(COMMAND_TIMEOUT, work)
        .await
        .map_err(|_| "no answer within 30s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(desired: Desired, state: EnvState, generation: u64) -> EnvRecord {
        EnvRecord {
            generation,
            ..EnvRecord::sample(desired, state)
        }
    }

    const TTL: Duration = Duration::from_secs(20);

    #[test]
    fn sends_until_acknowledged() {
        let e = env(Desired::Running, EnvState::Scheduled, 2);
        assert_eq!(decide(&e, Some(HostLink::Connected), 1, TTL), Action::Apply);
        assert_eq!(decide(&e, Some(HostLink::Connected), 2, TTL), Action::None);
        let d = env(Desired::Deleted, EnvState::Running, 3);
        assert_eq!(
            decide(&d, Some(HostLink::Connected), 2, TTL),
            Action::Delete
        );
    }

    #[test]
    fn silent_hosts_make_environments_unknown_only_after_the_ttl() {
        let e = env(Desired::Running, EnvState::Running, 1);
        assert_eq!(
            decide(&e, Some(HostLink::Silent(Duration::from_secs(5))), 1, TTL),
            Action::None
        );
        assert_eq!(
            decide(&e, Some(HostLink::Silent(Duration::from_secs(25))), 1, TTL),
            Action::Mark(EnvState::Unknown)
        );
        let u = env(Desired::Running, EnvState::Unknown, 1);
        assert_eq!(
            decide(&u, Some(HostLink::Silent(Duration::from_secs(25))), 1, TTL),
            Action::None
        );
    }

    #[test]
    fn gone_hosts_finish_deletions_and_fail_the_rest() {
        let d = env(Desired::Deleted, EnvState::Unknown, 3);
        assert_eq!(
            decide(&d, Some(HostLink::Gone), 0, TTL),
            Action::Mark(EnvState::Deleted)
        );
        let r = env(Desired::Running, EnvState::Running, 1);
        assert!(matches!(
            decide(&r, Some(HostLink::Gone), 1, TTL),
            Action::Mark(EnvState::Failed(_))
        ));
        let done = env(Desired::Deleted, EnvState::Deleted, 3);
        assert_eq!(
            decide(&done, Some(HostLink::Connected), 0, TTL),
            Action::None
        );
    }
}
