//! Quotas per user and per group: at most so many environments, vCPUs,
//! memory and disk. Usage counts every environment not being deleted (a
//! stopped one still holds its place on its host). Checked by create and
//! rebuild while they hold the placing lock, so concurrent requests cannot
//! both take the last unit.

use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::api::{ApiError, ErrorKind, QuotaFigures};
use metrom_protocol::messages::env::Resources;

use crate::api::store_err;
use crate::state::Controller;
use crate::store::{Desired, EnvRecord, QuotaRecord, StoreError, UserRecord};

/// The store key of a user's or a group's quota.
pub fn key(scope: &str, name: &str) -> String {
    format!("{scope}:{name}")
}

/// What a request adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub envs: u64,
    pub resources: Resources,
}

/// Sums the environments that count towards a quota.
pub fn usage<'a>(envs: impl Iterator<Item = &'a EnvRecord>) -> QuotaFigures {
    let mut u = QuotaFigures {
        envs: Some(0),
        vcpus: Some(0),
        memory_mb: Some(0),
        disk_gb: Some(0),
    };
    for r in envs.filter(|r| counts(r)) {
        add(&mut u.envs, 1);
        add(&mut u.vcpus, r.resources.vcpus as u64);
        add(&mut u.memory_mb, r.resources.memory_mb);
        add(&mut u.disk_gb, r.resources.disk_gb);
    }
    u
}

/// Whether an environment counts towards its owner's quota.
pub fn counts(r: &EnvRecord) -> bool {
    r.desired != Desired::Deleted
}

/// The limits `ask` would exceed, each as "vcpus: 4 in use + 2 requested > limit 5". Pure.
pub fn exceeded(limits: &QuotaFigures, usage: &QuotaFigures, ask: &Ask) -> Vec<String> {
    let dims = [
        ("environments", limits.envs, usage.envs, ask.envs, ""),
        (
            "vcpus",
            limits.vcpus,
            usage.vcpus,
            ask.resources.vcpus as u64,
            "",
        ),
        (
            "memory",
            limits.memory_mb,
            usage.memory_mb,
            ask.resources.memory_mb,
            " MiB",
        ),
        (
            "disk",
            limits.disk_gb,
            usage.disk_gb,
            ask.resources.disk_gb,
            " GiB",
        ),
    ];
    dims.into_iter()
        .filter_map(|(name, limit, used, want, unit)| {
            let limit = limit?;
            let used = used.unwrap_or(0);
            (used + want > limit).then(|| {
                format!(
                    "{name}: {used}{unit} in use + {want}{unit} requested > limit {limit}{unit}"
                )
            })
        })
        .collect()
}

/// Refuses `ask` for `owner` if it would exceed their quota or their group's.
/// `replacing` is an environment whose current size does not count (rebuild).
pub fn check(
    ctrl: &Controller,
    owner: &str,
    ask: Ask,
    replacing: Option<&EnvId>,
) -> Result<(), ApiError> {
    let user = ctrl.store.users.get(owner).map_err(store_err)?;
    let group = user.as_ref().and_then(|u| u.group.clone());
    let user_quota = ctrl
        .store
        .quotas
        .get(&key("user", owner))
        .map_err(store_err)?;
    let group_quota = match &group {
        Some(g) => ctrl.store.quotas.get(&key("group", g)).map_err(store_err)?,
        None => None,
    };
    if user_quota.is_none() && group_quota.is_none() {
        return Ok(());
    }
    let envs: Vec<EnvRecord> = ctrl
        .store
        .envs
        .list()
        .map_err(store_err)?
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| replacing != Some(&r.id))
        .collect();
    let mut problems = Vec::new();
    if let Some(q) = &user_quota {
        let used = usage(envs.iter().filter(|r| r.owner == owner));
        for p in exceeded(&q.limits, &used, &ask) {
            problems.push((q, p));
        }
    }
    if let (Some(q), Some(g)) = (&group_quota, &group) {
        let members = group_members(ctrl, g).map_err(store_err)?;
        let used = usage(envs.iter().filter(|r| members.contains(&r.owner)));
        for p in exceeded(&q.limits, &used, &ask) {
            problems.push((q, p));
        }
    }
    let Some((first, _)) = problems.first() else {
        return Ok(());
    };
    let text: Vec<String> = problems
        .iter()
        .map(|(q, p)| format!("{} {}: {p}", q.scope, q.name))
        .collect();
    Err(ApiError::new(
        ErrorKind::QuotaExceeded,
        format!(
            "quota exceeded for {}: delete an environment you no longer need \
             (metrom env list), or ask an admin to raise the quota \
             (metrom quota set --{} {} …)",
            text.join("; "),
            first.scope,
            first.name
        ),
    ))
}

/// Users whose group is `group`.
pub fn group_members(ctrl: &Controller, group: &str) -> Result<Vec<String>, StoreError> {
    Ok(ctrl
        .store
        .users
        .list()?
        .into_iter()
        .map(|(_, u): (String, UserRecord)| u)
        .filter(|u| u.group.as_deref() == Some(group))
        .map(|u| u.name)
        .collect())
}

/// Current usage of a quota's user or group.
pub fn usage_of(ctrl: &Controller, q: &QuotaRecord) -> Result<QuotaFigures, StoreError> {
    let envs: Vec<EnvRecord> = ctrl
        .store
        .envs
        .list()?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    Ok(if q.scope == "group" {
        let members = group_members(ctrl, &q.name)?;
        usage(envs.iter().filter(|r| members.contains(&r.owner)))
    } else {
        usage(envs.iter().filter(|r| r.owner == q.name))
    })
}

fn add(v: &mut Option<u64>, n: u64) {
    *v = Some(v.unwrap_or(0) + n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_limit_with_usage_and_request() {
        let limits = QuotaFigures {
            envs: Some(2),
            vcpus: Some(4),
            memory_mb: None,
            disk_gb: Some(10),
        };
        let used = QuotaFigures {
            envs: Some(1),
            vcpus: Some(3),
            memory_mb: Some(8192),
            disk_gb: Some(5),
        };
        let ask = Ask {
            envs: 1,
            resources: Resources {
                vcpus: 2,
                memory_mb: 1 << 20,
                disk_gb: 5,
            },
        };
        assert_eq!(
            exceeded(&limits, &used, &ask),
            ["vcpus: 3 in use + 2 requested > limit 4"]
        );
        let ask = Ask {
            envs: 1,
            resources: Resources {
                vcpus: 1,
                memory_mb: 1,
                disk_gb: 6,
            },
        };
        assert_eq!(
            exceeded(&limits, &used, &ask),
            ["disk: 5 GiB in use + 6 GiB requested > limit 10 GiB"]
        );
        let full = QuotaFigures {
            envs: Some(2),
            ..used
        };
        assert_eq!(
            exceeded(
                &limits,
                &full,
                &Ask {
                    envs: 1,
                    resources: Resources::default()
                }
            ),
            ["environments: 2 in use + 1 requested > limit 2"]
        );
        assert!(exceeded(&QuotaFigures::default(), &full, &ask).is_empty());
    }
}
