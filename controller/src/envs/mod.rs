//! Environments on the controller: in-memory bookkeeping next to the store
//! (allocations per host, what each agent acknowledged), events, views, and the
//! reconciler that drives agents toward the desired state.

pub mod reconcile;
pub mod reports;
pub mod spec;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use jiff::Timestamp;
use metrom_protocol::ids::{EnvId, HostId};
use metrom_protocol::messages::api::{EnvView, EventView, PhaseView};
use metrom_protocol::messages::env::{EnvState, Resources};
use tokio::sync::Notify;

use crate::scheduler::{Capacity, HostSnapshot};
use crate::state::Controller;
use crate::store::{EnvRecord, EventRecord, StoreError};

/// Masked value of a secret parameter in views.
pub const SECRET_MASK: &str = "••••";

/// Bookkeeping that lives in memory and is rebuilt at start.
pub struct Envs {
    /// Held while placing: scheduling and recording the placement are one step.
    pub placing: tokio::sync::Mutex<()>,
    allocations: Mutex<HashMap<HostId, (Resources, u32)>>,
    /// Names in use → environment (not deleted). Derived from the records;
    /// kept here so a create checks and claims a name in one step.
    names: Mutex<HashMap<String, EnvId>>,
    /// The generation each agent has acknowledged per environment.
    acked: Mutex<HashMap<EnvId, u64>>,
    /// Commands on their way: (generation, when sent).
    inflight: Mutex<HashMap<EnvId, (u64, Instant)>>,
    /// Copies to delete from hosts where an environment no longer lives:
    /// (host, environment, generation of the delete).
    removals: Mutex<Vec<(HostId, EnvId, u64)>>,
    /// Wakes the reconciler.
    pub nudge: Notify,
}

impl Envs {
    /// Rebuilds allocations from the store.
    pub fn load(records: &[EnvRecord]) -> Envs {
        let mut allocations: HashMap<HostId, (Resources, u32)> = HashMap::new();
        let mut names = HashMap::new();
        for r in records {
            if r.desired != crate::store::Desired::Deleted {
                names.insert(r.name.clone(), r.id.clone());
            }
            if let (Some(h), true) = (&r.host, holds_resources(r)) {
                let a = allocations.entry(h.clone()).or_default();
                a.0 = add(a.0, r.resources);
                a.1 += 1;
            }
        }
        Envs {
            placing: tokio::sync::Mutex::new(()),
            allocations: Mutex::new(allocations),
            names: Mutex::new(names),
            acked: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            removals: Mutex::new(Vec::new()),
            nudge: Notify::new(),
        }
    }

    /// The environment that holds a name, if any.
    pub fn named(&self, name: &str) -> Option<EnvId> {
        self.names.lock().expect("names lock").get(name).cloned()
    }

    pub fn claim_name(&self, name: &str, env: &EnvId) {
        self.names
            .lock()
            .expect("names lock")
            .insert(name.to_string(), env.clone());
    }

    /// Frees a name if `env` still holds it.
    pub fn release_name(&self, name: &str, env: &EnvId) {
        let mut names = self.names.lock().expect("names lock");
        if names.get(name) == Some(env) {
            names.remove(name);
        }
    }

    /// Resources and environment count allocated on a host.
    pub fn allocation(&self, host: &HostId) -> (Resources, u32) {
        self.allocations
            .lock()
            .expect("allocations lock")
            .get(host)
            .copied()
            .unwrap_or_default()
    }

    pub fn allocate(&self, host: &HostId, r: Resources) {
        let mut map = self.allocations.lock().expect("allocations lock");
        let a = map.entry(host.clone()).or_default();
        a.0 = add(a.0, r);
        a.1 += 1;
    }

    pub fn release(&self, host: &HostId, r: Resources) {
        let mut map = self.allocations.lock().expect("allocations lock");
        if let Some(a) = map.get_mut(host) {
            a.0 = sub(a.0, r);
            a.1 = a.1.saturating_sub(1);
        }
    }

    pub fn acked(&self, env: &EnvId) -> u64 {
        self.acked
            .lock()
            .expect("acked lock")
            .get(env)
            .copied()
            .unwrap_or(0)
    }

    pub fn set_acked(&self, env: &EnvId, generation: u64) {
        self.acked
            .lock()
            .expect("acked lock")
            .insert(env.clone(), generation);
    }

    pub fn forget(&self, env: &EnvId) {
        self.acked.lock().expect("acked lock").remove(env);
        self.inflight.lock().expect("inflight lock").remove(env);
    }

    /// Marks a command as sent unless one for the same generation is already
    /// on its way (and not older than `stale_after`).
    pub fn begin_send(
        &self,
        env: &EnvId,
        generation: u64,
        stale_after: std::time::Duration,
    ) -> bool {
        let mut inflight = self.inflight.lock().expect("inflight lock");
        match inflight.get(env) {
            Some((g, at)) if *g == generation && at.elapsed() < stale_after => false,
            _ => {
                inflight.insert(env.clone(), (generation, Instant::now()));
                true
            }
        }
    }

    /// Queues the deletion of a stray copy of an environment on a host.
    pub fn queue_removal(&self, host: &HostId, env: &EnvId, generation: u64) {
        self.removals
            .lock()
            .expect("removals lock")
            .push((host.clone(), env.clone(), generation));
    }

    /// Takes the queued removals.
    pub fn take_removals(&self) -> Vec<(HostId, EnvId, u64)> {
        std::mem::take(&mut *self.removals.lock().expect("removals lock"))
    }

    pub fn end_send(&self, env: &EnvId) {
        self.inflight.lock().expect("inflight lock").remove(env);
    }
}

/// Whether an environment still holds resources on its host (until the agent confirms deletion).
pub fn holds_resources(r: &EnvRecord) -> bool {
    r.state != EnvState::Deleted
}

fn add(a: Resources, b: Resources) -> Resources {
    Resources {
        vcpus: a.vcpus + b.vcpus,
        memory_mb: a.memory_mb + b.memory_mb,
        disk_gb: a.disk_gb + b.disk_gb,
    }
}

fn sub(a: Resources, b: Resources) -> Resources {
    Resources {
        vcpus: a.vcpus.saturating_sub(b.vcpus),
        memory_mb: a.memory_mb.saturating_sub(b.memory_mb),
        disk_gb: a.disk_gb.saturating_sub(b.disk_gb),
    }
}

/// Every host as the scheduler sees it now.
pub fn host_snapshots(ctrl: &Controller) -> Result<Vec<HostSnapshot>, StoreError> {
    Ok(ctrl
        .store
        .hosts
        .list()?
        .into_iter()
        .map(|(_, h)| {
            let (allocated, _) = ctrl.envs.allocation(&h.id);
            HostSnapshot {
                ready: !h.revoked() && ctrl.sessions.is_connected(&h.id),
                cordoned: h.cordoned,
                labels: h.labels.clone(),
                runtimes: h.facts.runtimes.clone(),
                capacity: Capacity {
                    cpus: h.facts.cpus,
                    memory_mb: h.facts.memory_bytes / (1 << 20),
                    disk_gb: h.facts.storage.total_bytes / (1 << 30),
                },
                allocated,
                id: h.id,
            }
        })
        .collect())
}

/// Appends an event to an environment's history.
pub fn event(ctrl: &Controller, env: &EnvId, kind: &str, message: impl Into<String>) {
    let message = message.into();
    tracing::info!(env_id = %env, kind, "{message}");
    let seq = match ctrl.store.next_id() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("event not recorded: {}", crate::error_chain(&e));
            return;
        }
    };
    let key = format!("{env}/{seq:020}");
    let rec = EventRecord {
        at: Timestamp::now(),
        kind: kind.to_string(),
        message,
    };
    if let Err(e) = ctrl.store.events.put(&key, &rec) {
        tracing::warn!("event not recorded: {}", crate::error_chain(&e));
    }
}

/// The latest `limit` events of an environment, oldest first.
/// The `state` event of a change from `before` to the record's state:
/// `Provisioning → Running 12.3s after it was requested`, `Running → Stopped`.
pub fn state_event(ctrl: &Controller, after: &EnvRecord, before: &EnvState) {
    let took = match after.state {
        EnvState::Running => after
            .timings
            .requested_at
            .zip(after.timings.running_at)
            .map(|(a, b)| {
                format!(
                    " {:.1}s after it was requested",
                    b.duration_since(a).as_secs_f64()
                )
            })
            .unwrap_or_default(),
        _ => String::new(),
    };
    event(
        ctrl,
        &after.id,
        "state",
        format!("{} → {}{took}", before.name(), after.state),
    );
}

pub fn events(ctrl: &Controller, env: &EnvId, limit: usize) -> Result<Vec<EventView>, StoreError> {
    let all = ctrl.store.events.scan_prefix(&format!("{env}/"))?;
    let skip = all.len().saturating_sub(limit);
    Ok(all
        .into_iter()
        .skip(skip)
        .map(|(_, e)| EventView {
            at: e.at,
            kind: e.kind,
            message: e.message,
        })
        .collect())
}

/// The API's view of an environment.
pub fn view(ctrl: &Controller, r: &EnvRecord, events: Vec<EventView>) -> EnvView {
    // A cloud environment's place is `aws:ACCOUNT/REGION`.
    let host_name = match &r.cloud {
        Some(c) => Some(c.place()),
        None => r
            .host
            .as_ref()
            .and_then(|h| ctrl.store.hosts.get(h.as_str()).ok().flatten())
            .map(|h| h.name),
    };
    let params = r
        .params
        .iter()
        .map(|(k, v)| {
            let v = if r.secret_params.contains(k) {
                SECRET_MASK.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let reason = match &r.state {
        EnvState::Failed(reason) => Some(reason.clone()),
        EnvState::Unknown => Some(
            "its host is unreachable; the environment keeps running there if the host is up".into(),
        ),
        _ if !r.detail.message.is_empty() && r.state == EnvState::Provisioning => {
            Some(r.detail.message.clone())
        }
        _ => None,
    };
    EnvView {
        id: r.id.clone(),
        name: r.name.clone(),
        owner: r.owner.clone(),
        template: r.template.clone(),
        version: r.version.clone(),
        params,
        resources: r.resources,
        runtime: r.runtime.to_string(),
        host: r.host.clone(),
        host_name,
        desired: r.desired.as_str().to_string(),
        state: r.state.name().to_string(),
        reason,
        detail: r.detail.clone(),
        generation: r.generation,
        build: r.build,
        created_at: r.created_at,
        phases: phases(r),
        events,
        next_action: crate::policy::next_action(ctrl, r, Timestamp::now()),
    }
}

fn phases(r: &EnvRecord) -> Vec<PhaseView> {
    let t = &r.timings;
    let Some(start) = t.requested_at else {
        return Vec::new();
    };
    [
        ("requested", Some(start)),
        ("scheduled", t.scheduled_at),
        ("provisioning", t.provisioning_at),
        ("running", t.running_at),
    ]
    .into_iter()
    .filter_map(|(phase, at)| {
        at.map(|at| PhaseView {
            phase: phase.to_string(),
            at,
            after_secs: at.duration_since(start).as_secs_f64().max(0.0),
        })
    })
    .collect()
}

/// Finds an environment by name or id.
pub fn find(ctrl: &Controller, name_or_id: &str) -> Result<Option<EnvRecord>, StoreError> {
    if let Ok(id) = EnvId::parse(name_or_id)
        && let Some(r) = ctrl.store.envs.get(id.as_str())?
    {
        return Ok(Some(r));
    }
    match ctrl.envs.named(name_or_id) {
        Some(id) => ctrl.store.envs.get(id.as_str()),
        None => Ok(None),
    }
}
