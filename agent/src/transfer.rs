//! Fetching artifacts from the controller: a VM image or a Docker image
//! archive, streamed on its own QUIC stream into `<dest>.part`, resumed from
//! where it stopped after a broken connection, and verified by SHA-256 before
//! it is moved into place. A file whose digest does not match is discarded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use metrom_protocol::codec;
use metrom_protocol::messages::agent::{AgentRequest, ImageStreamHeader};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::link::Link;
use crate::runtime::Progress;

/// How many times a transfer is resumed before giving up.
const MAX_ATTEMPTS: u32 = 30;
/// How long to wait for the controller to be reachable for one attempt.
const CONNECT_WAIT: Duration = Duration::from_secs(120);
const MAX_HEADER: usize = 64 * 1024;

/// What to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    VmImage,
    DockerArchive,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the controller does not have it: {0}")]
    NotFound(String),
    #[error("the downloaded file's digest is {got}, expected {expected}: discarded")]
    DigestMismatch { expected: String, got: String },
    #[error("could not fetch it from the controller after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error(
        "the host's disk is full: {path} cannot hold {size} bytes; free some space (or lower image_cache_max)"
    )]
    DiskFull { path: PathBuf, size: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Fetches `digest` (of `size` bytes) into `dest`, resuming any partial file.
pub async fn fetch(
    link: &Link,
    what: Artifact,
    digest: &str,
    size: u64,
    dest: &Path,
    progress: &Progress,
) -> Result<(), FetchError> {
    let part = partial_path(dest);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchError::Io { path, source }
    };
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
    }
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut last = String::new();
    for attempt in 1..=MAX_ATTEMPTS {
        let have = tokio::fs::metadata(&part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        if have > size {
            let _ = tokio::fs::remove_file(&part).await;
            continue;
        }
        if have < size {
            if have > 0 {
                info!(digest, "resuming the transfer at byte {have} of {size}");
            }
            match attempt_once(link, what, digest, size, have, &part, progress).await {
                Ok(()) => {}
                Err(Attempt::NotFound(reason)) => return Err(FetchError::NotFound(reason)),
                Err(Attempt::Io(e)) => return Err(e),
                Err(Attempt::Broken(reason)) => {
                    warn!(
                        digest,
                        "transfer interrupted ({reason}); attempt {attempt} of {MAX_ATTEMPTS}"
                    );
                    last = reason;
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
        }
        progress.say("verifying the image (sha256)");
        let got = sha256_file(&part).await.map_err(io(&part))?;
        if got != digest {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(FetchError::DigestMismatch {
                expected: digest.to_string(),
                got,
            });
        }
        tokio::fs::rename(&part, dest).await.map_err(io(dest))?;
        return Ok(());
    }
    Err(FetchError::GaveUp {
        attempts: MAX_ATTEMPTS,
        last,
    })
}

/// Where a transfer in progress is kept.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    dest.with_file_name(name)
}

enum Attempt {
    NotFound(String),
    Broken(String),
    Io(FetchError),
}

async fn attempt_once(
    link: &Link,
    what: Artifact,
    digest: &str,
    size: u64,
    offset: u64,
    part: &Path,
    progress: &Progress,
) -> Result<(), Attempt> {
    let conn = link
        .connection(CONNECT_WAIT)
        .await
        .ok_or_else(|| Attempt::Broken("the controller is not reachable".into()))?;
    let broken = |e: &dyn std::fmt::Display| Attempt::Broken(e.to_string());
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| broken(&e))?;
    let req = match what {
        Artifact::VmImage => AgentRequest::FetchImage {
            digest: digest.to_string(),
            offset,
        },
        Artifact::DockerArchive => AgentRequest::FetchDockerArchive {
            digest: digest.to_string(),
            offset,
        },
    };
    codec::write_message(&mut send, &req, MAX_HEADER)
        .await
        .map_err(|e| broken(&e))?;
    let _ = send.finish();
    let header = codec::read_message::<ImageStreamHeader, _>(&mut recv, MAX_HEADER)
        .await
        .map_err(|e| broken(&e))?
        .ok_or_else(|| Attempt::Broken("no answer".into()))?;
    let start = match header {
        ImageStreamHeader::NotFound { reason } => return Err(Attempt::NotFound(reason)),
        ImageStreamHeader::Found {
            size: s, offset: o, ..
        } if s == size && o == offset => o,
        ImageStreamHeader::Found {
            size: s, offset: o, ..
        } => {
            return Err(Attempt::Broken(format!(
                "the controller offered {s} bytes from {o}, expected {size} from {offset}"
            )));
        }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(|source| {
            Attempt::Io(FetchError::Io {
                path: part.to_path_buf(),
                source,
            })
        })?;
    let mut got = start;
    let mut buf = vec![0u8; 256 * 1024];
    let mut last_pct = u64::MAX;
    while got < size {
        let n = match recv.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(e) => {
                let _ = file.flush().await;
                return Err(broken(&e));
            }
        };
        if let Err(source) = file.write_all(&buf[..n]).await {
            drop(file);
            if source.raw_os_error() == Some(libc::ENOSPC) {
                // Nothing half-made stays behind.
                let _ = tokio::fs::remove_file(part).await;
                return Err(Attempt::Io(FetchError::DiskFull {
                    path: part.to_path_buf(),
                    size,
                }));
            }
            return Err(Attempt::Io(FetchError::Io {
                path: part.to_path_buf(),
                source,
            }));
        }
        got += n as u64;
        let pct = got * 100 / size.max(1);
        if pct / 5 != last_pct / 5 {
            last_pct = pct;
            progress.say(format!("fetching the image from the controller: {pct}%"));
        }
    }
    file.flush().await.map_err(|source| {
        Attempt::Io(FetchError::Io {
            path: part.to_path_buf(),
            source,
        })
    })?;
    file.sync_all().await.map_err(|source| {
        Attempt::Io(FetchError::Io {
            path: part.to_path_buf(),
            source,
        })
    })?;
    if got < size {
        return Err(Attempt::Broken(format!(
            "stream ended at byte {got} of {size}"
        )));
    }
    Ok(())
}

/// `sha256:<hex>` of a file.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())))
    })
    .await
    .map_err(std::io::Error::other)?
}
