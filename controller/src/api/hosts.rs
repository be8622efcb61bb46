//! host list / show / cordon / revoke.

use jiff::Timestamp;
use metrom_protocol::close;
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::api::{ApiError, ApiResponse, HostView, Reply};
use tracing::info;

use super::{durable, store_err};
use crate::hosts::host_view;
use crate::state::Controller;
use crate::store::{HostRecord, RevokedCert};

pub(super) fn list(ctrl: &Controller) -> ApiResponse {
    let hosts = ctrl.store.hosts.list().map_err(store_err)?;
    Ok(Reply::Hosts(
        hosts.iter().map(|(_, h)| view(ctrl, h)).collect(),
    ))
}

pub(super) fn show(ctrl: &Controller, id: &HostId) -> ApiResponse {
    Ok(Reply::Host(view(ctrl, &get(ctrl, id)?)))
}

pub(super) async fn cordon(ctrl: &Controller, id: &HostId, cordon: bool) -> ApiResponse {
    let res = ctrl
        .store
        .hosts
        .update(id.as_str(), |rec| match rec {
            Some(mut h) => {
                h.cordoned = cordon;
                Ok(Some(h))
            }
            None => Err(not_found(id)),
        })
        .map_err(store_err)?;
    res?;
    durable(ctrl).await?;
    let verb = if cordon {
        "cordoned: it keeps its environments and gets no new ones"
    } else {
        "uncordoned"
    };
    Ok(Reply::Done {
        message: format!("host {id} {verb}"),
    })
}

/// Revokes every certificate of the host, closes its live connection at once,
/// and refuses its later handshakes.
pub(super) async fn revoke(ctrl: &Controller, id: &HostId) -> ApiResponse {
    let now = Timestamp::now();
    let res = ctrl
        .store
        .hosts
        .update(id.as_str(), |rec| match rec {
            Some(h) if h.revoked() => Err(ApiError::precondition(format!(
                "host {id} is already revoked"
            ))),
            Some(mut h) => {
                h.revoked_at = Some(now);
                if ctrl.sessions.is_connected(id) {
                    h.last_seen = Some(now);
                }
                Ok(Some(h))
            }
            None => Err(not_found(id)),
        })
        .map_err(store_err)?;
    let host = res?.expect("updated record");
    for serial in &host.cert_serials {
        let cert = RevokedCert {
            principal: format!("host:{id}"),
            revoked_at: now,
            not_after: host.cert_not_after,
        };
        ctrl.store.revoked.put(serial, &cert).map_err(store_err)?;
    }
    durable(ctrl).await?;
    for serial in &host.cert_serials {
        if let Ok(bytes) = hex::decode(serial) {
            ctrl.revoked.revoke(bytes);
        }
    }
    if let Some(session) = ctrl.sessions.take(id) {
        session.conn.close(
            close::REVOKED,
            b"this host's certificate was revoked by an operator",
        );
    }
    info!(host_id = %id, "host revoked");
    Ok(Reply::Done {
        message: format!(
            "host {id} revoked: its connection is closed and its certificate refused; to bring the box back, join it again with a new token"
        ),
    })
}

fn get(ctrl: &Controller, id: &HostId) -> Result<HostRecord, ApiError> {
    ctrl.store
        .hosts
        .get(id.as_str())
        .map_err(store_err)?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &HostId) -> ApiError {
    ApiError::not_found(format!("no host {id}; see `metrom host list`"))
}

fn view(ctrl: &Controller, h: &HostRecord) -> HostView {
    let (allocated, count) = ctrl.envs.allocation(&h.id);
    host_view(h, ctrl.sessions.live(&h.id), allocated, count)
}
