//! The agent binaries the controller serves, per architecture, with their
//! SHA-256. They are found in `agent_binaries_dir` (files named
//! `metrom-agent-<arch>`, e.g. `metrom-agent-x86_64`, `metrom-agent-aarch64`)
//! or, for the controller's own architecture, as `metrom-agent` beside the
//! `metrom-controller` binary. Nothing is fetched from anywhere.
//!
//! A checksum published beside a binary (`metrom-agent-x86_64.sha256`, as
//! `sha256sum` writes it) is served as it is, so a binary altered after its
//! checksum was published is refused by the installer; otherwise the
//! controller computes one (and remembers it while the file is unchanged).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use sha2::{Digest, Sha256};

/// The file name beside `metrom-controller`.
pub const AGENT_FILE: &str = "metrom-agent";

/// Where the controller looks for agent binaries.
#[derive(Debug)]
pub struct AgentBinaries {
    /// `agent_binaries_dir` from controller.toml.
    dir: Option<PathBuf>,
    /// `metrom-agent` beside the controller's binary, and its architecture.
    beside: Option<(PathBuf, String)>,
    /// Computed checksums by path, valid while size and mtime are unchanged.
    computed: Mutex<HashMap<PathBuf, Computed>>,
}

/// A computed checksum and the (size, mtime) of the file it was computed from.
type Computed = (u64, Option<SystemTime>, String);

/// Why no binary could be served for an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("'{0}' is not an architecture name (expected e.g. x86_64 or aarch64)")]
    BadArch(String),
    #[error(
        "this controller has no agent binary for architecture {arch} (it serves: {served}); \
         put a metrom-agent built for {arch} into the controller's agent_binaries_dir as metrom-agent-{arch} \
         (docs/installer.md)"
    )]
    NotFound { arch: String, served: String },
}

/// A checksum that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a SHA-256 checksum (64 hexadecimal characters first); fix or remove it")]
    Malformed { path: PathBuf },
}

impl AgentBinaries {
    /// `dir` from the configuration; `beside` is the `metrom-agent` next to
    /// the controller's binary, of architecture `host_arch`.
    pub fn new(dir: Option<PathBuf>, beside: Option<PathBuf>, host_arch: &str) -> AgentBinaries {
        AgentBinaries {
            dir,
            beside: beside.map(|p| (p, host_arch.to_string())),
            computed: Mutex::new(HashMap::new()),
        }
    }

    /// As [`AgentBinaries::new`], beside the running controller binary.
    pub fn for_this_controller(dir: Option<PathBuf>) -> AgentBinaries {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(AGENT_FILE)));
        AgentBinaries::new(dir, beside, std::env::consts::ARCH)
    }

    /// The binary to serve for `arch`.
    pub fn find(&self, arch: &str) -> Result<PathBuf, LookupError> {
        if arch.is_empty()
            || arch.len() > 32
            || !arch
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(LookupError::BadArch(arch.chars().take(40).collect()));
        }
        if let Some(dir) = &self.dir
            && dir.join(format!("{AGENT_FILE}-{arch}")).is_file()
        {
            return Ok(dir.join(format!("{AGENT_FILE}-{arch}")));
        }
        if let Some((p, host_arch)) = &self.beside
            && host_arch == arch
            && p.is_file()
        {
            return Ok(p.clone());
        }
        let served = self.served();
        Err(LookupError::NotFound {
            arch: arch.to_string(),
            served: if served.is_empty() {
                "none".into()
            } else {
                served.join(", ")
            },
        })
    }

    /// The architectures there is a binary for, sorted.
    pub fn served(&self) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(dir) = &self.dir
            && let Ok(entries) = std::fs::read_dir(dir)
        {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(arch) = name.strip_prefix(&format!("{AGENT_FILE}-"))
                    && !arch.contains('.')
                    && e.path().is_file()
                {
                    v.push(arch.to_string());
                }
            }
        }
        if let Some((p, arch)) = &self.beside
            && p.is_file()
        {
            v.push(arch.clone());
        }
        v.sort();
        v.dedup();
        v
    }

    /// The SHA-256 (lowercase hex) to announce for `binary`: the published
    /// one beside it if there is one, else computed. Blocking (it may read
    /// the whole file).
    pub fn sha256(&self, binary: &Path) -> Result<String, ChecksumError> {
        let published = PathBuf::from(format!("{}.sha256", binary.display()));
        match std::fs::read_to_string(&published) {
            Ok(text) => {
                return parse_checksum(&text).ok_or(ChecksumError::Malformed { path: published });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ChecksumError::Read {
                    path: published,
                    source,
                });
            }
        }
        let read_err = |source| ChecksumError::Read {
            path: binary.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(binary).map_err(read_err)?;
        let stamp = (meta.len(), meta.modified().ok());
        if let Some((len, mtime, sum)) = self.computed.lock().expect("lock").get(binary)
            && (*len, *mtime) == stamp
        {
            return Ok(sum.clone());
        }
        let sum = sha256_file(binary).map_err(read_err)?;
        self.computed
            .lock()
            .expect("lock")
            .insert(binary.to_path_buf(), (stamp.0, stamp.1, sum.clone()));
        Ok(sum)
    }
}

/// The first word of a `sha256sum` line, if it is 64 hex characters.
pub fn parse_checksum(text: &str) -> Option<String> {
    let word = text.split_whitespace().next()?;
    (word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| word.to_ascii_lowercase())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, bytes: &[u8]) {
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn the_folder_wins_and_beside_serves_the_host_arch_only() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("agents");
        std::fs::create_dir(&dir).unwrap();
        write(&dir.join("metrom-agent-aarch64"), b"arm");
        write(&dir.join("metrom-agent-aarch64.sha256"), b"x");
        let beside = t.path().join("metrom-agent");
        write(&beside, b"x86");
        let b = AgentBinaries::new(Some(dir.clone()), Some(beside.clone()), "x86_64");
        assert_eq!(b.find("aarch64").unwrap(), dir.join("metrom-agent-aarch64"));
        assert_eq!(b.find("x86_64").unwrap(), beside);
        assert_eq!(b.served(), vec!["aarch64", "x86_64"]);
        // The folder's binary wins over the one beside the controller.
        write(&dir.join("metrom-agent-x86_64"), b"x86 from the folder");
        assert_eq!(b.find("x86_64").unwrap(), dir.join("metrom-agent-x86_64"));
    }

    #[test]
    fn an_unknown_arch_says_what_is_served_and_what_to_do() {
        let t = tempfile::tempdir().unwrap();
        let beside = t.path().join("metrom-agent");
        write(&beside, b"x86");
        let b = AgentBinaries::new(None, Some(beside), "x86_64");
        let e = b.find("riscv64").unwrap_err().to_string();
        assert!(
            e.contains("no agent binary for architecture riscv64")
                && e.contains("it serves: x86_64")
                && e.contains("metrom-agent-riscv64"),
            "{e}"
        );
        let none = AgentBinaries::new(None, Some(t.path().join("missing")), "x86_64");
        assert!(
            none.find("x86_64")
                .unwrap_err()
                .to_string()
                .contains("serves: none")
        );
        for bad in ["../etc", "x86_64/../../a", "", "X86", "a.b"] {
            assert!(matches!(b.find(bad), Err(LookupError::BadArch(_))), "{bad}");
        }
    }

    #[test]
    fn a_published_checksum_is_served_as_is_else_computed() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("metrom-agent-x86_64");
        write(&bin, b"hello");
        let b = AgentBinaries::new(Some(t.path().into()), None, "x86_64");
        let hello = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(b.sha256(&bin).unwrap(), hello);
        // Changed content, changed checksum (the cache notices the size).
        write(&bin, b"hello, world");
        assert_ne!(b.sha256(&bin).unwrap(), hello);
        // A published one wins, even when it does not match: the installer judges.
        let published = format!("{}  metrom-agent-x86_64\n", "AB".repeat(32));
        write(
            &t.path().join("metrom-agent-x86_64.sha256"),
            published.as_bytes(),
        );
        assert_eq!(b.sha256(&bin).unwrap(), "ab".repeat(32));
        write(&t.path().join("metrom-agent-x86_64.sha256"), b"nonsense\n");
        let e = b.sha256(&bin).unwrap_err().to_string();
        assert!(e.contains("not a SHA-256"), "{e}");
    }
}
