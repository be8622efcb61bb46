//! The controller's side of an agent session: Hello/Welcome on the control
//! stream, then heartbeats, status reports and certificate renewal.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use metrom_protocol::codec::{self, FrameError};
use metrom_protocol::ids::{HostId, Principal};
use metrom_protocol::messages::agent::{
    AgentMessage, ControllerMessage, Hello, HelloReply, Welcome,
};
use metrom_protocol::{PROTOCOL_VERSION, check_version, close};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

use super::FIRST_FRAME_TIMEOUT;
use crate::state::Controller;

pub(super) async fn serve(ctrl: Arc<Controller>, conn: quinn::Connection, host: HostId) {
    let span = tracing::info_span!("agent", host_id = %host);
    run(ctrl, conn, host).instrument(span).await
}

async fn run(ctrl: Arc<Controller>, conn: quinn::Connection, host: HostId) {
    let max = ctrl.config.max_frame_bytes;
    let (mut send, mut recv) =
        match tokio::time::timeout(FIRST_FRAME_TIMEOUT, conn.accept_bi()).await {
            Ok(Ok(s)) => s,
            _ => {
                conn.close(close::PROTOCOL, b"expected a control stream with Hello");
                return;
            }
        };
    let hello = match read_hello(&mut recv, max).await {
        Ok(h) => h,
        Err(HelloError::Frame(e)) => {
            info!("bad Hello: {e}");
            conn.close(close::PROTOCOL, format!("bad Hello: {e}").as_bytes());
            return;
        }
        Err(HelloError::Refuse(reason)) => {
            info!("refused Hello: {reason}");
            let _ = codec::write_message(
                &mut send,
                &HelloReply::Refused {
                    reason: reason.clone(),
                },
                max,
            )
            .await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
            conn.close(close::PROTOCOL, reason.as_bytes());
            return;
        }
    };
    if hello.host_id != host {
        let reason = format!(
            "Hello names host {} but the certificate is for {host}",
            hello.host_id
        );
        conn.close(close::PROTOCOL, reason.as_bytes());
        return;
    }
    if let Err(e) = record_hello(&ctrl, &host, &hello, &conn) {
        warn!("could not record Hello: {}", crate::error_chain(&e));
        conn.close(close::SHUTDOWN, b"controller store failure; retry later");
        return;
    }

    let (control_tx, mut control_rx) = mpsc::channel::<ControllerMessage>(16);
    let (session, replaced) = ctrl.sessions.register(&host, conn.clone(), control_tx);
    if let Some(old) = replaced {
        old.conn.close(
            close::REPLACED,
            b"replaced by a newer session of the same host",
        );
    }
    let welcome = HelloReply::Welcome(Welcome {
        version: PROTOCOL_VERSION,
        heartbeat_interval_ms: ctrl.config.heartbeat_interval.as_millis() as u64,
        heartbeat_ttl_ms: ctrl.config.heartbeat_ttl.as_millis() as u64,
        renew_before_ms: (ctrl.config.host_cert_validity / 3).as_millis() as u64,
    });
    if codec::write_message(&mut send, &welcome, max)
        .await
        .is_err()
    {
        ctrl.sessions.remove(&host, session);
        return;
    }
    info!(address = %conn.remote_address(), agent = %hello.facts.agent_version, "agent connected: host Ready");
    crate::envs::reports::host_connected(&ctrl, &host, hello.environments);

    // The agent's own requests (image transfers) arrive on streams it opens.
    let requests = tokio::spawn(super::transfer::serve(
        ctrl.clone(),
        conn.clone(),
        host.clone(),
    ));

    // Writer: ControllerMessages onto the control stream.
    let writer = tokio::spawn(async move {
        while let Some(msg) = control_rx.recv().await {
            if codec::write_message(&mut send, &msg, max).await.is_err() {
                break;
            }
        }
    });

    let end = loop {
        match codec::read_message::<AgentMessage, _>(&mut recv, max).await {
            Ok(Some(msg)) => {
                if !handle_message(&ctrl, &host, session, msg).await {
                    break "session replaced".to_string();
                }
            }
            Ok(None) => break "agent closed its control stream".to_string(),
            Err(FrameError::Io(e)) => break format!("{e}"),
            Err(e) => {
                // A broken frame from the peer ends this connection only.
                warn!("protocol error on control stream: {e}");
                conn.close(close::PROTOCOL, format!("protocol error: {e}").as_bytes());
                break format!("protocol error: {e}");
            }
        }
    };
    writer.abort();
    requests.abort();
    if let Some(s) = ctrl.sessions.remove(&host, session) {
        info!("agent disconnected ({end}): host Unreachable");
        record_disconnect(&ctrl, &host, s.address);
    } else {
        debug!("old session ended ({end})");
    }
}

enum HelloError {
    Frame(FrameError),
    Refuse(String),
}

async fn read_hello(recv: &mut quinn::RecvStream, max: usize) -> Result<Hello, HelloError> {
    let frame = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, codec::read_frame(recv, max)).await
    {
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => {
            return Err(HelloError::Refuse(
                "the control stream ended before Hello".into(),
            ));
        }
        Ok(Err(e)) => return Err(HelloError::Frame(e)),
        Err(_) => return Err(HelloError::Refuse("no Hello within 10s".into())),
    };
    let version = codec::peek_version(&frame).map_err(HelloError::Frame)?;
    check_version(version).map_err(|e| HelloError::Refuse(e.to_string()))?;
    codec::decode::<Hello>(&frame).map_err(HelloError::Frame)
}

/// Returns false when the session is no longer current (and should end).
async fn handle_message(
    ctrl: &Arc<Controller>,
    host: &HostId,
    session: u64,
    msg: AgentMessage,
) -> bool {
    match msg {
        AgentMessage::Heartbeat(load) => return ctrl.sessions.heartbeat(host, session, load),
        AgentMessage::EnvStatus(report) => crate::envs::reports::env_report(ctrl, host, report),
        AgentMessage::Activity(activity) => crate::envs::reports::activity(ctrl, host, activity),
        AgentMessage::RenewCertificate { csr_pem } => {
            let reply = match renew(ctrl, host, &csr_pem).await {
                Ok(cert_pem) => {
                    info!("renewed host certificate");
                    ControllerMessage::Certificate { cert_pem }
                }
                Err(reason) => {
                    warn!("certificate renewal refused: {reason}");
                    ControllerMessage::RenewRefused { reason }
                }
            };
            if let Some(tx) = ctrl.sessions.control(host, session) {
                let _ = tx.send(reply).await;
            }
        }
    }
    true
}

async fn renew(ctrl: &Controller, host: &HostId, csr_pem: &str) -> Result<String, String> {
    let issued = ctrl
        .pki
        .issue_for_csr(
            csr_pem,
            &Principal::Host(host.clone()),
            ctrl.config.host_cert_validity,
        )
        .map_err(|e| crate::error_chain(&e))?;
    let updated = ctrl
        .store
        .hosts
        .update(host.as_str(), |rec| match rec {
            Some(mut rec) if !rec.revoked() => {
                rec.cert_serials.push(issued.serial_hex.clone());
                // Keep the last few: older certificates have expired or will soon.
                if rec.cert_serials.len() > 4 {
                    rec.cert_serials.remove(0);
                }
                rec.cert_not_after = issued.not_after;
                Ok(Some(rec))
            }
            _ => Err("host is revoked or unknown".to_string()),
        })
        .map_err(|e| crate::error_chain(&e))?;
    updated?;
    ctrl.store
        .flush()
        .await
        .map_err(|e| crate::error_chain(&e))?;
    Ok(issued.cert_pem)
}

/// Stores the facts of a Hello if they changed (a reconnect with the same facts
/// costs no write).
fn record_hello(
    ctrl: &Controller,
    host: &HostId,
    hello: &Hello,
    conn: &quinn::Connection,
) -> Result<(), crate::store::StoreError> {
    let address = conn.remote_address().to_string();
    ctrl.store
        .hosts
        .update(host.as_str(), |rec| {
            let Some(mut rec) = rec else { return Err(()) };
            if rec.facts == hello.facts && rec.last_address.as_deref() == Some(address.as_str()) {
                return Err(());
            }
            rec.facts = hello.facts.clone();
            rec.last_address = Some(address.clone());
            Ok(Some(rec))
        })
        .map(|_| ())
}

/// Records when a host was last seen; a transition, not a heartbeat.
pub(super) fn record_disconnect(ctrl: &Controller, host: &HostId, address: std::net::SocketAddr) {
    let now = Timestamp::now();
    let res = ctrl.store.hosts.update(host.as_str(), |rec| {
        let Some(mut rec) = rec else { return Err(()) };
        rec.last_seen = Some(now);
        rec.last_address = Some(address.to_string());
        Ok(Some(rec))
    });
    if let Err(e) = res {
        warn!(host_id = %host, "could not record last-seen time: {}", crate::error_chain(&e));
    }
    crate::envs::reports::host_disconnected(ctrl, host);
}
