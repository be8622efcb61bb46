//! The controller's embedded store: sled trees of JSON records.
//!
//! JSON (not postcard) on disk so that records can grow fields with
//! `#[serde(default)]` across upgrades and can be read when debugging.
//!
//! Every write touches a single key (insert, or compare-and-swap through
//! [`Table::update`]). sled 0.34's multi-key transactions and batches take a
//! global lock that deadlocks against a concurrent `flush` under load, so
//! changes that span records are ordered to be safe at every step instead.
//! [`Store::flush`] makes everything written so far durable; request handlers
//! call it before acknowledging a change.

mod records;
mod table;

use std::path::{Path, PathBuf};

pub use records::*;
pub use table::Table;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store at {path}: cannot open (is another metrom-controller running on this data directory?)"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error("store i/o")]
    Sled(#[from] sled::Error),
    #[error("store record {table}/{key} is unreadable")]
    Corrupt {
        table: &'static str,
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The open store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub meta: Table<String>,
    pub hosts: Table<HostRecord>,
    pub tokens: Table<TokenRecord>,
    pub users: Table<UserRecord>,
    pub revoked: Table<RevokedCert>,
    pub templates: Table<TemplateRecord>,
    pub template_versions: Table<TemplateVersionRecord>,
    pub envs: Table<EnvRecord>,
    pub events: Table<EventRecord>,
    pub images: Table<ImageRecord>,
    pub docker_archives: Table<DockerArchiveRecord>,
    pub audit: Table<AuditRecord>,
    pub quotas: Table<QuotaRecord>,
    pub intervals: Table<IntervalRecord>,
    pub cloud_accounts: Table<CloudAccountRecord>,
}

impl Store {
    /// The folder of the store inside a data directory.
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("store")
    }

    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = Self::dir_in(data_dir);
        let db = sled::Config::new()
            .path(&path)
            .flush_every_ms(Some(1000))
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(Store {
            meta: Table::new("meta", db.open_tree("meta")?),
            hosts: Table::new("hosts", db.open_tree("hosts")?),
            tokens: Table::new("tokens", db.open_tree("tokens")?),
            users: Table::new("users", db.open_tree("users")?),
            revoked: Table::new("revoked", db.open_tree("revoked")?),
            templates: Table::new("templates", db.open_tree("templates")?),
            template_versions: Table::new("template_versions", db.open_tree("template_versions")?),
            envs: Table::new("envs", db.open_tree("envs")?),
            events: Table::new("events", db.open_tree("events")?),
            images: Table::new("images", db.open_tree("images")?),
            docker_archives: Table::new("docker_archives", db.open_tree("docker_archives")?),
            audit: Table::new("audit", db.open_tree("audit")?),
            quotas: Table::new("quotas", db.open_tree("quotas")?),
            intervals: Table::new("intervals", db.open_tree("intervals")?),
            cloud_accounts: Table::new("cloud_accounts", db.open_tree("cloud_accounts")?),
            db,
        })
    }

    /// Makes every write so far durable (fsync).
    ///
    /// Runs sled's blocking flush on tokio's blocking pool, not
    /// `flush_async`: that one waits on sled's own small I/O thread pool,
    /// and when every thread there is a flush waiting for a buffer write
    /// queued on the same pool, nothing moves again (seen under 16
    /// concurrent clients: all `sled-io-*` threads parked in `make_stable`).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| sled::Error::ReportableBug(format!("store flush task: {e}")))??;
        Ok(())
    }

    /// Blocking flush, for shutdown paths outside the runtime.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// A monotonically increasing number (for event keys).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Opens (creating if needed) a tree for a module that keeps its own table.
    pub fn table<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &'static str,
    ) -> Result<Table<T>, StoreError> {
        Ok(Table::new(name, self.db.open_tree(name)?))
    }
}
