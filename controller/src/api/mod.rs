//! Request handlers for the CLI's calls. [`dispatch`] is the one place that
//! routes a call and checks the caller's role.

pub mod docker_archives;
mod envs;
mod hosts;
pub mod images;
pub mod templates;
mod tokens;

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

/// Routes one call. `recv` carries the bytes of uploads that follow their request.
pub async fn dispatch(
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
        Call::EnvCreate(req) => envs::create(ctrl, caller, req).await,
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
    }
}

/// Role check. Hosts and tokens are the operators' business.
fn authorize(caller: &Caller, call: &Call) -> Result<(), ApiError> {
    let admin_only = matches!(
        call,
        Call::HostCordon { .. }
            | Call::HostRevoke { .. }
            | Call::TokenCreate { .. }
            | Call::TokenList
            | Call::TokenRevoke { .. }
            | Call::ImageImport { .. }
            | Call::ImageDelete { .. }
            | Call::DockerArchiveImport { .. }
            | Call::DockerArchiveDelete { .. }
    );
    if admin_only && !caller.is_admin() {
        return Err(ApiError::denied(format!(
            "user {} ({}) may not do this: it needs the admin role",
            caller.name,
            caller.role.as_str()
        )));
    }
    if call.is_mutation() && caller.role == Role::Viewer {
        return Err(ApiError::denied(format!(
            "user {} is a viewer: read-only",
            caller.name
        )));
    }
    Ok(())
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
