//! `metrom-agent run`: the link to the controller. Connects with the host's
//! certificate, says Hello, heartbeats, answers commands, renews its
//! certificate, and reconnects with exponential backoff and jitter whenever the
//! controller is away. Environments keep running meanwhile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use metrom_protocol::codec::{self, FrameError};
use metrom_protocol::identity::IdentityBundle;
use metrom_protocol::messages::agent::{
    AgentMessage, ControllerMessage, Hello, HelloReply, Welcome,
};
use metrom_protocol::tls::{Timing, cert_info};
use metrom_protocol::{CONTROLLER_SERVER_NAME, PROTOCOL_VERSION, close};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::AgentConfig;
use crate::enroll::{identity_path, key_and_csr};
use crate::facts::{self, LoadSampler};
use crate::link::Link;
use crate::work::Work;

/// A session shorter than this does not reset the backoff (a flapping link
/// must not turn into a reconnect storm).
const STABLE_SESSION: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS alert `certificate_revoked` as a QUIC crypto error.
const ALERT_CERTIFICATE_REVOKED: u8 = 44;
/// TLS alert `certificate_expired`.
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;

/// Why the agent stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "this host's certificate was revoked by the controller ({0}); the agent stops. To bring the box back, join again with a new token: metrom-agent join --force …"
    )]
    Revoked(String),
    #[error(transparent)]
    Identity(#[from] metrom_protocol::identity::IdentityError),
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("TLS setup")]
    Tls(#[from] metrom_protocol::tls::TlsError),
}

/// Why one session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Unreachable(String),
    #[error("controller refused the session: {0}")]
    Refused(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("revoked: {0}")]
    Revoked(String),
}

/// The running agent.
pub struct Agent {
    pub data_dir: PathBuf,
    pub config: AgentConfig,
    identity: Mutex<IdentityBundle>,
    pub work: Arc<Work>,
    /// The live connection, for runtimes that fetch images.
    pub link: Arc<Link>,
}

impl Agent {
    pub fn open(
        data_dir: &Path,
        config: AgentConfig,
        work: Arc<Work>,
        link: Arc<Link>,
    ) -> Result<Arc<Agent>, RunError> {
        let identity = IdentityBundle::load(&identity_path(data_dir))?;
        Ok(Arc::new(Agent {
            data_dir: data_dir.to_path_buf(),
            config,
            identity: Mutex::new(identity),
            work,
            link,
        }))
    }

    fn identity(&self) -> IdentityBundle {
        self.identity.lock().expect("identity lock").clone()
    }

    fn controller(&self) -> String {
        self.config
            .controller
            .clone()
            .unwrap_or_else(|| self.identity().controller)
    }

    fn host_id(&self) -> metrom_protocol::ids::HostId {
        match self.identity().principal() {
            Some(metrom_protocol::ids::Principal::Host(h)) => h,
            _ => panic!("identity checked at start to be a host identity"),
        }
    }
}

/// Runs until `shutdown` completes, or the host is revoked.
pub async fn run(
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    if !matches!(
        agent.identity().principal(),
        Some(metrom_protocol::ids::Principal::Host(_))
    ) {
        return Err(RunError::Revoked(
            "the identity file is not a host identity".into(),
        ));
    }
    tokio::pin!(shutdown);
    let bind: SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let endpoint = quinn::Endpoint::client(bind).map_err(RunError::Socket)?;
    let mut backoff = Backoff::new(Duration::from_millis(500), agent.config.max_backoff);
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&agent, &endpoint) => r,
            _ = &mut shutdown => {
                endpoint.close(close::NORMAL, b"agent stopping");
                let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
                info!("stopped");
                return Ok(());
            }
        };
        let err = match result {
            Err(SessionError::Revoked(reason)) => {
                error!("host revoked: {reason}");
                return Err(RunError::Revoked(reason));
            }
            Err(e) => e,
            Ok(()) => SessionError::Lost("session ended".into()),
        };
        if started.elapsed() > STABLE_SESSION {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        warn!(
            controller = %agent.controller(),
            "{err}; retrying in {:.1}s (attempt {})",
            delay.as_secs_f64(),
            backoff.attempt()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut shutdown => { info!("stopped"); return Ok(()); }
        }
    }
}

async fn session(agent: &Arc<Agent>, endpoint: &quinn::Endpoint) -> Result<(), SessionError> {
    let identity = agent.identity();
    let controller = agent.controller();
    let addr = tokio::net::lookup_host(&controller)
        .await
        .map_err(|e| {
            SessionError::Unreachable(format!(
                "controller address {controller} does not resolve: {e}"
            ))
        })?
        .next()
        .ok_or_else(|| {
            SessionError::Unreachable(format!("controller address {controller} does not resolve"))
        })?;
    let timing = Timing {
        keep_alive: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(60),
    };
    let cfg = metrom_protocol::tls::client_config(&identity, timing)
        .map_err(|e| SessionError::Unreachable(format!("TLS setup: {e}")))?;
    let connecting = endpoint
        .connect_with(cfg, addr, CONTROLLER_SERVER_NAME)
        .map_err(|e| SessionError::Unreachable(e.to_string()))?;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Err(_) => {
            return Err(SessionError::Unreachable(format!(
                "controller {addr} unreachable: no answer within 10s"
            )));
        }
        Ok(Err(e)) => return Err(classify(&e, addr)),
        Ok(Ok(c)) => c,
    };
    let max = codec::DEFAULT_MAX_FRAME;
    let lost = |e: &dyn std::fmt::Display| SessionError::Lost(e.to_string());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| classify(&e, addr))?;
    let mut host_facts = facts::gather(
        &agent.data_dir,
        &agent.config.libvirt_uri,
        &agent.config.docker_socket,
    )
    .await;
    host_facts.runtimes = agent.work.runtime_kinds();
    let hello = Hello {
        version: PROTOCOL_VERSION,
        host_id: agent.host_id(),
        facts: host_facts,
        environments: agent.work.reports(),
    };
    codec::write_message(&mut send, &hello, max)
        .await
        .map_err(|e| lost(&e))?;
    let reply = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        codec::read_message::<HelloReply, _>(&mut recv, max),
    )
    .await
    .map_err(|_| SessionError::Lost("no Welcome within 10s".into()))?;
    let welcome = match reply {
        Ok(Some(HelloReply::Welcome(w))) => w,
        Ok(Some(HelloReply::Refused { reason })) => return Err(SessionError::Refused(reason)),
        Ok(None) | Err(FrameError::Io(_)) => {
            return Err(conn
                .close_reason()
                .map(|e| classify(&e, addr))
                .unwrap_or_else(|| lost(&"control stream closed")));
        }
        Err(e) => return Err(lost(&e)),
    };
    info!(controller = %addr, "connected to the controller");

    // Everything written to the control stream goes through one channel.
    let (tx, mut rx) = mpsc::channel::<AgentMessage>(64);
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if codec::write_message(&mut send, &msg, max).await.is_err() {
                break;
            }
        }
    });
    agent.work.attach(tx.clone());
    agent.link.set(Some(conn.clone()));
    let mut pending_key = renew_if_due(agent, &welcome, &tx).await;

    let mut sampler = LoadSampler::new(&agent.data_dir);
    let mut activity = crate::activity::Sampler::default();
    let mut activity_tick = tokio::time::interval(agent.config.activity_interval);
    activity_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(100),
    ));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if tx.send(AgentMessage::Heartbeat(sampler.sample())).await.is_err() {
                    break Err(lost(&"control stream writer stopped"));
                }
                if pending_key.is_none() {
                    pending_key = renew_if_due(agent, &welcome, &tx).await;
                }
            }
            _ = activity_tick.tick() => {
                let readings = agent.work.activity_readings().await;
                let report = activity.round(readings, Instant::now());
                if !report.is_empty() && tx.send(AgentMessage::Activity(report)).await.is_err() {
                    break Err(lost(&"control stream writer stopped"));
                }
            }
            msg = codec::read_message::<ControllerMessage, _>(&mut recv, max) => match msg {
                Ok(Some(ControllerMessage::Certificate { cert_pem })) => {
                    if let Some(key_pem) = pending_key.take() {
                        store_renewed(agent, cert_pem, key_pem);
                    }
                }
                Ok(Some(ControllerMessage::RenewRefused { reason })) => {
                    pending_key = None;
                    warn!("certificate renewal refused: {reason}");
                }
                Ok(None) | Err(FrameError::Io(_)) => {
                    break Err(conn.close_reason().map(|e| classify(&e, addr)).unwrap_or_else(|| lost(&"control stream closed")));
                }
                Err(e) => {
                    conn.close(close::PROTOCOL, format!("protocol error: {e}").as_bytes());
                    break Err(lost(&e));
                }
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    let work = agent.work.clone();
                    tokio::spawn(async move { work.serve_command(send, recv).await });
                }
                Err(e) => break Err(classify(&e, addr)),
            },
        }
    };
    agent.work.detach();
    agent.link.set(None);
    writer.abort();
    result
}

/// Asks for a new certificate when the current one is in its last third.
async fn renew_if_due(
    agent: &Agent,
    welcome: &Welcome,
    tx: &mpsc::Sender<AgentMessage>,
) -> Option<String> {
    let info = cert_info(&agent.identity().cert_der())?;
    let left = info.not_after.duration_since(Timestamp::now());
    if left.as_millis() > welcome.renew_before_ms as i128 {
        return None;
    }
    info!("host certificate expires at {}: renewing", info.not_after);
    let (key_pem, csr_pem) = match key_and_csr(&agent.host_id().to_string()) {
        Ok(k) => k,
        Err(e) => {
            warn!("cannot generate a key for renewal: {e}");
            return None;
        }
    };
    tx.send(AgentMessage::RenewCertificate { csr_pem })
        .await
        .ok()?;
    Some(key_pem)
}

fn store_renewed(agent: &Agent, cert_pem: String, key_pem: String) {
    let mut identity = agent.identity.lock().expect("identity lock");
    let mut next = identity.clone();
    next.cert = cert_pem;
    next.key = key_pem;
    match next.save(&identity_path(&agent.data_dir)) {
        Ok(()) => {
            info!("renewed host certificate saved; it is used from the next connection");
            *identity = next;
        }
        Err(e) => warn!("could not save the renewed certificate: {e}"),
    }
}

/// Sorts a connection error into "try again" and "stop for good".
fn classify(e: &quinn::ConnectionError, addr: SocketAddr) -> SessionError {
    use quinn::ConnectionError as C;
    match e {
        C::ApplicationClosed(c) if c.error_code == close::REVOKED => {
            SessionError::Revoked(String::from_utf8_lossy(&c.reason).into_owned())
        }
        C::ApplicationClosed(c) if c.error_code == close::SHUTDOWN => {
            SessionError::Lost(format!("controller {addr} is shutting down"))
        }
        C::ApplicationClosed(c) => SessionError::Lost(format!(
            "controller {addr} closed the connection: {}",
            String::from_utf8_lossy(&c.reason)
        )),
        C::TransportError(t) if t.code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_REVOKED) => {
            SessionError::Revoked("the controller refuses this host's certificate as revoked".into())
        }
        C::TransportError(t) if t.code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_EXPIRED) => {
            SessionError::Refused(
                "this host's certificate has expired; join again with a new token (metrom-agent join --force …)".into(),
            )
        }
        C::ConnectionClosed(c) => {
            let reason = String::from_utf8_lossy(&c.reason).into_owned();
            if c.error_code == quinn::TransportErrorCode::crypto(ALERT_CERTIFICATE_REVOKED) {
                SessionError::Revoked(reason)
            } else {
                SessionError::Refused(format!("controller {addr} closed the connection: {} {reason}", c.error_code))
            }
        }
        C::TimedOut => SessionError::Unreachable(format!("controller {addr} unreachable (timed out)")),
        other => {
            debug!("connection error: {other:?}");
            SessionError::Unreachable(format!("controller {addr}: {other}"))
        }
    }
}
