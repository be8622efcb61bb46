//! Request handlers for the CLI's calls. [`dispatch`] is the one place that
//! routes a call, checks the caller's role against [`access`], and writes the
//! audit log entry of every state-changing call, done or refused.
//!
//! Roles:
//!
//! | access | admin | developer | viewer |
//! |---|---|---|---|
//! | [`Access::Read`] | everything | their own environments, audit entries, usage and quotas; all templates, hosts, images | everything |
//! | [`Access::Own`] | everything | their own environments (and templates they pushed first) | refused |
//! | [`Access::Admin`] | everything | refused | refused |
//!
//! "Their own" is checked by the handlers (`envs::check_owner`,
//! `envs::visible`), which have the records; which calls need which access is
//! decided here only.

mod audit;
mod cloud;
pub mod docker_archives;
mod envs;
mod hosts;
pub mod images;
mod quotas;
pub mod templates;
mod tokens;
mod users;

use std::time::Duration;

use jiff::Timestamp;
use metrom_protocol::messages::api::HostState;
use metrom_protocol::messages::api::{ApiError, ApiResponse, Call, Reply, StatusView};

use crate::state::Controller;
use crate::store::{Role, StoreError};

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    pub fn lookup(ctrl: &Controller, name: &str) -> Result<Caller, ApiError> {
        match ctrl.store.users.get(name).map_err(store_err)? {
            Some(u) => Ok(Caller {
                name: u.name,
                role: u.role,
            }),
            None => Err(ApiError::denied(format!("user {name} no longer exists"))),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any role; developers see only what is theirs where things have owners.
    Read,
    /// Admins, and developers on what they own.
    Own,
    /// Admins only.
    Admin,
}

/// The access each call needs: the role rules, in one place.
pub fn access(call: &Call) -> Access {
    match call {
        Call::Status
        | Call::HostList
        | Call::HostShow { .. }
        | Call::TemplateList
        | Call::TemplateShow { .. }
        | Call::TemplateVersions { .. }
        | Call::TemplatePull { .. }
        | Call::EnvList { .. }
        | Call::EnvShow { .. }
        | Call::EnvEvents { .. }
        | Call::EnvPolicies { .. }
        | Call::ImageList
        | Call::DockerArchiveList
        | Call::QuotaList
        | Call::AuditList { .. }
        | Call::ReportUsage { .. } => Access::Read,
        Call::TemplatePush { .. }
        | Call::EnvCreate(_)
        | Call::EnvCreateWithPolicies { .. }
        | Call::EnvPower { .. }
        | Call::EnvRebuild { .. }
        | Call::EnvDelete { .. }
        | Call::EnvExtend { .. } => Access::Own,
        Call::HostCordon { .. }
        | Call::HostRevoke { .. }
        | Call::TokenCreate { .. }
        | Call::TokenList
        | Call::TokenRevoke { .. }
        | Call::ImageImport { .. }
        | Call::ImageDelete { .. }
        | Call::DockerArchiveImport { .. }
        | Call::DockerArchiveDelete { .. }
        | Call::UserAdd(_)
        | Call::UserList
        | Call::UserRemove { .. }
        | Call::UserSetRole { .. }
        | Call::QuotaSet(_)
        | Call::InstallerInfo
        | Call::CloudAdd(_)
        | Call::CloudList
        | Call::CloudRemove { .. }
        | Call::CloudSync
        | Call::CloudInstances
        | Call::CloudGc { .. } => Access::Admin,
    }
}

/// Routes one call, and audits it if it changes state. `recv` carries the
/// bytes of uploads that follow their request.
pub async fn dispatch(
    ctrl: &Controller,
    caller: &Caller,
    call: Call,
    recv: &mut quinn::RecvStream,
) -> ApiResponse {
    let audited = call.is_mutation().then(|| crate::audit::describe(&call));
    let result = route(ctrl, caller, call, recv).await;
    if let Some((action, target, details)) = audited {
        let (ok, message) = crate::audit::outcome(&result);
        crate::audit::record(
            ctrl,
            &crate::audit::Entry {
                user: caller.name.clone(),
                role: caller.role.as_str().into(),
                action,
                target,
                details,
            },
            ok,
            &message,
        );
        durable(ctrl).await?;
    }
    result
}

async fn route(
    ctrl: &Controller,
    caller: &Caller,
    call: Call,
    recv: &mut quinn::RecvStream,
) -> ApiResponse {
    authorize(caller, &call)?;
    match call {
        Call::Status => status(ctrl, caller),
        Call::HostList => hosts::list(ctrl),
        Call::HostShow { id } => hosts::show(ctrl, &id),
        Call::HostCordon { id, cordon } => hosts::cordon(ctrl, &id, cordon).await,
        Call::HostRevoke { id } => hosts::revoke(ctrl, &id).await,
        Call::TokenCreate {
            ttl_secs,
            uses,
            labels,
        } => tokens::create(ctrl, caller, Duration::from_secs(ttl_secs), uses, labels).await,
        Call::TokenList => tokens::list(ctrl),
        Call::TokenRevoke { id } => tokens::revoke(ctrl, &id).await,
        Call::TemplatePush { files } => templates::push(ctrl, caller, files).await,
        Call::TemplateList => templates::list(ctrl),
        Call::TemplateShow { name, version } => templates::show(ctrl, &name, version.as_deref()),
        Call::TemplateVersions { name } => templates::versions(ctrl, &name),
        Call::TemplatePull { name, version } => templates::pull(ctrl, &name, version.as_deref()),
        Call::EnvCreate(req) => envs::create(ctrl, caller, req, Default::default()).await,
        Call::EnvCreateWithPolicies { create, policies } => {
            envs::create(ctrl, caller, create, policies).await
        }
        Call::EnvList { all } => envs::list(ctrl, caller, all),
        Call::EnvShow { name } => envs::show(ctrl, caller, &name),
        Call::EnvPower { name, running } => envs::power(ctrl, caller, &name, running).await,
        Call::EnvRebuild {
            name,
            version,
            elsewhere,
        } => envs::rebuild(ctrl, caller, &name, version.as_deref(), elsewhere).await,
        Call::EnvDelete { name, keep_data } => envs::delete(ctrl, caller, &name, keep_data).await,
        Call::EnvEvents { name, limit } => envs::events(ctrl, caller, &name, limit),
        Call::EnvExtend { name, by_secs } => {
            envs::extend(ctrl, caller, &name, Duration::from_secs(by_secs)).await
        }
        Call::EnvPolicies { name } => envs::policies(ctrl, caller, &name),
        Call::ImageImport { name, size, format } => {
            images::import(ctrl, caller, &name, size, &format, recv).await
        }
        Call::ImageList => images::list(ctrl),
        Call::ImageDelete { name } => images::delete(ctrl, &name).await,
        Call::DockerArchiveImport { name, size } => {
            docker_archives::import(ctrl, caller, &name, size, recv).await
        }
        Call::DockerArchiveList => docker_archives::list(ctrl),
        Call::DockerArchiveDelete { name } => docker_archives::delete(ctrl, &name).await,
        Call::UserAdd(req) => users::add(ctrl, req).await,
        Call::UserList => users::list(ctrl),
        Call::UserRemove { name } => users::remove(ctrl, caller, &name).await,
        Call::UserSetRole { name, role } => users::set_role(ctrl, caller, &name, &role).await,
        Call::QuotaSet(req) => quotas::set(ctrl, caller, req).await,
        Call::QuotaList => quotas::list(ctrl, caller),
        Call::AuditList { user, since, limit } => {
            audit::list(ctrl, caller, user.as_deref(), since, limit)
        }
        Call::ReportUsage { since } => audit::usage(ctrl, caller, since),
        Call::InstallerInfo => crate::http::installer_info(ctrl)
            .map(Reply::Installer)
            .map_err(|e| ApiError::internal(crate::error_chain(&e))),
        Call::CloudAdd(spec) => cloud::add(ctrl, caller, spec).await,
        Call::CloudList => cloud::list(ctrl),
        Call::CloudRemove { name } => cloud::remove(ctrl, &name).await,
        Call::CloudSync => cloud::sync(ctrl).await,
        Call::CloudInstances => cloud::instances(ctrl),
        Call::CloudGc { instance_ids } => cloud::gc(ctrl, instance_ids).await,
    }
}

/// Role check (see the table at the top of this file).
fn authorize(caller: &Caller, call: &Call) -> Result<(), ApiError> {
    match (access(call), caller.role) {
        (Access::Read, _) | (_, Role::Admin) | (Access::Own, Role::Developer) => Ok(()),
        (Access::Own, Role::Viewer) => Err(ApiError::denied(format!(
            "user {} is a viewer and may only read; an admin can make them a developer \
             (metrom user set-role {} developer)",
            caller.name, caller.name
        ))),
        (Access::Admin, role) => Err(ApiError::denied(format!(
            "user {} ({}) may not do this: it needs the admin role",
            caller.name,
            role.as_str()
        ))),
    }
}

fn status(ctrl: &Controller, caller: &Caller) -> ApiResponse {
    let now = Timestamp::now();
    let (mut ready, mut unreachable, mut cordoned, mut revoked) = (0, 0, 0, 0);
    for (_, h) in ctrl.store.hosts.list().map_err(store_err)? {
        match crate::hosts::host_state(&h, ctrl.sessions.is_connected(&h.id)) {
            HostState::Ready => ready += 1,
            HostState::Unreachable => unreachable += 1,
            HostState::Revoked => revoked += 1,
        }
        if h.cordoned && !h.revoked() {
            cordoned += 1;
        }
    }
    Ok(Reply::Status(StatusView {
        controller_version: metrom_protocol::BUILD_VERSION.to_string(),
        protocol_version: metrom_protocol::PROTOCOL_VERSION,
        started_at: ctrl.started_at,
        uptime_secs: now.duration_since(ctrl.started_at).as_secs().max(0) as u64,
        hosts_ready: ready,
        hosts_unreachable: unreachable,
        hosts_cordoned: cordoned,
        hosts_revoked: revoked,
        you: format!("user {} ({})", caller.name, caller.role.as_str()),
    }))
}

/// A store failure as the API reports it (details go to the controller's log).
pub fn store_err(e: StoreError) -> ApiError {
    tracing::error!("store: {}", crate::error_chain(&e));
    ApiError::internal("the controller's store failed; see the controller log")
}

/// Makes every write so far durable before the caller is told it is done.
pub async fn durable(ctrl: &Controller) -> Result<(), ApiError> {
    ctrl.store.flush().await.map_err(store_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrom_protocol::ids::HostId;
    use metrom_protocol::messages::api::{EnvCreate, LimitChange, QuotaScope, QuotaSet, UserAdd};

    fn every_call() -> Vec<Call> {
        let h = HostId::generate();
        let n = || "x".to_string();
        let create = EnvCreate {
            name: n(),
            template: n(),
            version: None,
            params: Default::default(),
            host: None,
            labels: Default::default(),
        };
        vec![
            Call::Status,
            Call::HostList,
            Call::HostShow { id: h.clone() },
            Call::HostCordon {
                id: h.clone(),
                cordon: true,
            },
            Call::HostRevoke { id: h },
            Call::TokenCreate {
                ttl_secs: 1,
                uses: 1,
                labels: Default::default(),
            },
            Call::TokenList,
            Call::TokenRevoke { id: n() },
            Call::TemplatePush { files: vec![] },
            Call::TemplateList,
            Call::TemplateShow {
                name: n(),
                version: None,
            },
            Call::TemplateVersions { name: n() },
            Call::TemplatePull {
                name: n(),
                version: None,
            },
            Call::EnvCreate(create.clone()),
            Call::EnvList { all: false },
            Call::EnvShow { name: n() },
            Call::EnvPower {
                name: n(),
                running: true,
            },
            Call::EnvRebuild {
                name: n(),
                version: None,
                elsewhere: false,
            },
            Call::EnvDelete {
                name: n(),
                keep_data: false,
            },
            Call::EnvEvents {
                name: n(),
                limit: 1,
            },
            Call::ImageImport {
                name: n(),
                size: 1,
                format: n(),
            },
            Call::ImageList,
            Call::ImageDelete { name: n() },
            Call::EnvCreateWithPolicies {
                create,
                policies: Default::default(),
            },
            Call::EnvExtend {
                name: n(),
                by_secs: 1,
            },
            Call::EnvPolicies { name: n() },
            Call::UserAdd(UserAdd {
                name: n(),
                role: n(),
                group: None,
                ssh_keys: vec![],
            }),
            Call::UserList,
            Call::UserRemove { name: n() },
            Call::UserSetRole {
                name: n(),
                role: n(),
            },
            Call::QuotaSet(QuotaSet {
                scope: QuotaScope::User(n()),
                envs: LimitChange::Keep,
                vcpus: LimitChange::Keep,
                memory_mb: LimitChange::Keep,
                disk_gb: LimitChange::Keep,
            }),
            Call::QuotaList,
            Call::AuditList {
                user: None,
                since: None,
                limit: 0,
            },
            Call::ReportUsage { since: None },
            Call::InstallerInfo,
            Call::CloudAdd(metrom_protocol::messages::api::CloudAccountSpec {
                name: n(),
                provider: "aws".into(),
                region: n(),
                profile: None,
                endpoint: None,
                subnet: None,
                security_group: None,
                key_name: None,
                image_map: Default::default(),
                verify: false,
            }),
            Call::CloudList,
            Call::CloudRemove { name: n() },
            Call::CloudSync,
            Call::CloudInstances,
            Call::CloudGc {
                instance_ids: vec![n()],
            },
        ]
    }

    #[test]
    fn reads_and_changes_agree_with_the_audit_rule() {
        for call in every_call() {
            let read = access(&call) == Access::Read;
            // Every change is audited; reads are not. TokenList, UserList and
            // InstallerInfo are admin-only reads, and so are the cloud accounts
            // and instances.
            let admin_read = matches!(
                call,
                Call::TokenList
                    | Call::UserList
                    | Call::InstallerInfo
                    | Call::CloudList
                    | Call::CloudInstances
            );
            assert_eq!(
                read || admin_read,
                !call.is_mutation(),
                "{}",
                crate::audit::describe(&call).0
            );
        }
    }

    #[test]
    fn each_role_gets_what_its_rule_says() {
        let who = |role| Caller {
            name: "u".into(),
            role,
        };
        for call in every_call() {
            let name = crate::audit::describe(&call).0;
            let (admin, dev, viewer) = (
                authorize(&who(Role::Admin), &call).is_ok(),
                authorize(&who(Role::Developer), &call).is_ok(),
                authorize(&who(Role::Viewer), &call).is_ok(),
            );
            let want = match access(&call) {
                Access::Read => (true, true, true),
                Access::Own => (true, true, false),
                Access::Admin => (true, false, false),
            };
            assert_eq!((admin, dev, viewer), want, "{name}");
        }
        let e = authorize(
            &who(Role::Viewer),
            &Call::EnvDelete {
                name: "x".into(),
                keep_data: false,
            },
        )
        .unwrap_err();
        assert!(
            e.message.contains("viewer and may only read"),
            "{}",
            e.message
        );
    }
}
