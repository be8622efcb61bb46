//! The host's cache of VM base images: fetched from the controller on demand
//! (one download even when several environments need the image at once),
//! verified, kept content-addressed under `<dir>/<hex>`, and evicted least
//! recently used first when the cache would exceed its size cap. An image a
//! VM's disk is backed by is never evicted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use metrom_protocol::messages::env::ImageRef;
use tracing::info;

use crate::link::Link;
use crate::runtime::Progress;
use crate::transfer::{self, Artifact, FetchError};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(
        "the image cache is full: {name} needs {need} MiB, the cap is {cap} MiB and {in_use} MiB are images in use; raise image_cache_max or delete environments"
    )]
    Full {
        name: String,
        need: u64,
        cap: u64,
        in_use: u64,
    },
    #[error("base image {name}: {source}")]
    Fetch {
        name: String,
        #[source]
        source: FetchError,
    },
    #[error("image cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    link: Arc<Link>,
    /// One lock per digest: concurrent requests for an image wait for one download.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ImageCache {
    pub fn new(dir: &Path, max_bytes: u64, link: Arc<Link>) -> ImageCache {
        ImageCache {
            dir: dir.to_path_buf(),
            max_bytes,
            link,
            locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where an image with this digest lives in the cache.
    pub fn path_of(&self, digest: &str) -> PathBuf {
        self.dir.join(digest.trim_start_matches("sha256:"))
    }

    /// The local path of `image`, fetching it if needed. `in_use` are digests
    /// that must not be evicted to make room.
    pub async fn ensure(
        &self,
        image: &ImageRef,
        in_use: &HashSet<String>,
        progress: &Progress,
    ) -> Result<PathBuf, CacheError> {
        let path = self.path_of(&image.digest);
        let lock = {
            let mut locks = self.locks.lock().expect("cache locks");
            locks.entry(image.digest.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        if path.exists() {
            touch(&path);
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| CacheError::Io {
            path: self.dir.clone(),
            source,
        })?;
        self.make_room(image, in_use)?;
        info!(image = %image.name, digest = %image.digest, size = image.size, "fetching base image from the controller");
        transfer::fetch(
            &self.link,
            Artifact::VmImage,
            &image.digest,
            image.size,
            &path,
            progress,
        )
        .await
        .map_err(|source| CacheError::Fetch {
            name: image.name.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Evicts least recently used images (not in use) until `image` fits.
    fn make_room(&self, image: &ImageRef, in_use: &HashSet<String>) -> Result<(), CacheError> {
        let mut entries = self.entries();
        let total: u64 = entries.iter().map(|e| e.size).sum();
        let mut excess = (total + image.size).saturating_sub(self.max_bytes);
        if excess == 0 {
            return Ok(());
        }
        entries.sort_by_key(|e| e.used);
        for e in &entries {
            if excess == 0 {
                break;
            }
            if in_use.contains(&e.digest) {
                continue;
            }
            info!(digest = %e.digest, "evicting an unused base image from the cache");
            if std::fs::remove_file(&e.path).is_ok() {
                excess = excess.saturating_sub(e.size);
            }
        }
        if excess > 0 {
            let in_use_bytes = entries
                .iter()
                .filter(|e| in_use.contains(&e.digest))
                .map(|e| e.size)
                .sum::<u64>();
            return Err(CacheError::Full {
                name: image.name.clone(),
                need: image.size >> 20,
                cap: self.max_bytes >> 20,
                in_use: in_use_bytes >> 20,
            });
        }
        Ok(())
    }

    fn entries(&self) -> Vec<Entry> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None; // partial downloads and anything else
                }
                let meta = e.metadata().ok()?;
                Some(Entry {
                    digest: format!("sha256:{name}"),
                    path: e.path(),
                    size: meta.len(),
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect()
    }
}

struct Entry {
    digest: String,
    path: PathBuf,
    size: u64,
    used: SystemTime,
}

/// Marks an image as just used (its modification time is the LRU clock).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_skips_images_in_use_and_reports_a_full_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path(), 3 << 20, Arc::new(Link::default()));
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        std::fs::write(dir.path().join(&a), vec![0u8; 1 << 20]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(dir.path().join(&b), vec![0u8; 1 << 20]).unwrap();
        let img = |size| ImageRef {
            name: "new".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            size,
            format: "raw".into(),
        };
        // 2 MiB new image: 1 MiB must go; a is older but in use, so b goes.
        let in_use: HashSet<String> = [format!("sha256:{a}")].into();
        cache.make_room(&img(2 << 20), &in_use).unwrap();
        assert!(dir.path().join(&a).exists() && !dir.path().join(&b).exists());
        // Nothing more can go.
        let err = cache
            .make_room(&img(3 << 20), &in_use)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image cache is full"), "{err}");
    }
}
