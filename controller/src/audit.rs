//! The audit log: every state-changing request — who, what (without secret
//! values), when, and whether it was done or refused and why — and every
//! policy action, stored in the `audit` table keyed by time.

use jiff::Timestamp;
use metrom_protocol::duration::format_duration;
use metrom_protocol::messages::api::{
    ApiResponse, AuditView, Call, EnvCreate, LimitChange, PolicyOverrides, QuotaScope, Reply,
};

use crate::state::Controller;
use crate::store::{AuditRecord, StoreError};

/// Who did what to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub user: String,
    pub role: String,
    /// "env create", "user remove", "policy stop", …
    pub action: String,
    pub target: String,
    pub details: String,
}

/// Describes a call for the log. Parameter *values* of environments are left
/// out (some are secrets); names, sizes and counts stay.
pub fn describe(call: &Call) -> (String, String, String) {
    let s = |a: &str, t: &str, d: String| (a.to_string(), t.to_string(), d);
    match call {
        Call::HostCordon { id, cordon } => s(
            if *cordon {
                "host cordon"
            } else {
                "host uncordon"
            },
            id.as_str(),
            String::new(),
        ),
        Call::HostRevoke { id } => s("host revoke", id.as_str(), String::new()),
        Call::TokenCreate {
            ttl_secs,
            uses,
            labels,
        } => s(
            "token create",
            "",
            format!(
                "ttl {}, uses {uses}{}",
                format_duration(std::time::Duration::from_secs(*ttl_secs)),
                labels_text(labels.iter())
            ),
        ),
        Call::TokenRevoke { id } => s("token revoke", id, String::new()),
        Call::TemplatePush { files } => {
            let name = files
                .iter()
                .find(|f| f.path == metrom_protocol::template::MANIFEST_FILE)
                .and_then(|f| std::str::from_utf8(&f.contents).ok())
                .and_then(|t| toml::from_str::<toml::Table>(t).ok())
                .and_then(|t| t.get("name").and_then(|n| n.as_str().map(String::from)))
                .unwrap_or_default();
            s("template push", &name, format!("{} files", files.len()))
        }
        Call::EnvCreate(c) => s("env create", &c.name, create_text(c, None)),
        Call::EnvCreateWithPolicies { create, policies } => s(
            "env create",
            &create.name,
            create_text(create, Some(policies)),
        ),
        Call::EnvPower { name, running } => s(
            if *running { "env start" } else { "env stop" },
            name,
            String::new(),
        ),
        Call::EnvRebuild {
            name,
            version,
            elsewhere,
        } => s(
            "env rebuild",
            name,
            [
                version.as_ref().map(|v| format!("version {v}")),
                elsewhere.then(|| "elsewhere".to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        ),
        Call::EnvDelete { name, keep_data } => s(
            "env delete",
            name,
            if *keep_data {
                "keep data".into()
            } else {
                String::new()
            },
        ),
        Call::EnvExtend { name, by_secs } => s(
            "env extend",
            name,
            format!(
                "by {}",
                format_duration(std::time::Duration::from_secs(*by_secs))
            ),
        ),
        Call::ImageImport { name, size, format } => {
            s("image import", name, format!("{size} bytes, {format}"))
        }
        Call::ImageDelete { name } => s("image delete", name, String::new()),
        Call::UserAdd(u) => s(
            "user add",
            &u.name,
            format!(
                "role {}{}, {} ssh keys",
                u.role,
                u.group
                    .as_ref()
                    .map(|g| format!(", group {g}"))
                    .unwrap_or_default(),
                u.ssh_keys.len()
            ),
        ),
        Call::UserRemove { name } => s("user remove", name, String::new()),
        Call::UserSetRole { name, role } => s("user set-role", name, format!("role {role}")),
        Call::QuotaSet(q) => {
            let target = match &q.scope {
                QuotaScope::User(u) => format!("user:{u}"),
                QuotaScope::Group(g) => format!("group:{g}"),
            };
            let parts: Vec<String> = [
                ("envs", q.envs),
                ("vcpus", q.vcpus),
                ("memory_mb", q.memory_mb),
                ("disk_gb", q.disk_gb),
            ]
            .into_iter()
            .filter_map(|(k, c)| match c {
                LimitChange::Keep => None,
                LimitChange::Set(n) => Some(format!("{k} {n}")),
                LimitChange::Unlimited => Some(format!("{k} unlimited")),
            })
            .collect();
            s("quota set", &target, parts.join(", "))
        }
        Call::CloudAdd(a) => s(
            "cloud add",
            &a.name,
            [
                Some(format!("{} {}", a.provider, a.region)),
                a.profile.as_ref().map(|p| format!("profile {p}")),
                a.endpoint.as_ref().map(|e| format!("endpoint {e}")),
                Some(format!("{} image mappings", a.image_map.len())),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        ),
        Call::CloudRemove { name } => s("cloud remove", name, String::new()),
        Call::CloudSync => s("cloud sync", "", String::new()),
        Call::CloudGc { instance_ids } => s(
            "cloud gc",
            "",
            format!(
                "{} instances: {}",
                instance_ids.len(),
                instance_ids.join(", ")
            ),
        ),
        // Reads are not audited; name them anyway, by variant only.
        other => {
            let debug = format!("{other:?}");
            let name: String = debug
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            (name, String::new(), String::new())
        }
    }
}

/// Whether a response means done or refused, and its message.
pub fn outcome(result: &ApiResponse) -> (bool, String) {
    match result {
        Ok(Reply::Done { message }) => (true, message.clone()),
        Ok(_) => (true, String::new()),
        Err(e) => (false, e.message.clone()),
    }
}

/// Appends an entry (the caller makes it durable with a flush).
pub fn record(ctrl: &Controller, e: &Entry, ok: bool, message: &str) {
    let at = Timestamp::now();
    let seq = match ctrl.store.next_id() {
        Ok(s) => s,
        Err(err) => {
            tracing::error!("audit entry not recorded: {}", crate::error_chain(&err));
            return;
        }
    };
    let rec = AuditRecord {
        at,
        user: e.user.clone(),
        role: e.role.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        details: e.details.clone(),
        ok,
        message: message.to_string(),
    };
    if let Err(err) = ctrl.store.audit.put(&key(at, seq), &rec) {
        tracing::error!("audit entry not recorded: {}", crate::error_chain(&err));
    }
}

/// Entries from `since` on, by `user` if given, the latest `limit` (0: all), oldest first.
pub fn list(
    ctrl: &Controller,
    user: Option<&str>,
    since: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<AuditView>, StoreError> {
    let records = match since {
        Some(t) => ctrl.store.audit.scan_from(&time_prefix(t))?,
        None => ctrl.store.audit.list()?,
    };
    let mut out: Vec<AuditView> = records
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| user.is_none_or(|u| r.user == u))
        .map(|r| AuditView {
            at: r.at,
            user: r.user,
            role: r.role,
            action: r.action,
            target: r.target,
            details: r.details,
            result: if r.ok { "ok" } else { "refused" }.into(),
            message: r.message,
        })
        .collect();
    if limit > 0 && out.len() > limit {
        out.drain(..out.len() - limit);
    }
    Ok(out)
}

fn key(at: Timestamp, seq: u64) -> String {
    format!("{}-{seq:020}", time_prefix(at))
}

fn time_prefix(at: Timestamp) -> String {
    format!("{:020}", at.as_nanosecond().max(0))
}

fn create_text(c: &EnvCreate, policies: Option<&PolicyOverrides>) -> String {
    let mut parts = vec![format!(
        "template {}{}",
        c.template,
        c.version
            .as_ref()
            .map(|v| format!("@{v}"))
            .unwrap_or_default()
    )];
    if !c.params.is_empty() {
        let keys: Vec<&str> = c.params.keys().map(String::as_str).collect();
        parts.push(format!("params {} (values not logged)", keys.join(",")));
    }
    if let Some(h) = &c.host {
        parts.push(format!("host {h}"));
    }
    if !c.labels.is_empty() {
        parts.push(labels_text(c.labels.iter()).trim_start_matches(", ").into());
    }
    if let Some(p) = policies {
        for (k, v) in [
            ("ttl", &p.ttl),
            ("ttl-warning", &p.ttl_warning),
            ("idle", &p.idle),
            ("schedule", &p.schedule),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k} '{v}'"));
            }
        }
    }
    parts.join(", ")
}

fn labels_text<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> String {
    let l: Vec<String> = labels.map(|(k, v)| format!("{k}={v}")).collect();
    if l.is_empty() {
        String::new()
    } else {
        format!(", labels {}", l.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parameter_values_never_reach_the_log() {
        let mut params = BTreeMap::new();
        params.insert("DB_PASSWORD".to_string(), "hunter2".to_string());
        let call = Call::EnvCreateWithPolicies {
            create: EnvCreate {
                name: "dev".into(),
                template: "web".into(),
                version: None,
                params,
                host: None,
                labels: BTreeMap::new(),
            },
            policies: PolicyOverrides {
                ttl: Some("7d".into()),
                ..Default::default()
            },
        };
        let (action, target, details) = describe(&call);
        assert_eq!((action.as_str(), target.as_str()), ("env create", "dev"));
        assert_eq!(
            details,
            "template web, params DB_PASSWORD (values not logged), ttl '7d'"
        );
        assert!(!details.contains("hunter2"));
        assert_eq!(describe(&Call::HostList).0, "HostList");
    }

    #[test]
    fn keys_sort_by_time() {
        let a = key("2026-01-01T00:00:00Z".parse().unwrap(), 99);
        let b = key("2026-01-01T00:00:01Z".parse().unwrap(), 1);
        assert!(a < b);
        assert!(time_prefix("2026-01-01T00:00:01Z".parse().unwrap()) <= b);
    }
}
