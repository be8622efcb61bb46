//! Identity bundles: one TOML file with the controller's address, the CA
//! certificate, a client certificate and its private key. Operators and
//! developers get one from `metrom-controller init` or `metrom user add`; an
//! agent writes its own at `join`. Always mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::ids::Principal;
use crate::token::CaPin;

/// The contents of an identity file.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityBundle {
    /// `HOST:PORT` of the controller's QUIC endpoint.
    pub controller: String,
    /// Who this identity is: `host:h-…` or `user:NAME` (informational; the
    /// certificate is what counts).
    pub principal: String,
    /// PEM of the cluster CA certificate.
    pub ca_cert: String,
    /// PEM of the client certificate.
    pub cert: String,
    /// PEM (PKCS#8) of the client private key.
    pub key: String,
}

impl std::fmt::Debug for IdentityBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityBundle")
            .field("controller", &self.controller)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity file {path}: cannot read it")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path}: cannot write it")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity file {path}: not a valid identity bundle")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error(
        "identity file {path} is readable by other users (mode {mode:o}); it holds a private key: run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("identity file {path}: field '{field}' does not hold a valid PEM {what}")]
    Pem {
        path: PathBuf,
        field: &'static str,
        what: &'static str,
    },
}

impl IdentityBundle {
    /// Reads a bundle, refusing one that other users can read.
    pub fn load(path: &Path) -> Result<IdentityBundle, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| IdentityError::Read {
                    path: path.to_path_buf(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions {
                    path: path.to_path_buf(),
                    mode: mode & 0o777,
                });
            }
        }
        let bundle: IdentityBundle =
            toml::from_str(&text).map_err(|source| IdentityError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        bundle.check(path)?;
        Ok(bundle)
    }

    /// Writes the bundle atomically with mode 0600 (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), IdentityError> {
        let text = toml::to_string_pretty(self).expect("identity bundle serializes");
        write_private_file(path, text.as_bytes()).map_err(|source| IdentityError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The parsed principal named by the certificate's common name.
    pub fn principal(&self) -> Option<Principal> {
        Principal::from_common_name(&self.principal)
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.ca_cert.as_bytes()).expect("checked at load")
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).expect("checked at load")
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key.as_bytes()).expect("checked at load")
    }

    pub fn ca_pin(&self) -> CaPin {
        CaPin::of_der(&self.ca_der())
    }

    fn check(&self, path: &Path) -> Result<(), IdentityError> {
        let err = |field, what| IdentityError::Pem {
            path: path.to_path_buf(),
            field,
            what,
        };
        CertificateDer::from_pem_slice(self.ca_cert.as_bytes())
            .map_err(|_| err("ca_cert", "certificate"))?;
        CertificateDer::from_pem_slice(self.cert.as_bytes())
            .map_err(|_| err("cert", "certificate"))?;
        PrivateKeyDer::from_pem_slice(self.key.as_bytes())
            .map_err(|_| err("key", "private key"))?;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically, readable only by the owner. Parent
/// directories are created (mode 0700).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates a directory (and parents) that only its owner can enter.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

/// Where the CLI looks for an identity when neither `--identity` nor
/// `METROM_IDENTITY` names one: `~/.config/metrom/identity`.
pub fn default_identity_path() -> Option<PathBuf> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("metrom").join("identity"))
}
