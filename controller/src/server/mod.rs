//! The QUIC endpoint: accepts connections, sorts them by ALPN and identity, and
//! hands each to the join, agent-session or API handler. Errors caused by a
//! peer close that peer's stream or connection, never the process.

mod agent;
mod api;
mod join;
mod transfer;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrom_protocol::ids::Principal;
use metrom_protocol::tls::{Timing, cert_info, peer_certificate};
use metrom_protocol::{ALPN_JOIN, ALPN_MAIN, close};
use tracing::{debug, info, warn};

use crate::state::Controller;

pub(crate) use join::check_token;

/// How long a peer has to finish the handshake and send its first frame.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("TLS setup")]
    Tls(#[from] metrom_protocol::tls::TlsError),
    #[error("cannot listen on UDP {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the QUIC endpoint.
pub fn bind(ctrl: &Controller) -> Result<quinn::Endpoint, ServeError> {
    let timing = Timing {
        keep_alive: ctrl.config.heartbeat_interval,
        // Liveness is decided by heartbeats (see liveness_loop), not by QUIC's
        // idle timer; this only reaps connections whose peer vanished. It must
        // stay well above a slow request's duration and clients' keep-alive.
        idle_timeout: (ctrl.config.heartbeat_ttl + ctrl.config.heartbeat_interval)
            .max(Duration::from_secs(30)),
    };
    let cfg = metrom_protocol::tls::server_config(
        ctrl.pki.server_chain(),
        ctrl.pki.server_key(),
        ctrl.pki.ca_der(),
        ctrl.revoked.clone(),
        timing,
    )?;
    let addr = ctrl.config.listen;
    quinn::Endpoint::server(cfg, addr).map_err(|source| ServeError::Bind { addr, source })
}

/// Serves until `shutdown` completes, then closes every connection with a
/// reason and flushes the store.
pub async fn run(
    ctrl: Arc<Controller>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) {
    let liveness = tokio::spawn(liveness_loop(ctrl.clone()));
    let reconciler = tokio::spawn(crate::envs::reconcile::run(ctrl.clone()));
    let policies = tokio::spawn(crate::policy::task::run(ctrl.clone()));
    let cloud = tokio::spawn(crate::cloud::reconcile::run(ctrl.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => { tokio::spawn(handle(ctrl.clone(), incoming)); }
                None => break,
            },
            _ = &mut shutdown => break,
        }
    }
    info!("shutting down: closing connections");
    liveness.abort();
    reconciler.abort();
    policies.abort();
    cloud.abort();
    endpoint.close(close::SHUTDOWN, b"controller shutting down");
    // Record when every connected host was last seen before we go.
    for host in ctrl.sessions.connected() {
        if let Some(session) = ctrl.sessions.take(&host) {
            agent::record_disconnect(&ctrl, &host, session.address);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    if let Err(e) = ctrl.store.flush().await {
        warn!(error = %crate::error_chain(&e), "final store flush failed");
    }
    info!("stopped");
}

async fn handle(ctrl: Arc<Controller>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            info!(%remote, "refused connection: {e}");
            return;
        }
        Err(_) => {
            info!(%remote, "refused connection: handshake timed out");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|h| h.protocol);
    match alpn.as_deref() {
        Some(ALPN_JOIN) => join::serve(ctrl, conn).await,
        Some(ALPN_MAIN) => match authenticate(&ctrl, &conn) {
            Ok(Principal::Host(host)) => agent::serve(ctrl, conn, host).await,
            Ok(Principal::User(user)) => api::serve(ctrl, conn, user).await,
            Err(reason) => {
                info!(%remote, "refused connection: {reason}");
                conn.close(close::UNAUTHENTICATED, reason.as_bytes());
            }
        },
        _ => conn.close(close::PROTOCOL, b"unknown application protocol"),
    }
}

/// Who is on the other end of a `metrom/1` connection. The TLS layer has
/// already checked the chain, the validity period and the revocation list; here
/// the certificate must also belong to a current host or user.
fn authenticate(ctrl: &Controller, conn: &quinn::Connection) -> Result<Principal, String> {
    let cert = peer_certificate(conn)
        .ok_or("a client certificate is required (only joining is possible without one)")?;
    let info = cert_info(&cert).ok_or("unreadable client certificate")?;
    let serial = hex::encode(&info.serial);
    let principal = Principal::from_common_name(&info.common_name).ok_or_else(|| {
        format!(
            "certificate names no Metrom identity ('{}')",
            info.common_name
        )
    })?;
    let known = match &principal {
        Principal::Host(id) => ctrl
            .store
            .hosts
            .get(id.as_str())
            .map_err(|e| format!("store: {e}"))?
            .is_some_and(|h| !h.revoked() && h.cert_serials.contains(&serial)),
        Principal::User(name) => ctrl
            .store
            .users
            .get(name)
            .map_err(|e| format!("store: {e}"))?
            .is_some_and(|u| u.cert_serials.contains(&serial)),
    };
    if known {
        Ok(principal)
    } else {
        Err(format!(
            "{principal} is not (or no longer) known to this controller"
        ))
    }
}

/// Marks hosts whose heartbeats stopped as Unreachable by dropping their session.
async fn liveness_loop(ctrl: Arc<Controller>) {
    let ttl = ctrl.config.heartbeat_ttl;
    let tick = (ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    loop {
        interval.tick().await;
        for (host, session) in ctrl.sessions.expire(ttl, Instant::now()) {
            warn!(host_id = %host, "no heartbeat for {:?}: host is Unreachable", ttl);
            session
                .conn
                .close(close::HEARTBEAT_TIMEOUT, b"no heartbeat within the TTL");
            agent::record_disconnect(&ctrl, &host, session.address);
        }
    }
}

/// Logs the end of a connection at the right level.
fn log_connection_end(what: &str, err: &quinn::ConnectionError) {
    match err {
        quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::LocallyClosed => {
            debug!("{what} closed: {err}")
        }
        _ => info!("{what} ended: {err}"),
    }
}
