//! rustls configurations for QUIC, all on the ring provider (one provider in the
//! whole workspace), TLS 1.3 only, zero-RTT off.
//!
//! - The controller accepts clients with a certificate from its CA (checked
//!   against a live revocation list) and, on the join ALPN only, clients without one.
//! - Agents and the CLI verify the controller against the CA in their identity.
//! - A joining agent has only the CA's pin: [`PinnedCaVerifier`] accepts the
//!   controller only if its chain carries a CA whose SHA-256 is the pin and the
//!   server certificate is signed by it. This runs inside the handshake, before
//!   any application byte is sent.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::identity::IdentityBundle;
use crate::token::CaPin;
use crate::{ALPN_JOIN, ALPN_MAIN};

/// The one crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider, so no library can pick
/// another at runtime. Safe to call more than once.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC does not accept this TLS configuration")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    #[error("timeout out of range for QUIC")]
    Timeout(#[from] quinn::VarIntBoundsExceeded),
}

/// QUIC transport timing shared by both sides.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

fn transport(timing: Timing) -> Result<Arc<quinn::TransportConfig>, TlsError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(timing.keep_alive));
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(timing.idle_timeout)?));
    // A CLI request or a command each use one stream; allow plenty at once.
    t.max_concurrent_bidi_streams(256u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    Ok(Arc::new(t))
}

/// Serial numbers of revoked certificates, consulted on every handshake.
#[derive(Debug, Default)]
pub struct RevocationList {
    serials: RwLock<HashSet<Vec<u8>>>,
}

impl RevocationList {
    pub fn new(serials: impl IntoIterator<Item = Vec<u8>>) -> RevocationList {
        RevocationList {
            serials: RwLock::new(serials.into_iter().collect()),
        }
    }

    pub fn revoke(&self, serial: Vec<u8>) {
        self.serials
            .write()
            .expect("revocation list lock")
            .insert(serial);
    }

    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        self.serials
            .read()
            .expect("revocation list lock")
            .contains(serial)
    }
}

/// The controller's QUIC server configuration.
///
/// `chain` must be `[server certificate, CA certificate]` so that joining agents
/// can find the pinned CA in it.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    revoked: Arc<RevocationList>,
    timing: Timing,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca)?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(RevocationAwareVerifier { inner, revoked });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN_MAIN.to_vec(), ALPN_JOIN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(transport(timing)?);
    Ok(cfg)
}

/// mTLS client configuration from an identity bundle (agents and the CLI).
pub fn client_config(
    identity: &IdentityBundle,
    timing: Timing,
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca_der())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![identity.cert_der()], identity.key_der())?;
    tls.alpn_protocols = vec![ALPN_MAIN.to_vec()];
    tls.enable_early_data = false;
    quic_client(tls, timing)
}

/// Client configuration for joining: no client certificate, the controller
/// checked against a CA pin. The verifier's verdict is left in `verdict` so the
/// agent can say exactly why a handshake failed.
pub fn join_client_config(
    pin: CaPin,
    verdict: Arc<Mutex<Option<String>>>,
    timing: Timing,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier {
        pin,
        provider: provider.clone(),
        verdict,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_JOIN.to_vec()];
    tls.enable_early_data = false;
    quic_client(tls, timing)
}

fn quic_client(tls: rustls::ClientConfig, timing: Timing) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(transport(timing)?);
    Ok(cfg)
}

/// What the controller reads from a peer's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub serial: Vec<u8>,
    pub not_before: Timestamp,
    pub not_after: Timestamp,
}

/// Parses the fields Metrom uses from a DER certificate.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let validity = cert.validity();
    Some(CertInfo {
        common_name,
        serial: cert.raw_serial().to_vec(),
        not_before: Timestamp::from_second(validity.not_before.timestamp()).ok()?,
        not_after: Timestamp::from_second(validity.not_after.timestamp()).ok()?,
    })
}

/// The end-entity certificate a QUIC peer presented, if any.
pub fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let identity = conn.peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.first().cloned()
}

/// Client certificate verification: the CA's chain (webpki), then the
/// controller's revocation list.
#[derive(Debug)]
struct RevocationAwareVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    revoked: Arc<RevocationList>,
}

impl ClientCertVerifier for RevocationAwareVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // The join ALPN runs without a certificate; the main ALPN checks for one
        // right after the handshake and closes the connection without it.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let info = cert_info(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        if self.revoked.is_revoked(&info.serial) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies a controller against a join token's CA pin.
#[derive(Debug)]
pub struct PinnedCaVerifier {
    pin: CaPin,
    provider: Arc<CryptoProvider>,
    verdict: Arc<Mutex<Option<String>>>,
}

impl PinnedCaVerifier {
    fn refuse(&self, why: String) -> rustls::Error {
        *self.verdict.lock().expect("verdict lock") = Some(why.clone());
        rustls::Error::General(why)
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| CaPin::of_der(c) == self.pin) else {
            let offered: Vec<String> = intermediates
                .iter()
                .map(|c| CaPin::of_der(c).to_hex())
                .collect();
            return Err(self.refuse(format!(
                "the controller's CA does not match the token's pin: expected sha256 {}, the controller \
                 presented {}; this is not the controller that issued the token (or the token is for another cluster)",
                self.pin,
                if offered.is_empty() { "no CA certificate".to_string() } else { offered.join(", ") }
            )));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| self.refuse(format!("pinned CA unusable: {e}")))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| self.refuse(format!("pinned CA unusable: {e}")))?;
        webpki
            .verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
            .map_err(|e| {
                self.refuse(format!(
                    "the controller's certificate is not valid under the pinned CA: {e}"
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
