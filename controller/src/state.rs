//! The controller's shared state: configuration, store, CA, live sessions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use metrom_protocol::tls::RevocationList;

use crate::config::Config;
use crate::envs::Envs;
use crate::hosts::Sessions;
use crate::pki::{Pki, PkiError};
use crate::store::{Store, StoreError};

/// Store meta key holding the address given to `init --advertise`.
pub const META_ADVERTISE: &str = "advertise";
/// Store meta key holding the cluster's name (shown in the CA's name).
pub const META_CLUSTER: &str = "cluster";

/// Why the controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "data directory {0} is not initialised: run `metrom-controller init --data-dir {0} --advertise HOST:PORT` first"
    )]
    NotInitialised(PathBuf),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything request handlers and background tasks share.
pub struct Controller {
    pub config: Config,
    pub data_dir: PathBuf,
    pub store: Store,
    pub pki: Pki,
    pub revoked: Arc<RevocationList>,
    pub sessions: Sessions,
    /// Live CLI connections per user, closed when the user is removed.
    pub user_conns: Mutex<HashMap<String, Vec<quinn::Connection>>>,
    pub started_at: Timestamp,
    /// `HOST:PORT` written into identity bundles.
    pub advertise: String,
    /// Environment bookkeeping kept in memory.
    pub envs: Envs,
    /// Activity agents reported, for the idle policy (memory only).
    pub activity: crate::policy::activity::Tracker,
    /// Where the HTTPS endpoint listens, once bound.
    pub https_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// The cloud broker.
    pub cloud: crate::cloud::Cloud,
}

impl Controller {
    /// Opens an initialised data directory.
    pub fn open(data_dir: &Path, config: Config) -> Result<Arc<Controller>, OpenError> {
        Self::open_with(data_dir, config, crate::cloud::Cloud::default_connector())
    }

    /// Opens with the given cloud connector (fakes in tests).
    pub fn open_with(
        data_dir: &Path,
        config: Config,
        connector: Arc<dyn crate::cloud::Connector>,
    ) -> Result<Arc<Controller>, OpenError> {
        if !Pki::exists(data_dir) {
            return Err(OpenError::NotInitialised(data_dir.to_path_buf()));
        }
        let pki = Pki::load(data_dir)?;
        let store = Store::open(data_dir)?;
        let now = Timestamp::now();
        let mut serials = Vec::new();
        for (serial, cert) in store.revoked.list()? {
            if cert.not_after > now
                && let Ok(bytes) = hex::decode(&serial)
            {
                serials.push(bytes);
            }
        }
        let advertise = match &config.advertise {
            Some(a) => a.clone(),
            None => store
                .meta
                .get(META_ADVERTISE)?
                .unwrap_or_else(|| format!("127.0.0.1:{}", config.listen.port())),
        };
        let envs: Vec<_> = store.envs.list()?.into_iter().map(|(_, e)| e).collect();
        let envs = Envs::load(&envs);
        // The cluster's name tags this controller's cloud instances.
        let controller_id = store
            .meta
            .get(META_CLUSTER)?
            .unwrap_or_else(|| "metrom".to_string());
        Ok(Arc::new(Controller {
            config,
            data_dir: data_dir.to_path_buf(),
            store,
            pki,
            revoked: Arc::new(RevocationList::new(serials)),
            sessions: Sessions::default(),
            user_conns: Mutex::new(HashMap::new()),
            started_at: now,
            advertise,
            envs,
            activity: Default::default(),
            https_addr: Default::default(),
            cloud: crate::cloud::Cloud::new(controller_id, connector),
        }))
    }

    /// Closes every live connection of a user (after their removal).
    pub fn disconnect_user(&self, name: &str, code: quinn::VarInt, reason: &str) {
        let conns = self
            .user_conns
            .lock()
            .expect("user conns lock")
            .remove(name)
            .unwrap_or_default();
        for c in conns {
            c.close(code, reason.as_bytes());
        }
    }
}
