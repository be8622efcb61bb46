//! The agent's ledger: what the controller asked this host to run, written
//! durably (temporary file, fsync, rename) before a command is acknowledged.
//! After a restart the agent re-adopts every environment in it; the ledger is
//! also what the agent reports in Hello.
//!
//! Layout: `ledger/<env-id>.json` per environment, `ledger/deleted/<env-id>`
//! (the generation of the delete) so that a late or duplicated command for a
//! deleted environment is recognised as stale and never recreates it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::env::{EnvReport, EnvSpec};
use serde::{Deserialize, Serialize};

/// One environment as the agent knows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The latest spec the controller sent.
    pub spec: EnvSpec,
    /// Set when the controller asked for deletion.
    #[serde(default)]
    pub delete: Option<DeleteOrder>,
    /// The last report sent (or to be sent).
    pub report: EnvReport,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeleteOrder {
    pub generation: u64,
    pub keep_data: bool,
}

impl Entry {
    /// The generation of the latest order (apply or delete).
    pub fn generation(&self) -> u64 {
        self.delete
            .map(|d| d.generation)
            .unwrap_or(0)
            .max(self.spec.generation)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: cannot write")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ledger {path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The ledger folder and an in-memory copy of it.
pub struct Ledger {
    dir: PathBuf,
    entries: Mutex<BTreeMap<EnvId, Entry>>,
    deleted: Mutex<BTreeMap<EnvId, u64>>,
}

impl Ledger {
    /// Opens (creating) `data_dir/ledger`. Unreadable entries are logged and
    /// skipped rather than stopping the agent.
    pub fn open(data_dir: &Path) -> Result<Ledger, LedgerError> {
        let dir = data_dir.join("ledger");
        let tomb = dir.join("deleted");
        std::fs::create_dir_all(&tomb).map_err(|source| LedgerError::Write {
            path: tomb.clone(),
            source,
        })?;
        let mut entries = BTreeMap::new();
        for item in std::fs::read_dir(&dir).map_err(|source| LedgerError::Read {
            path: dir.clone(),
            source,
        })? {
            let item = item.map_err(|source| LedgerError::Read {
                path: dir.clone(),
                source,
            })?;
            let path = item.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path).map(|b| serde_json::from_slice::<Entry>(&b)) {
                Ok(Ok(entry)) => {
                    entries.insert(entry.spec.env_id.clone(), entry);
                }
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), "unreadable ledger entry, skipped: {e}")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), "unreadable ledger entry, skipped: {e}")
                }
            }
        }
        let mut deleted = BTreeMap::new();
        for item in std::fs::read_dir(&tomb).map_err(|source| LedgerError::Read {
            path: tomb.clone(),
            source,
        })? {
            let item = item.map_err(|source| LedgerError::Read {
                path: tomb.clone(),
                source,
            })?;
            let name = item.file_name().to_string_lossy().into_owned();
            if let (Ok(id), Ok(text)) = (EnvId::parse(&name), std::fs::read_to_string(item.path()))
            {
                deleted.insert(id, text.trim().parse().unwrap_or(u64::MAX));
            }
        }
        Ok(Ledger {
            dir,
            entries: Mutex::new(entries),
            deleted: Mutex::new(deleted),
        })
    }

    pub fn get(&self, env: &EnvId) -> Option<Entry> {
        self.entries.lock().expect("ledger lock").get(env).cloned()
    }

    pub fn all(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .expect("ledger lock")
            .values()
            .cloned()
            .collect()
    }

    /// The generation at which an environment was deleted, if it was.
    pub fn deleted_at(&self, env: &EnvId) -> Option<u64> {
        self.deleted.lock().expect("ledger lock").get(env).copied()
    }

    /// Writes an entry durably.
    pub fn put(&self, entry: Entry) -> Result<(), LedgerError> {
        let path = self.dir.join(format!("{}.json", entry.spec.env_id));
        let bytes = serde_json::to_vec_pretty(&entry).expect("ledger entries serialize");
        write_atomic(&path, &bytes)?;
        self.entries
            .lock()
            .expect("ledger lock")
            .insert(entry.spec.env_id.clone(), entry);
        Ok(())
    }

    /// Updates only the stored report (not fsynced: a lost report is re-observed).
    pub fn set_report(&self, report: &EnvReport) {
        let mut entries = self.entries.lock().expect("ledger lock");
        if let Some(e) = entries.get_mut(&report.env_id) {
            e.report = report.clone();
            let path = self.dir.join(format!("{}.json", e.spec.env_id));
            if let Ok(bytes) = serde_json::to_vec_pretty(&*e) {
                let _ = write_atomic_nosync(&path, &bytes);
            }
        }
    }

    /// Records a finished deletion: a tombstone with its generation, then the entry goes.
    pub fn finish_delete(&self, env: &EnvId, generation: u64) -> Result<(), LedgerError> {
        let tomb = self.dir.join("deleted").join(env.as_str());
        write_atomic(&tomb, generation.to_string().as_bytes())?;
        self.deleted
            .lock()
            .expect("ledger lock")
            .insert(env.clone(), generation);
        let path = self.dir.join(format!("{env}.json"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(LedgerError::Write { path, source }),
        }
        self.entries.lock().expect("ledger lock").remove(env);
        Ok(())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    use std::io::Write;
    let err = |source| LedgerError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_atomic_nosync(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::tests::spec;
    use metrom_protocol::messages::env::{EnvDetail, EnvState};

    #[test]
    fn entries_and_tombstones_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let s = spec("e-abc", 3);
        let report = EnvReport {
            env_id: s.env_id.clone(),
            generation: 3,
            build: 1,
            state: EnvState::Provisioning,
            detail: EnvDetail::default(),
        };
        ledger
            .put(Entry {
                spec: s.clone(),
                delete: None,
                report,
            })
            .unwrap();
        let again = Ledger::open(dir.path()).unwrap();
        assert_eq!(again.get(&s.env_id).unwrap().spec, s);
        again.finish_delete(&s.env_id, 4).unwrap();
        let third = Ledger::open(dir.path()).unwrap();
        assert!(third.get(&s.env_id).is_none());
        assert_eq!(third.deleted_at(&s.env_id), Some(4));
    }

    #[test]
    fn a_corrupt_entry_is_skipped_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("ledger")).unwrap();
        std::fs::write(dir.path().join("ledger/e-bad.json"), b"{not json").unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert!(ledger.all().is_empty());
    }
}
