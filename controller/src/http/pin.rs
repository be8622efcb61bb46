//! The pin of the HTTPS endpoint, in curl's `--pinnedpubkey` form: SHA-256
//! of the certificate's SubjectPublicKeyInfo (DER), base64, after `sha256//`.
//! curl checks it even with `-k`, so a join command trusts exactly this
//! controller's key whatever name or address the box uses to reach it.

use base64::Engine;
use sha2::{Digest, Sha256};

/// A certificate whose public key cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the controller's server certificate cannot be parsed ({0}); is pki/server.crt damaged?")]
pub struct PinError(String);

/// `sha256//<base64 of SHA-256(SubjectPublicKeyInfo)>` of a DER certificate.
pub fn spki_pin(cert_der: &[u8]) -> Result<String, PinError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(cert_der).map_err(|e| PinError(e.to_string()))?;
    Ok(pin_of_spki(cert.tbs_certificate.subject_pki.raw))
}

/// The pin of a DER SubjectPublicKeyInfo.
pub fn pin_of_spki(spki_der: &[u8]) -> String {
    format!(
        "sha256//{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki_der))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};

    #[test]
    fn the_pin_is_the_hash_of_the_key_not_of_the_certificate() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pin = spki_pin(cert.der()).unwrap();
        // Independently: rcgen's own DER of the public key.
        assert_eq!(pin, pin_of_spki(&key.subject_public_key_info()));
        assert!(pin.starts_with("sha256//") && pin.len() == 8 + 44, "{pin}");
        // Another certificate for the same key has the same pin; another key does not.
        let again = CertificateParams::new(vec!["b.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(spki_pin(again.der()).unwrap(), pin);
        let other = KeyPair::generate().unwrap();
        let cert2 = CertificateParams::new(vec!["a.example".into()])
            .unwrap()
            .self_signed(&other)
            .unwrap();
        assert_ne!(spki_pin(cert2.der()).unwrap(), pin);
    }

    #[test]
    fn garbage_is_refused_with_a_hint() {
        let e = spki_pin(b"not a certificate").unwrap_err().to_string();
        assert!(e.contains("server.crt"), "{e}");
    }
}
