//! Host liveness, kept in memory: which agents are connected, their last
//! heartbeat and load. Only transitions (connect, disconnect, Unreachable) reach
//! the store; heartbeats never do.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use metrom_protocol::facts::HostLoad;
use metrom_protocol::ids::HostId;
use metrom_protocol::messages::agent::ControllerMessage;
use metrom_protocol::messages::api::{HostState, HostView};
use metrom_protocol::messages::env::Resources;
use tokio::sync::mpsc;

use crate::store::HostRecord;

/// One connected agent.
pub struct Session {
    /// Distinguishes a session from a later one of the same host.
    pub id: u64,
    pub conn: quinn::Connection,
    pub address: SocketAddr,
    pub connected_at: Timestamp,
    pub last_heartbeat: Instant,
    pub load: Option<HostLoad>,
    /// Messages for the agent's control stream.
    pub control: mpsc::Sender<ControllerMessage>,
}

/// What the API shows of a live session.
#[derive(Debug, Clone)]
pub struct Live {
    pub address: SocketAddr,
    pub connected_at: Timestamp,
    pub load: Option<HostLoad>,
    pub last_heartbeat_age: Duration,
}

/// All connected agents.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<HostId, Session>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Sessions {
    /// Registers a new session; returns its id and the session it replaces, if any.
    pub fn register(
        &self,
        host: &HostId,
        conn: quinn::Connection,
        control: mpsc::Sender<ControllerMessage>,
    ) -> (u64, Option<Session>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let session = Session {
            id,
            address: conn.remote_address(),
            conn,
            connected_at: Timestamp::now(),
            last_heartbeat: Instant::now(),
            load: None,
            control,
        };
        let old = self.lock().insert(host.clone(), session);
        (id, old)
    }

    /// Records a heartbeat. False if the session is gone (replaced or expired).
    pub fn heartbeat(&self, host: &HostId, session: u64, load: HostLoad) -> bool {
        match self.lock().get_mut(host) {
            Some(s) if s.id == session => {
                s.last_heartbeat = Instant::now();
                s.load = Some(load);
                true
            }
            _ => false,
        }
    }

    /// Removes the session if it is still the current one for the host.
    pub fn remove(&self, host: &HostId, session: u64) -> Option<Session> {
        let mut map = self.lock();
        if map.get(host).is_some_and(|s| s.id == session) {
            map.remove(host)
        } else {
            None
        }
    }

    /// Removes and returns the host's session, whichever it is.
    pub fn take(&self, host: &HostId) -> Option<Session> {
        self.lock().remove(host)
    }

    /// Removes and returns every session whose last heartbeat is older than `ttl`.
    pub fn expire(&self, ttl: Duration, now: Instant) -> Vec<(HostId, Session)> {
        let mut map = self.lock();
        let stale: Vec<HostId> = map
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.last_heartbeat) > ttl)
            .map(|(h, _)| h.clone())
            .collect();
        stale
            .into_iter()
            .filter_map(|h| map.remove(&h).map(|s| (h, s)))
            .collect()
    }

    pub fn live(&self, host: &HostId) -> Option<Live> {
        self.lock().get(host).map(|s| Live {
            address: s.address,
            connected_at: s.connected_at,
            load: s.load,
            last_heartbeat_age: s.last_heartbeat.elapsed(),
        })
    }

    pub fn is_connected(&self, host: &HostId) -> bool {
        self.lock().contains_key(host)
    }

    /// The QUIC connection to a host's agent, to open command streams on.
    pub fn connection(&self, host: &HostId) -> Option<quinn::Connection> {
        self.lock().get(host).map(|s| s.conn.clone())
    }

    pub fn control(&self, host: &HostId, session: u64) -> Option<mpsc::Sender<ControllerMessage>> {
        self.lock()
            .get(host)
            .filter(|s| s.id == session)
            .map(|s| s.control.clone())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Every connected host.
    pub fn connected(&self) -> Vec<HostId> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<HostId, Session>> {
        self.inner.lock().expect("sessions lock")
    }
}

/// A host's state from its record and whether it has a live session.
pub fn host_state(record: &HostRecord, connected: bool) -> HostState {
    if record.revoked() {
        HostState::Revoked
    } else if connected {
        HostState::Ready
    } else {
        HostState::Unreachable
    }
}

/// The operator's view of a host.
pub fn host_view(
    record: &HostRecord,
    live: Option<Live>,
    allocated: Resources,
    environments: u32,
) -> HostView {
    let now = Timestamp::now();
    let last_seen = match &live {
        Some(l) => now
            .checked_sub(jiff::SignedDuration::try_from(l.last_heartbeat_age).unwrap_or_default())
            .ok(),
        None => record.last_seen,
    };
    HostView {
        id: record.id.clone(),
        name: record.name.clone(),
        state: host_state(record, live.is_some()),
        cordoned: record.cordoned,
        labels: record.labels.clone(),
        facts: record.facts.clone(),
        load: live.as_ref().and_then(|l| l.load),
        address: live.as_ref().map(|l| l.address.to_string()),
        joined_at: record.joined_at,
        last_seen,
        cert_expires_at: record.cert_not_after,
        allocated,
        environments,
    }
}
