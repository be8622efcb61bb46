//! The agent's current connection to the controller, for runtimes that need
//! to fetch something (VM images, Docker image archives). The session sets it
//! when connected and clears it when the connection ends; a fetch waits for the
//! next connection rather than failing while the controller is away.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

/// The controller connection, if there is one now.
pub struct Link {
    current: Mutex<Option<quinn::Connection>>,
    changed: watch::Sender<u64>,
}

impl Default for Link {
    fn default() -> Self {
        Link {
            current: Mutex::new(None),
            changed: watch::channel(0).0,
        }
    }
}

impl Link {
    pub fn set(&self, conn: Option<quinn::Connection>) {
        *self.current.lock().expect("link lock") = conn;
        self.changed.send_modify(|n| *n += 1);
    }

    /// The live connection, waiting up to `timeout` for one.
    pub async fn connection(&self, timeout: Duration) -> Option<quinn::Connection> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(c) = self.current.lock().expect("link lock").clone()
                && c.close_reason().is_none()
            {
                return Some(c);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}
