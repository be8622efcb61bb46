//! env create / list / show / start / stop / rebuild / delete / events /
//! extend / policies.
//!
//! Every change is written durably before the answer; the reconciler then
//! drives the agent. Placement, the quota check and the record happen under
//! one lock, so two concurrent creates never over-commit a host or a quota.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use metrom_protocol::duration::format_duration;
use metrom_protocol::ids::{EnvId, HostId};
use metrom_protocol::messages::api::{
    ApiError, ApiResponse, EnvCreate, ErrorKind, PolicyOverrides, Reply,
};
use metrom_protocol::messages::env::{EnvState, ImageRef, RuntimeKind};
use metrom_protocol::template::{self, RuntimePref, Template};

use super::templates::{load, resolve};
use super::{Caller, durable, store_err};
use crate::envs::{self, event, find, host_snapshots, view};
use crate::policy::levels;
use crate::quota;
use crate::scheduler::{self, Placement, Request};
use crate::state::Controller;
use crate::store::{Desired, EnvPolicy, EnvRecord, Role, Timings};

/// How many events `env show` includes.
const SHOW_EVENTS: usize = 15;

pub(super) async fn create(
    ctrl: &Controller,
    caller: &Caller,
    req: EnvCreate,
    policies: PolicyOverrides,
) -> ApiResponse {
    check_name(&req.name)?;
    let overrides =
        levels::parse_overrides(&policies).map_err(|e| ApiError::invalid(e.to_string()))?;
    for (k, v) in &req.labels {
        super::tokens::check_label(k, v)?;
    }
    let (rec, meta) = resolve(ctrl, &req.template, req.version.as_deref())?;
    let t = load(ctrl, &rec.name, &meta.version)?;
    let params = template::resolve_params(&t.manifest, &req.params)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let runtimes = on_prem_runtimes(&t);
    let site = &ctrl.config.policies;
    let effective = levels::effective(site, &t.manifest.policies, &overrides)
        .map_err(|e| ApiError::invalid(format!("environment {}: {e}", req.name)))?;
    if let Some(h) = &req.host
        && !ctrl.store.hosts.contains(h.as_str()).map_err(store_err)?
    {
        return Err(ApiError::not_found(format!(
            "no host {h}; see `metrom host list`"
        )));
    }
    let now = Timestamp::now();
    let id = EnvId::generate();
    let record = {
        let _placing = ctrl.envs.placing.lock().await;
        if let Some(other) = ctrl.envs.named(&req.name) {
            let owner = ctrl
                .store
                .envs
                .get(other.as_str())
                .ok()
                .flatten()
                .map(|r| r.owner)
                .unwrap_or_default();
            return Err(ApiError::conflict(format!(
                "environment {} already exists (owner {owner}); choose another name",
                req.name
            )));
        }
        quota::check(
            ctrl,
            &caller.name,
            quota::Ask {
                envs: 1,
                resources: t.manifest.resources,
            },
            None,
        )?;
        let request = Request {
            resources: t.manifest.resources,
            runtimes: runtimes.clone(),
            labels: req.labels.clone(),
            host: req.host.clone(),
            exclude: vec![],
        };
        let target = place_any(ctrl, &t, &request, None, &req.name)?;
        let (runtime, host, cloud) = target.parts();
        let record = EnvRecord {
            id: id.clone(),
            name: req.name.clone(),
            owner: caller.name.clone(),
            template: rec.name.clone(),
            version: meta.version.clone(),
            secret_params: secret_params(&t),
            params,
            resources: t.manifest.resources,
            runtime,
            host: host.clone(),
            pin_host: req.host.clone(),
            labels: req.labels.clone(),
            image: image_ref(ctrl, &t, runtime)?,
            desired: Desired::Running,
            keep_data: false,
            generation: 1,
            build: 1,
            state: EnvState::Scheduled,
            detail: Default::default(),
            created_at: now,
            timings: Timings {
                requested_at: Some(now),
                scheduled_at: Some(Timestamp::now()),
                ..Default::default()
            },
            deleted_at: None,
            policy: EnvPolicy {
                spec: effective.spec.clone(),
                sources: effective.sources.clone(),
                power_changed_at: Some(now),
                power_changed_by: Some(caller.name.clone()),
                ..Default::default()
            },
            cloud,
        };
        insert(ctrl, &record)?;
        if let Some(h) = &host {
            ctrl.envs.allocate(h, record.resources);
        }
        (record, target.why())
    };
    let (record, why) = record;
    event(
        ctrl,
        &id,
        "created",
        format!(
            "created by {} from {}@{}",
            caller.name,
            rec.name,
            short(&meta.version)
        ),
    );
    event(ctrl, &id, "scheduled", scheduled_text(ctrl, &record, why));
    durable(ctrl).await?;
    ctrl.envs.nudge.notify_one();
    Ok(Reply::Env(view(ctrl, &record, vec![])))
}

pub(super) fn list(ctrl: &Controller, caller: &Caller, all: bool) -> ApiResponse {
    let mut out: Vec<_> = ctrl
        .store
        .envs
        .list()
        .map_err(store_err)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| visible(caller, r) && (all || r.state != EnvState::Deleted))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.created_at.cmp(&b.created_at)));
    Ok(Reply::Envs(
        out.iter().map(|r| view(ctrl, r, vec![])).collect(),
    ))
}

pub(super) fn show(ctrl: &Controller, caller: &Caller, name: &str) -> ApiResponse {
    let r = get_visible(ctrl, caller, name)?;
    let events = envs::events(ctrl, &r.id, SHOW_EVENTS).map_err(store_err)?;
    Ok(Reply::Env(view(ctrl, &r, events)))
}

pub(super) fn events(ctrl: &Controller, caller: &Caller, name: &str, limit: u32) -> ApiResponse {
    let r = get_visible(ctrl, caller, name)?;
    let limit = if limit == 0 {
        usize::MAX
    } else {
        limit as usize
    };
    Ok(Reply::Events(
        envs::events(ctrl, &r.id, limit).map_err(store_err)?,
    ))
}

pub(super) async fn power(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    running: bool,
) -> ApiResponse {
    let r = get_changeable(ctrl, caller, name)?;
    let want = if running {
        Desired::Running
    } else {
        Desired::Stopped
    };
    if r.desired == want {
        return Ok(Reply::Env(view(ctrl, &r, vec![])));
    }
    let now = Timestamp::now();
    let updated = update(ctrl, &r, |r| {
        r.desired = want;
        r.generation += 1;
        r.policy.power_changed_at = Some(now);
        r.policy.power_changed_by = Some(caller.name.clone());
        r.policy.stopped_by_policy = None;
        retry_now(r);
    })?;
    crate::usage::desired_changed(ctrl, &updated, now);
    let verb = if running { "start" } else { "stop" };
    event(
        ctrl,
        &r.id,
        verb,
        format!("{verb} requested by {}", caller.name),
    );
    durable(ctrl).await?;
    ctrl.envs.nudge.notify_one();
    Ok(Reply::Env(view(ctrl, &updated, vec![])))
}

pub(super) async fn rebuild(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    version: Option<&str>,
    elsewhere: bool,
) -> ApiResponse {
    let r = get_changeable(ctrl, caller, name)?;
    let (rec, meta) = resolve(ctrl, &r.template, version)?;
    let t = load(ctrl, &rec.name, &meta.version)?;
    // Keep the parameters the new version still declares; fill in its new defaults.
    let given: BTreeMap<String, String> = r
        .params
        .iter()
        .filter(|(k, _)| t.manifest.params.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let params = template::resolve_params(&t.manifest, &given)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let runtimes = on_prem_runtimes(&t);
    if elsewhere && r.runtime == RuntimeKind::Cloud {
        return Err(ApiError::precondition(format!(
            "environment {name} runs in the cloud, not on a host: rebuild it without --elsewhere"
        )));
    }
    let old_host = r.host.clone();
    let now = Timestamp::now();
    let updated = {
        let _placing = ctrl.envs.placing.lock().await;
        let current = ctrl
            .store
            .envs
            .get(r.id.as_str())
            .map_err(store_err)?
            .unwrap_or(r.clone());
        let request = Request {
            resources: t.manifest.resources,
            runtimes: if elsewhere {
                runtimes
            } else {
                vec![current.runtime]
            },
            labels: current.labels.clone(),
            host: if elsewhere {
                current
                    .pin_host
                    .clone()
                    .filter(|p| Some(p) != old_host.as_ref())
            } else {
                old_host.clone()
            },
            exclude: if elsewhere {
                old_host.iter().cloned().collect()
            } else {
                vec![]
            },
        };
        quota::check(
            ctrl,
            &current.owner,
            quota::Ask {
                envs: 1,
                resources: t.manifest.resources,
            },
            Some(&current.id),
        )?;
        // In place, the environment's own allocation is freed first.
        let own = if elsewhere {
            None
        } else {
            old_host.clone().map(|h| (h, current.resources))
        };
        let target = if current.runtime == RuntimeKind::Cloud {
            // In place: the same account if it still maps the image.
            let prefer = current.cloud.as_ref().map(|c| c.account.as_str());
            Target::Cloud(cloud_place(ctrl, &t, prefer, &current.name)?, None)
        } else if elsewhere {
            place_any(ctrl, &t, &request, own, &current.name)?
        } else {
            Target::Host(place(ctrl, &request, own, &current.name)?)
        };
        let (runtime, host, cloud) = target.parts();
        let image = image_ref(ctrl, &t, runtime)?;
        let updated = update(ctrl, &current, |r| {
            r.version = meta.version.clone();
            r.params = params.clone();
            r.secret_params = secret_params(&t);
            r.resources = t.manifest.resources;
            r.runtime = runtime;
            r.host = host.clone();
            r.cloud = cloud.clone();
            r.image = image.clone();
            r.build += 1;
            r.generation += 1;
            r.state = EnvState::Scheduled;
            r.detail = Default::default();
            r.timings = Timings {
                requested_at: Some(now),
                scheduled_at: Some(Timestamp::now()),
                ..Default::default()
            };
        })?;
        if let Some(h) = &old_host {
            ctrl.envs.release(h, current.resources);
        }
        if let Some(h) = &host {
            ctrl.envs.allocate(h, updated.resources);
        }
        (updated, target.why())
    };
    let (updated, why) = updated;
    if elsewhere && let Some(old) = old_host.filter(|h| Some(h) != updated.host.as_ref()) {
        crate::envs::reports::remove_from(ctrl, &old, &updated);
    }
    event(
        ctrl,
        &r.id,
        "rebuild",
        format!(
            "rebuild requested by {} from {}@{}{}",
            caller.name,
            rec.name,
            short(&meta.version),
            if elsewhere {
                " elsewhere"
            } else {
                ", keeping its data"
            }
        ),
    );
    event(
        ctrl,
        &r.id,
        "scheduled",
        scheduled_text(ctrl, &updated, why),
    );
    durable(ctrl).await?;
    ctrl.envs.nudge.notify_one();
    Ok(Reply::Env(view(ctrl, &updated, vec![])))
}

pub(super) async fn delete(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    keep_data: bool,
) -> ApiResponse {
    let r = get_visible(ctrl, caller, name)?;
    check_owner(caller, &r)?;
    if r.desired == Desired::Deleted {
        return Ok(Reply::Env(view(ctrl, &r, vec![])));
    }
    let updated = update(ctrl, &r, |cur| {
        cur.desired = Desired::Deleted;
        cur.keep_data = keep_data;
        cur.generation += 1;
        retry_now(cur);
    })?;
    ctrl.envs.release_name(&updated.name, &updated.id);
    crate::usage::desired_changed(ctrl, &updated, Timestamp::now());
    event(
        ctrl,
        &r.id,
        "delete",
        format!(
            "delete requested by {}{}",
            caller.name,
            if keep_data { " (keeping its data)" } else { "" }
        ),
    );
    durable(ctrl).await?;
    ctrl.envs.nudge.notify_one();
    Ok(Reply::Env(view(ctrl, &updated, vec![])))
}

/// Moves the ttl deadline `by` later, within the site's `max_extension`.
pub(super) async fn extend(
    ctrl: &Controller,
    caller: &Caller,
    name: &str,
    by: Duration,
) -> ApiResponse {
    let r = get_changeable(ctrl, caller, name)?;
    if r.policy.spec.ttl.is_none() {
        return Err(ApiError::precondition(format!(
            "environment {name} has no ttl: nothing to extend"
        )));
    }
    if by.is_zero() {
        return Err(ApiError::invalid("--by must be longer than zero"));
    }
    let max = ctrl.config.policies.max_extension;
    let already = Duration::from_secs(r.policy.extended_secs);
    if already + by > max {
        let left = max.saturating_sub(already);
        let so_far = if already.is_zero() {
            String::new()
        } else {
            format!(
                "it was extended by {} already and ",
                format_duration(already)
            )
        };
        return Err(ApiError::invalid(format!(
            "cannot extend {name} by {}: {so_far}the site cap max_extension = {} \
             (controller.toml [policies]) allows {} more in total; extend by {} or less, \
             or ask an operator",
            format_duration(by),
            format_duration(max),
            format_duration(left),
            format_duration(left),
        )));
    }
    let updated = update(ctrl, &r, |cur| {
        cur.policy.extended_secs = cur.policy.extended_secs.saturating_add(by.as_secs());
    })?;
    let deadline = crate::policy::engine::deadline(&updated, &updated.policy.spec);
    event(
        ctrl,
        &r.id,
        "extended",
        format!(
            "ttl extended by {} by {}: deleted at {}",
            format_duration(by),
            caller.name,
            deadline
                .map(|d| crate::policy::local_time(&crate::policy::zone(&updated), d))
                .unwrap_or_default()
        ),
    );
    durable(ctrl).await?;
    Ok(Reply::Env(view(ctrl, &updated, vec![])))
}

/// The environment's effective policies and what they do next.
pub(super) fn policies(ctrl: &Controller, caller: &Caller, name: &str) -> ApiResponse {
    let r = get_visible(ctrl, caller, name)?;
    Ok(Reply::EnvPolicies(crate::policy::env_view(
        ctrl,
        &r,
        Timestamp::now(),
    )))
}

/// Places a request; `own` is an allocation to disregard (in-place rebuild).
fn place(
    ctrl: &Controller,
    request: &Request,
    own: Option<(HostId, metrom_protocol::messages::env::Resources)>,
    name: &str,
) -> Result<Placement, ApiError> {
    let mut hosts = host_snapshots(ctrl).map_err(store_err)?;
    if let Some((h, res)) = own
        && let Some(snap) = hosts.iter_mut().find(|s| s.id == h)
    {
        snap.allocated.vcpus = snap.allocated.vcpus.saturating_sub(res.vcpus);
        snap.allocated.memory_mb = snap.allocated.memory_mb.saturating_sub(res.memory_mb);
        snap.allocated.disk_gb = snap.allocated.disk_gb.saturating_sub(res.disk_gb);
    }
    scheduler::place(&hosts, request, &ctrl.config.scheduler)
        .map_err(|e| ApiError::new(ErrorKind::NoCapacity, format!("cannot place {name}: {e}")))
}

/// Stores a new environment and claims its name (the caller holds the placing lock).
fn insert(ctrl: &Controller, record: &EnvRecord) -> Result<(), ApiError> {
    ctrl.store
        .envs
        .put(record.id.as_str(), record)
        .map_err(store_err)?;
    ctrl.envs.claim_name(&record.name, &record.id);
    Ok(())
}

fn update(
    ctrl: &Controller,
    r: &EnvRecord,
    mut f: impl FnMut(&mut EnvRecord),
) -> Result<EnvRecord, ApiError> {
    let res = ctrl
        .store
        .envs
        .update(r.id.as_str(), |cur| match cur {
            Some(mut cur) if cur.desired != Desired::Deleted => {
                f(&mut cur);
                Ok(Some(cur))
            }
            Some(_) => Err(ApiError::precondition(format!(
                "environment {} is being deleted",
                r.name
            ))),
            None => Err(not_found(&r.name)),
        })
        .map_err(store_err)?;
    Ok(res?.expect("updated"))
}

/// Runtime kinds the template can run on hosts, in its order of
/// preference (none for a cloud-only template).
fn on_prem_runtimes(t: &Template) -> Vec<RuntimeKind> {
    t.manifest
        .runtime
        .iter()
        .filter_map(RuntimePref::on_prem)
        .collect()
}

/// Where an environment goes.
enum Target {
    Host(Placement),
    /// A cloud account; with why no host took it (None: cloud-only template).
    Cloud(crate::cloud::CloudPlacement, Option<String>),
}

impl Target {
    fn parts(
        &self,
    ) -> (
        RuntimeKind,
        Option<HostId>,
        Option<crate::cloud::CloudPlacement>,
    ) {
        match self {
            Target::Host(p) => (p.runtime, Some(p.host.clone()), None),
            Target::Cloud(c, _) => (RuntimeKind::Cloud, None, Some(c.clone())),
        }
    }

    fn why(&self) -> Option<String> {
        match self {
            Target::Host(_) => None,
            Target::Cloud(_, why) => why.clone(),
        }
    }
}

/// A host if one fits; else, when the template allows `cloud` and the
/// request pins no host or labels, a cloud account (burst).
fn place_any(
    ctrl: &Controller,
    t: &Template,
    request: &Request,
    own: Option<(HostId, metrom_protocol::messages::env::Resources)>,
    name: &str,
) -> Result<Target, ApiError> {
    let cloud_ok = t.manifest.runtime.contains(&RuntimePref::Cloud);
    let on_prem = if request.runtimes.is_empty() {
        None
    } else {
        match place(ctrl, request, own, name) {
            Ok(p) => return Ok(Target::Host(p)),
            Err(e) if e.kind == ErrorKind::NoCapacity && cloud_ok => Some(e),
            Err(e) => return Err(e),
        }
    };
    if request.host.is_some() || !request.labels.is_empty() {
        return Err(on_prem.unwrap_or_else(|| {
            ApiError::precondition(format!(
                "template {} runs only in the cloud: --host and --label choose hosts, so leave them out",
                t.manifest.name
            ))
        }));
    }
    match cloud_place(ctrl, t, None, name) {
        Ok(c) => Ok(Target::Cloud(c, on_prem.map(|e| e.message))),
        Err(e) => Err(match on_prem {
            Some(p) => ApiError::new(
                ErrorKind::NoCapacity,
                format!(
                    "{}; the template allows the cloud, but {}",
                    p.message, e.message
                ),
            ),
            None => e,
        }),
    }
}

/// A cloud account for the template (`prefer` first if it maps the image).
fn cloud_place(
    ctrl: &Controller,
    t: &Template,
    prefer: Option<&str>,
    name: &str,
) -> Result<crate::cloud::CloudPlacement, ApiError> {
    let mut accounts = ctrl.store.cloud_accounts.values().map_err(store_err)?;
    if let Some(p) = prefer {
        let image = t.manifest.image.as_deref().unwrap_or_default();
        if accounts
            .iter()
            .any(|a| a.name == p && a.image_map.contains_key(image))
        {
            accounts.retain(|a| a.name == p);
        }
    }
    crate::cloud::placement::place(
        &accounts,
        &ctrl.config.cloud.instance_types,
        t.manifest.image.as_deref(),
        t.manifest.resources,
    )
    .map_err(|e| {
        ApiError::new(
            ErrorKind::NoCapacity,
            format!("cannot place {name} in the cloud: {e}"),
        )
    })
}

/// A change by the owner is tried at once, not after a failure's retry delay.
fn retry_now(r: &mut EnvRecord) {
    if let Some(c) = r.cloud.as_mut() {
        c.retry_at = None;
    }
}

/// The base image a VM of this template boots from.
fn image_ref(
    ctrl: &Controller,
    t: &Template,
    runtime: RuntimeKind,
) -> Result<Option<ImageRef>, ApiError> {
    let Some(name) = &t.manifest.image else {
        return Ok(None);
    };
    // Containers need no VM image; a cloud VM boots the account's machine image.
    if matches!(runtime, RuntimeKind::Docker | RuntimeKind::Cloud) {
        return Ok(None);
    }
    match ctrl.store.images.get(name).map_err(store_err)? {
        Some(i) => Ok(Some(ImageRef {
            name: i.name,
            digest: i.digest,
            size: i.size,
            format: i.format,
        })),
        None if runtime == RuntimeKind::Fake => Ok(None),
        None => Err(ApiError::precondition(format!(
            "template {} needs base image '{name}', which is not in the image store (metrom image import FILE --name {name})",
            t.manifest.name
        ))),
    }
}

fn secret_params(t: &Template) -> Vec<String> {
    t.manifest
        .params
        .iter()
        .filter(|(_, p)| p.secret)
        .map(|(k, _)| k.clone())
        .collect()
}

fn scheduled_text(ctrl: &Controller, r: &EnvRecord, why: Option<String>) -> String {
    if let Some(c) = &r.cloud {
        let because = match why {
            Some(w) => format!(": no host fits ({w})"),
            None => " (the template runs only in the cloud)".to_string(),
        };
        return format!(
            "placed in cloud account {} ({} {}) as {} from image {}{because}",
            c.account, c.provider, c.region, c.instance_type, c.image
        );
    }
    let host = r.host.as_ref().map(|h| h.to_string()).unwrap_or_default();
    let name = r
        .host
        .as_ref()
        .and_then(|h| ctrl.store.hosts.get(h.as_str()).ok().flatten())
        .map(|h| format!(" ({})", h.name))
        .unwrap_or_default();
    format!(
        "scheduled on host {host}{name} with the {} runtime",
        r.runtime
    )
}

/// Environment names: 1–40 characters, lowercase letters, digits and '-',
/// starting with a letter (they become VM, network and volume names).
fn check_name(name: &str) -> Result<(), ApiError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "environment name '{name}': use 1-40 lowercase letters, digits and '-', starting with a letter"
        )))
    }
}

fn short(version: &str) -> &str {
    let end = version.len().min("sha256:".len() + 12);
    &version[..end]
}

fn visible(caller: &Caller, r: &EnvRecord) -> bool {
    caller.role != Role::Developer || r.owner == caller.name
}

fn get_visible(ctrl: &Controller, caller: &Caller, name: &str) -> Result<EnvRecord, ApiError> {
    match find(ctrl, name).map_err(store_err)? {
        Some(r) if visible(caller, &r) => Ok(r),
        Some(r) => Err(not_yours(caller, &r)),
        None => Err(not_found(name)),
    }
}

fn not_yours(caller: &Caller, r: &EnvRecord) -> ApiError {
    ApiError::denied(format!(
        "environment {} belongs to {}: {} is a developer and may see and change only their own environments",
        r.name, r.owner, caller.name
    ))
}

fn get_changeable(ctrl: &Controller, caller: &Caller, name: &str) -> Result<EnvRecord, ApiError> {
    let r = get_visible(ctrl, caller, name)?;
    check_owner(caller, &r)?;
    if r.desired == Desired::Deleted {
        return Err(ApiError::precondition(format!(
            "environment {name} is being deleted"
        )));
    }
    Ok(r)
}

fn check_owner(caller: &Caller, r: &EnvRecord) -> Result<(), ApiError> {
    if caller.is_admin() || r.owner == caller.name {
        Ok(())
    } else {
        Err(not_yours(caller, r))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no environment {name}; see `metrom env list`"))
}
