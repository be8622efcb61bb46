//! cloud add / list / remove / sync / instances / gc (admins).

use std::collections::HashMap;

use jiff::Timestamp;
use metrom_protocol::messages::api::{
    ApiError, ApiResponse, CloudAccountSpec, CloudAccountView, CloudGcView, Reply,
};
use metrom_protocol::messages::env::EnvState;

use super::{Caller, durable, store_err};
use crate::cloud::inventory::{self, Ownership};
use crate::cloud::provider::{ListScope, TAG_CONTROLLER};
use crate::cloud::{CloudError, reconcile};
use crate::state::Controller;
use crate::store::{CloudAccountRecord, EnvRecord};

pub(super) async fn add(ctrl: &Controller, caller: &Caller, spec: CloudAccountSpec) -> ApiResponse {
    check(&spec)?;
    if ctrl
        .store
        .cloud_accounts
        .contains(&spec.name)
        .map_err(store_err)?
    {
        return Err(ApiError::conflict(format!(
            "cloud account {} already exists; remove it first to change it (metrom cloud remove {})",
            spec.name, spec.name
        )));
    }
    let record = CloudAccountRecord {
        name: spec.name.clone(),
        provider: spec.provider.clone(),
        region: spec.region.clone(),
        profile: spec.profile.clone(),
        endpoint: spec.endpoint.clone(),
        subnet: spec.subnet.clone(),
        security_group: spec.security_group.clone(),
        key_name: spec.key_name.clone(),
        image_map: spec.image_map.clone(),
        added_at: Timestamp::now(),
        added_by: caller.name.clone(),
    };
    if spec.verify {
        // One cheap call: credentials, endpoint and permissions at once.
        let checked = async {
            let p = ctrl.cloud.probe(&record, &ctrl.config.cloud).await?;
            p.list(ListScope::Controller(&ctrl.cloud.controller_id))
                .await?;
            Ok::<_, CloudError>(())
        }
        .await;
        if let Err(e) = checked {
            return Err(ApiError::precondition(format!(
                "{e} (nothing was stored; add --no-verify to store the account anyway)"
            )));
        }
    }
    ctrl.store
        .cloud_accounts
        .put(&record.name, &record)
        .map_err(store_err)?;
    durable(ctrl).await?;
    ctrl.cloud.nudge.notify_one();
    Ok(Reply::CloudAccounts(vec![account_view(ctrl, &record)?]))
}

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let mut out = Vec::new();
    for (_, a) in ctrl.store.cloud_accounts.list().map_err(store_err)? {
        out.push(account_view(ctrl, &a)?);
    }
    Ok(Reply::CloudAccounts(out))
}

pub(super) async fn remove(ctrl: &Controller, name: &str) -> ApiResponse {
    if !ctrl
        .store
        .cloud_accounts
        .contains(name)
        .map_err(store_err)?
    {
        return Err(not_found(name));
    }
    let living: Vec<String> = envs_in(ctrl, name)?.into_iter().map(|e| e.name).collect();
    if !living.is_empty() {
        return Err(ApiError::precondition(format!(
            "cloud account {name} still has {} environment{} ({}); delete {} first (metrom env delete NAME)",
            living.len(),
            if living.len() == 1 { "" } else { "s" },
            living.join(", "),
            if living.len() == 1 { "it" } else { "them" },
        )));
    }
    ctrl.store.cloud_accounts.remove(name).map_err(store_err)?;
    durable(ctrl).await?;
    ctrl.cloud.forget(name).await;
    Ok(Reply::Done {
        message: format!("cloud account {name} removed; its instances were left as they are"),
    })
}

/// A full pass now; answers with the instances.
pub(super) async fn sync(ctrl: &Controller) -> ApiResponse {
    reconcile::pass(ctrl, true).await.map_err(store_err)?;
    instances(ctrl)
}

pub(super) fn instances(ctrl: &Controller) -> ApiResponse {
    let accounts = accounts(ctrl)?;
    let envs = all_envs(ctrl)?;
    let view = {
        let inv = ctrl.cloud.inventory.lock().expect("inventory lock");
        inventory::view(
            &inv,
            &accounts,
            &envs,
            &ctrl.cloud.controller_id,
            &ctrl.config.cloud.currency,
            &ctrl.config.cloud.prices(),
            Timestamp::now(),
        )
    };
    Ok(Reply::CloudInstances(view))
}

/// Terminates each instance that is, by a fresh listing, still an orphan.
pub(super) async fn gc(ctrl: &Controller, ids: Vec<String>) -> ApiResponse {
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "no instances given; `metrom cloud gc` lists the orphans and asks before terminating them",
        ));
    }
    let envs = all_envs(ctrl)?;
    let by_id: HashMap<String, &EnvRecord> = envs.iter().map(|e| (e.id.to_string(), e)).collect();
    let controller = ctrl.cloud.controller_id.clone();
    let mut terminated = Vec::new();
    let mut skipped = Vec::new();
    let mut left: Vec<String> = ids;
    for a in accounts(ctrl)? {
        if left.is_empty() {
            break;
        }
        let listed = async {
            let p = ctrl.cloud.provider(&a, &ctrl.config.cloud).await?;
            let list = p.list(ListScope::Controller(&controller)).await?;
            Ok::<_, CloudError>((p, list))
        }
        .await;
        let (provider, list) = match listed {
            Ok(x) => x,
            Err(e) => {
                skipped.push((format!("account {}", a.name), e.message));
                continue;
            }
        };
        let mut orphans = Vec::new();
        let asked: Vec<_> = list.iter().filter(|i| left.contains(&i.id)).collect();
        for i in asked {
            left.retain(|id| id != &i.id);
            if !i.state.alive() {
                skipped.push((i.id.clone(), format!("already {}", i.state.as_str())));
            } else if inventory::ownership(i, &controller, &by_id) == Ownership::Orphan {
                orphans.push(i.id.clone());
            } else {
                let env = i.tag(crate::cloud::provider::TAG_ENV).unwrap_or("?");
                skipped.push((i.id.clone(), format!("environment {env} owns it")));
            }
        }
        if orphans.is_empty() {
            continue;
        }
        match provider.terminate(&orphans).await {
            Ok(()) => {
                tracing::info!(account = %a.name, "terminated orphans {}", orphans.join(", "));
                terminated.extend(orphans);
            }
            Err(e) => skipped.extend(orphans.into_iter().map(|i| (i, e.message.clone()))),
        }
    }
    for id in left {
        skipped.push((
            id,
            format!("not an instance tagged {TAG_CONTROLLER}={controller} in any account"),
        ));
    }
    ctrl.cloud.nudge.notify_one();
    Ok(Reply::CloudGc(CloudGcView {
        terminated,
        skipped,
    }))
}

fn check(spec: &CloudAccountSpec) -> Result<(), ApiError> {
    let b = spec.name.as_bytes();
    let name_ok = !b.is_empty()
        && b.len() <= 40
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !name_ok {
        return Err(ApiError::invalid(format!(
            "cloud account name '{}': use 1-40 lowercase letters, digits and '-', starting with a letter",
            spec.name
        )));
    }
    if spec.provider != "aws" {
        return Err(ApiError::invalid(format!(
            "provider '{}' is not supported (supported: aws)",
            spec.provider
        )));
    }
    let region_ok = !spec.region.is_empty()
        && spec
            .region
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-');
    if !region_ok {
        return Err(ApiError::invalid(format!(
            "region '{}': give an AWS region such as eu-central-1",
            spec.region
        )));
    }
    if let Some(e) = &spec.endpoint {
        let ok = (e.starts_with("https://") || e.starts_with("http://"))
            && e.split("://").nth(1).is_some_and(|rest| !rest.is_empty());
        if !ok {
            return Err(ApiError::invalid(format!(
                "endpoint '{e}': give a URL such as https://ec2.internal.example or http://10.0.0.5:5000"
            )));
        }
    }
    for (image, ami) in &spec.image_map {
        let image_ok = !image.is_empty()
            && image
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
        if !image_ok || !ami.starts_with("ami-") || ami.len() < 5 {
            return Err(ApiError::invalid(format!(
                "--image-map {image}={ami}: write IMAGE=ami-ID, with IMAGE a template's `image` name"
            )));
        }
    }
    Ok(())
}

fn account_view(ctrl: &Controller, a: &CloudAccountRecord) -> Result<CloudAccountView, ApiError> {
    let listing = ctrl
        .cloud
        .inventory
        .lock()
        .expect("inventory lock")
        .accounts
        .get(&a.name)
        .cloned()
        .unwrap_or_default();
    Ok(CloudAccountView {
        name: a.name.clone(),
        provider: a.provider.clone(),
        region: a.region.clone(),
        profile: a.profile.clone(),
        endpoint: a.endpoint.clone(),
        subnet: a.subnet.clone(),
        security_group: a.security_group.clone(),
        key_name: a.key_name.clone(),
        image_map: a.image_map.clone(),
        added_at: a.added_at,
        added_by: a.added_by.clone(),
        environments: envs_in(ctrl, &a.name)?.len() as u32,
        last_sync: listing.full_at,
        last_error: listing.error,
    })
}

/// Live environments placed in an account.
fn envs_in(ctrl: &Controller, account: &str) -> Result<Vec<EnvRecord>, ApiError> {
    Ok(all_envs(ctrl)?
        .into_iter()
        .filter(|e| {
            e.state != EnvState::Deleted && e.cloud.as_ref().is_some_and(|c| c.account == account)
        })
        .collect())
}

fn all_envs(ctrl: &Controller) -> Result<Vec<EnvRecord>, ApiError> {
    ctrl.store.envs.values().map_err(store_err)
}

fn accounts(ctrl: &Controller) -> Result<Vec<CloudAccountRecord>, ApiError> {
    ctrl.store.cloud_accounts.values().map_err(store_err)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("no cloud account {name}; see `metrom cloud list`"))
}
