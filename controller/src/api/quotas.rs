//! quota set / list.

use jiff::Timestamp;
use metrom_protocol::messages::api::{
    ApiError, ApiResponse, LimitChange, QuotaFigures, QuotaScope, QuotaSet, QuotaView, Reply,
};

use super::{Caller, durable, store_err};
use crate::quota::{key, usage_of};
use crate::state::Controller;
use crate::store::{QuotaRecord, Role};

pub(super) async fn set(ctrl: &Controller, caller: &Caller, req: QuotaSet) -> ApiResponse {
    let (scope, name) = match &req.scope {
        QuotaScope::User(u) => {
            if !ctrl.store.users.contains(u).map_err(store_err)? {
                return Err(ApiError::not_found(format!(
                    "no user {u}; see `metrom user list`"
                )));
            }
            ("user", u.clone())
        }
        QuotaScope::Group(g) => {
            if g.is_empty() {
                return Err(ApiError::invalid("--group needs a name"));
            }
            ("group", g.clone())
        }
    };
    let changes = [req.envs, req.vcpus, req.memory_mb, req.disk_gb];
    if changes.iter().all(|c| *c == LimitChange::Keep) {
        return Err(ApiError::invalid(
            "give at least one of --envs, --vcpus, --memory, --disk (a number, or 'none' to remove that limit)",
        ));
    }
    let now = Timestamp::now();
    let k = key(scope, &name);
    let res = ctrl
        .store
        .quotas
        .update(&k, |cur| -> Result<_, ()> {
            let mut limits = cur.map(|q| q.limits).unwrap_or_default();
            apply(&mut limits.envs, req.envs);
            apply(&mut limits.vcpus, req.vcpus);
            apply(&mut limits.memory_mb, req.memory_mb);
            apply(&mut limits.disk_gb, req.disk_gb);
            if limits == QuotaFigures::default() {
                return Ok(None);
            }
            Ok(Some(QuotaRecord {
                scope: scope.into(),
                name: name.clone(),
                limits,
                updated_at: now,
                updated_by: caller.name.clone(),
            }))
        })
        .map_err(store_err)?;
    durable(ctrl).await?;
    match res {
        Ok(Some(q)) => Ok(Reply::Quotas(vec![view(ctrl, &q)?])),
        _ => Ok(Reply::Done {
            message: format!("{scope} {name} has no quota any more"),
        }),
    }
}

/// Every quota for admins and viewers; a developer's own and their group's.
pub(super) fn list(ctrl: &Controller, caller: &Caller) -> ApiResponse {
    let group = match caller.role {
        Role::Developer => ctrl
            .store
            .users
            .get(&caller.name)
            .map_err(store_err)?
            .and_then(|u| u.group),
        _ => None,
    };
    let mut out = Vec::new();
    for (_, q) in ctrl.store.quotas.list().map_err(store_err)? {
        let mine = (q.scope == "user" && q.name == caller.name)
            || (q.scope == "group" && group.as_deref() == Some(q.name.as_str()));
        if caller.role != Role::Developer || mine {
            out.push(view(ctrl, &q)?);
        }
    }
    Ok(Reply::Quotas(out))
}

fn apply(limit: &mut Option<u64>, change: LimitChange) {
    match change {
        LimitChange::Keep => {}
        LimitChange::Set(n) => *limit = Some(n),
        LimitChange::Unlimited => *limit = None,
    }
}

fn view(ctrl: &Controller, q: &QuotaRecord) -> Result<QuotaView, ApiError> {
    Ok(QuotaView {
        scope: q.scope.clone(),
        name: q.name.clone(),
        limits: q.limits,
        usage: usage_of(ctrl, q).map_err(store_err)?,
        updated_at: q.updated_at,
        updated_by: q.updated_by.clone(),
    })
}
