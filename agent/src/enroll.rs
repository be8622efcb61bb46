//! `metrom-agent join`: enroll this host with a one-shot token.
//!
//! The key is generated here and never leaves the host: the controller gets a
//! CSR. The controller's certificate chain is checked against the token's CA
//! pin inside the TLS handshake, before the secret or the CSR is sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrom_protocol::codec;
use metrom_protocol::identity::{IdentityBundle, IdentityError};
use metrom_protocol::ids::{HostId, Principal};
use metrom_protocol::messages::join::{JoinRequest, JoinResponse};
use metrom_protocol::tls::Timing;
use metrom_protocol::token::{CaPin, JoinToken, TokenParseError};
use metrom_protocol::{CONTROLLER_SERVER_NAME, PROTOCOL_VERSION};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

const JOIN_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_FRAME: usize = 64 * 1024;

/// The identity file inside an agent's data directory.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join("identity.toml")
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    Token(#[from] TokenParseError),
    #[error(
        "{path} already holds the identity of host {host}; use --force to enroll again (then revoke the old host with `metrom host revoke {host}`)"
    )]
    AlreadyEnrolled { path: PathBuf, host: String },
    #[error("controller address '{0}' does not resolve")]
    Resolve(String, #[source] std::io::Error),
    #[error("cannot open a UDP socket")]
    Socket(#[source] std::io::Error),
    #[error("refusing to join: {0}")]
    Pin(String),
    #[error("cannot reach the controller at {addr}: no answer within {secs}s; check the address and that UDP port {port} is open", secs = JOIN_TIMEOUT.as_secs(), port = addr.port())]
    Timeout { addr: SocketAddr },
    #[error("connection to the controller at {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error("the controller refused the join: {0}")]
    Refused(String),
    #[error("the controller's answer is not valid: {0}")]
    BadAnswer(String),
    #[error("key generation")]
    Key(#[from] rcgen::Error),
    #[error("TLS setup")]
    Tls(#[from] metrom_protocol::tls::TlsError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// What a successful join produced.
#[derive(Debug, Clone)]
pub struct Joined {
    pub host_id: HostId,
    pub identity_path: PathBuf,
}

/// A fresh private key and a CSR for it, as PEM.
pub fn key_and_csr(common_name: &str) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Enrolls this host; writes its identity into `data_dir` only on success.
pub async fn join(
    controller: &str,
    token: &str,
    data_dir: &Path,
    hostname: &str,
    force: bool,
) -> Result<Joined, JoinError> {
    let token = JoinToken::parse(token)?;
    let path = identity_path(data_dir);
    if path.exists() && !force {
        let host = IdentityBundle::load(&path)
            .map(|b| b.principal)
            .unwrap_or_else(|_| "unknown".into());
        return Err(JoinError::AlreadyEnrolled { path, host });
    }
    let (key_pem, csr_pem) = key_and_csr(hostname)?;
    let request = JoinRequest {
        version: PROTOCOL_VERSION,
        token_id: token.id.clone(),
        secret: token.secret.clone(),
        csr_pem,
        hostname: hostname.to_string(),
    };
    let accepted = exchange(controller, token.ca_pin, &request).await?;

    // Defence in depth: the CA we are given must be the one we pinned.
    let bundle = IdentityBundle {
        controller: controller.to_string(),
        principal: Principal::Host(accepted.host_id.clone()).common_name(),
        ca_cert: accepted.ca_pem,
        cert: accepted.cert_pem,
        key: key_pem,
    };
    let ca_ok = rustls::pki_types::pem::PemObject::from_pem_slice(bundle.ca_cert.as_bytes())
        .map(|der: rustls::pki_types::CertificateDer<'_>| CaPin::of_der(&der) == token.ca_pin)
        .unwrap_or(false);
    if !ca_ok {
        return Err(JoinError::BadAnswer(
            "the CA it sent does not match the token's pin".into(),
        ));
    }
    bundle.save(&path)?;
    Ok(Joined {
        host_id: accepted.host_id,
        identity_path: path,
    })
}

/// One join exchange over QUIC; the same code serves `metrom-bench`.
pub async fn exchange(
    controller: &str,
    pin: CaPin,
    request: &JoinRequest,
) -> Result<metrom_protocol::messages::join::JoinAccepted, JoinError> {
    let addr = tokio::net::lookup_host(controller)
        .await
        .map_err(|e| JoinError::Resolve(controller.to_string(), e))?
        .next()
        .ok_or_else(|| {
            JoinError::Resolve(controller.to_string(), std::io::Error::other("no address"))
        })?;
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0".parse().expect("addr")
    } else {
        "0.0.0.0:0".parse().expect("addr")
    };
    let verdict = Arc::new(Mutex::new(None));
    let mut endpoint = quinn::Endpoint::client(bind).map_err(JoinError::Socket)?;
    endpoint.set_default_client_config(metrom_protocol::tls::join_client_config(
        pin,
        verdict.clone(),
        Timing::default(),
    )?);
    let result = async {
        let connecting = endpoint
            .connect(addr, CONTROLLER_SERVER_NAME)
            .map_err(|e| JoinError::Connect {
                addr,
                reason: e.to_string(),
            })?;
        let conn = match tokio::time::timeout(JOIN_TIMEOUT, connecting).await {
            Err(_) | Ok(Err(quinn::ConnectionError::TimedOut)) => {
                return Err(JoinError::Timeout { addr });
            }
            Ok(Err(e)) => {
                if let Some(why) = verdict.lock().expect("verdict lock").take() {
                    return Err(JoinError::Pin(why));
                }
                return Err(JoinError::Connect {
                    addr,
                    reason: e.to_string(),
                });
            }
            Ok(Ok(c)) => c,
        };
        let answer = async {
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| JoinError::Connect {
                addr,
                reason: e.to_string(),
            })?;
            codec::write_message(&mut send, request, MAX_FRAME)
                .await
                .map_err(|e| JoinError::Connect {
                    addr,
                    reason: e.to_string(),
                })?;
            let _ = send.finish();
            codec::read_message::<JoinResponse, _>(&mut recv, MAX_FRAME)
                .await
                .map_err(|e| match conn.close_reason() {
                    Some(reason) => JoinError::Refused(reason.to_string()),
                    None => JoinError::BadAnswer(e.to_string()),
                })?
                .ok_or_else(|| JoinError::BadAnswer("no answer".into()))
        };
        let answer = tokio::time::timeout(JOIN_TIMEOUT, answer)
            .await
            .map_err(|_| JoinError::Timeout { addr })?;
        conn.close(metrom_protocol::close::NORMAL, b"joined");
        match answer? {
            JoinResponse::Accepted(a) => Ok(a),
            JoinResponse::Refused(r) => Err(JoinError::Refused(r.reason)),
        }
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    result
}
