//! The cluster's certificate authority: created by `metrom-controller init`,
//! it issues the controller's server certificate, agents' host certificates
//! (from CSRs — agents' keys never leave their hosts) and users' certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use metrom_protocol::CONTROLLER_SERVER_NAME;
use metrom_protocol::identity::{create_private_dir, write_private_file};
use metrom_protocol::ids::Principal;
use metrom_protocol::token::CaPin;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";

/// Validity of the CA certificate.
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// Validity of the controller's server certificate.
const SERVER_VALIDITY: Duration = Duration::from_secs(5 * 365 * 86_400);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what}")]
    Invalid { path: PathBuf, what: &'static str },
    #[error("certificate generation")]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "the certificate signing request is not valid ({0}); the agent must send a PEM CSR signed by its key"
    )]
    BadCsr(rcgen::Error),
    #[error("'{0}' is not a valid DNS name or IP address for the certificate")]
    BadSan(String),
}

/// A certificate the CA issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// Hex of the serial number, as stored in the revocation list.
    pub serial_hex: String,
    pub not_after: Timestamp,
}

/// The CA, loaded from the controller's data directory.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    server_cert_der: CertificateDer<'static>,
    server_key_pem: String,
}

impl Pki {
    /// The folder holding the CA inside a data directory.
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("pki")
    }

    /// Whether a data directory already holds a CA.
    pub fn exists(data_dir: &Path) -> bool {
        Self::dir_in(data_dir).join(CA_KEY).exists()
    }

    /// Creates a new CA and server certificate in `data_dir/pki`.
    ///
    /// `sans` are the names and addresses the server certificate is valid for,
    /// besides [`CONTROLLER_SERVER_NAME`].
    pub fn create(data_dir: &Path, cluster_name: &str, sans: &[String]) -> Result<Pki, PkiError> {
        let dir = Self::dir_in(data_dir);
        create_private_dir(&dir).map_err(|source| PkiError::Write {
            path: dir.clone(),
            source,
        })?;
        let now = Timestamp::now();

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = dn(&format!("Metrom CA {cluster_name}"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca_params, now, CA_VALIDITY);
        ca_params.serial_number = Some(random_serial().0);
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();

        let server_key = KeyPair::generate()?;
        let mut names = vec![
            CONTROLLER_SERVER_NAME.to_string(),
            "localhost".into(),
            "127.0.0.1".into(),
        ];
        for s in sans {
            if !names.contains(s) {
                names.push(s.clone());
            }
        }
        let mut server_params = CertificateParams::default();
        server_params.subject_alt_names = names
            .iter()
            .map(|n| san(n))
            .collect::<Result<Vec<_>, _>>()?;
        server_params.distinguished_name = dn("Metrom controller");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.use_authority_key_identifier_extension = true;
        set_validity(&mut server_params, now, SERVER_VALIDITY);
        server_params.serial_number = Some(random_serial().0);
        let issuer = Issuer::new(ca_params, ca_key);
        let server_cert = server_params.signed_by(&server_key, &issuer)?;

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            write_private_file(&path, text.as_bytes())
                .map_err(|source| PkiError::Write { path, source })
        };
        write(CA_CERT, &ca_pem)?;
        write(CA_KEY, &issuer.key().serialize_pem())?;
        write(SERVER_CERT, &server_cert.pem())?;
        write(SERVER_KEY, &server_key.serialize_pem())?;
        Self::load(data_dir)
    }

    /// Loads the CA from `data_dir/pki`.
    pub fn load(data_dir: &Path) -> Result<Pki, PkiError> {
        let dir = Self::dir_in(data_dir);
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PkiError::Read { path, source })
        };
        let invalid = |name: &str, what| PkiError::Invalid {
            path: dir.join(name),
            what,
        };
        let ca_pem = read(CA_CERT)?;
        let ca_key =
            KeyPair::from_pem(&read(CA_KEY)?).map_err(|_| invalid(CA_KEY, "private key"))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
            .map_err(|_| invalid(CA_CERT, "CA certificate"))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|_| invalid(CA_CERT, "certificate"))?;
        let server_cert_der = CertificateDer::from_pem_slice(read(SERVER_CERT)?.as_bytes())
            .map_err(|_| invalid(SERVER_CERT, "certificate"))?;
        let server_key_pem = read(SERVER_KEY)?;
        PrivateKeyDer::from_pem_slice(server_key_pem.as_bytes())
            .map_err(|_| invalid(SERVER_KEY, "private key"))?;
        Ok(Pki {
            dir,
            ca_pem,
            ca_der,
            issuer,
            server_cert_der,
            server_key_pem,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    pub fn ca_pin(&self) -> CaPin {
        CaPin::of_der(&self.ca_der)
    }

    /// `[server certificate, CA certificate]`: the CA is sent so that joining
    /// agents can check it against their token's pin.
    pub fn server_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.server_cert_der.clone(), self.ca_der.clone()]
    }

    pub fn server_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("checked at load")
    }

    pub fn server_cert_der(&self) -> CertificateDer<'static> {
        self.server_cert_der.clone()
    }

    /// Signs a certificate for `principal` over the public key of a CSR. Nothing
    /// else from the CSR is used: names, usages and validity are ours.
    pub fn issue_for_csr(
        &self,
        csr_pem: &str,
        principal: &Principal,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let (params, serial_hex, not_after) = client_params(principal, Timestamp::now(), validity);
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)?;
        Ok(Issued {
            cert_pem: signed.pem(),
            serial_hex,
            not_after,
        })
    }

    /// Issues a certificate and a fresh key for `principal` (user identity
    /// bundles, which the operator hands over). Returns the key's PEM too.
    pub fn issue_with_key(
        &self,
        principal: &Principal,
        validity: Duration,
    ) -> Result<(Issued, String), PkiError> {
        self.issue_with_key_at(principal, Timestamp::now(), validity)
    }

    /// As [`Pki::issue_with_key`], valid from `not_before` (tests make expired ones).
    pub fn issue_with_key_at(
        &self,
        principal: &Principal,
        not_before: Timestamp,
        validity: Duration,
    ) -> Result<(Issued, String), PkiError> {
        let key = KeyPair::generate()?;
        let (params, serial_hex, not_after) = client_params(principal, not_before, validity);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((
            Issued {
                cert_pem: cert.pem(),
                serial_hex,
                not_after,
            },
            key.serialize_pem(),
        ))
    }
}

fn client_params(
    principal: &Principal,
    not_before: Timestamp,
    validity: Duration,
) -> (CertificateParams, String, Timestamp) {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(&principal.common_name());
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    let not_after = set_validity(&mut params, not_before, validity);
    let (serial, serial_hex) = random_serial();
    params.serial_number = Some(serial);
    (params, serial_hex, not_after)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, "Metrom");
    dn
}

fn san(name: &str) -> Result<SanType, PkiError> {
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    name.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| PkiError::BadSan(name.to_string()))
}

/// Valid from a minute before `from` (clock skew) for `validity`; returns the end.
fn set_validity(params: &mut CertificateParams, from: Timestamp, validity: Duration) -> Timestamp {
    let start = from.as_second() - 60;
    let end = from.as_second().saturating_add(validity.as_secs() as i64);
    params.not_before = time::OffsetDateTime::from_unix_timestamp(start).expect("valid time");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(end).expect("valid time");
    Timestamp::from_second(end).expect("valid time")
}

/// 16 random bytes, first byte in 1..=0x7f so the DER integer is positive and
/// encodes without padding (the raw serial a peer sees equals these bytes).
fn random_serial() -> (SerialNumber, String) {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f).max(1);
    (SerialNumber::from_slice(&bytes), hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrom_protocol::ids::HostId;
    use metrom_protocol::tls::cert_info;

    #[test]
    fn issues_host_certificates_from_csrs_only_with_our_fields() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path(), "test", &["ctl.example".into()]).unwrap();
        let again = Pki::load(dir.path()).unwrap();
        assert_eq!(pki.ca_pin(), again.ca_pin());

        // The CSR asks for a different name: it is ignored.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn("user:root");
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let host = Principal::Host(HostId::generate());
        let issued = pki
            .issue_for_csr(&csr, &host, Duration::from_secs(3600))
            .unwrap();
        let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
        let info = cert_info(&der).unwrap();
        assert_eq!(info.common_name, host.common_name());
        assert_eq!(hex::encode(&info.serial), issued.serial_hex);
        assert_eq!(info.not_after, issued.not_after);
        assert!(
            pki.issue_for_csr("not a csr", &host, Duration::from_secs(60))
                .is_err()
        );
    }
}
