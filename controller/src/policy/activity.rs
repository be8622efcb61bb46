//! What the idle policy knows of each environment's activity: agents send
//! CPU and network figures per reporting interval; the controller keeps, in
//! memory, when each environment was last active. Nothing is written: after a
//! controller restart every idle clock starts again from the first report,
//! which errs on the side of keeping environments running.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::agent::EnvActivity;

use super::engine::Activity;

/// Reports older than this many intervals (and at least [`MIN_STALE`]) no
/// longer count: the host went quiet, so idleness cannot be judged.
const STALE_INTERVALS: u32 = 3;
const MIN_STALE: Duration = Duration::from_secs(30);

/// When an interval counts as activity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub cpu_percent: f32,
    pub net_bytes_per_sec: u64,
}

/// Whether one reported interval shows activity. Pure.
pub fn is_active(a: &EnvActivity, t: Thresholds) -> bool {
    let secs = (a.interval_ms as f64 / 1000.0).max(0.001);
    a.cpu_percent > t.cpu_percent || (a.net_bytes as f64 / secs) > t.net_bytes_per_sec as f64
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    first_report: Timestamp,
    last_report: Timestamp,
    last_active: Option<Timestamp>,
    interval: Duration,
}

/// Last activity per environment.
#[derive(Default)]
pub struct Tracker {
    seen: Mutex<HashMap<EnvId, Seen>>,
}

impl Tracker {
    /// Records one interval reported at `now`.
    pub fn record(&self, a: &EnvActivity, now: Timestamp, t: Thresholds) {
        let mut seen = self.seen.lock().expect("activity lock");
        let s = seen.entry(a.env_id.clone()).or_insert(Seen {
            first_report: now,
            last_report: now,
            last_active: None,
            interval: Duration::from_millis(a.interval_ms),
        });
        s.last_report = now;
        s.interval = Duration::from_millis(a.interval_ms);
        if is_active(a, t) {
            s.last_active = Some(now);
        }
    }

    /// The environment's activity as the engine sees it at `now`.
    pub fn activity(&self, env: &EnvId, now: Timestamp) -> Activity {
        let seen = self.seen.lock().expect("activity lock");
        let Some(s) = seen.get(env) else {
            return Activity::Unreported;
        };
        let stale = (s.interval * STALE_INTERVALS).max(MIN_STALE);
        let age = now.duration_since(s.last_report);
        if age > SignedDuration::try_from(stale).unwrap_or(SignedDuration::MAX) {
            return Activity::Unreported;
        }
        Activity::IdleSince(s.last_active.unwrap_or(s.first_report))
    }

    /// The last time it was active, if it ever was since the controller started.
    pub fn last_active(&self, env: &EnvId) -> Option<Timestamp> {
        self.seen
            .lock()
            .expect("activity lock")
            .get(env)
            .and_then(|s| s.last_active)
    }

    pub fn forget(&self, env: &EnvId) {
        self.seen.lock().expect("activity lock").remove(env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        cpu_percent: 5.0,
        net_bytes_per_sec: 1000,
    };

    fn sample(env: &EnvId, cpu: f32, net: u64) -> EnvActivity {
        EnvActivity {
            env_id: env.clone(),
            cpu_percent: cpu,
            net_bytes: net,
            interval_ms: 10_000,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn cpu_or_network_above_the_thresholds_is_activity() {
        let e = EnvId::generate();
        assert!(!is_active(&sample(&e, 5.0, 10_000), T));
        assert!(is_active(&sample(&e, 5.1, 0), T));
        assert!(is_active(&sample(&e, 0.0, 10_001), T));
    }

    #[test]
    fn idle_since_the_last_active_interval_or_the_first_report() {
        let tr = Tracker::default();
        let e = EnvId::generate();
        assert_eq!(
            tr.activity(&e, at("2026-01-01T00:00:00Z")),
            Activity::Unreported
        );
        tr.record(&sample(&e, 0.0, 0), at("2026-01-01T00:00:00Z"), T);
        assert_eq!(
            tr.activity(&e, at("2026-01-01T00:00:10Z")),
            Activity::IdleSince(at("2026-01-01T00:00:00Z"))
        );
        tr.record(&sample(&e, 50.0, 0), at("2026-01-01T00:00:10Z"), T);
        tr.record(&sample(&e, 0.0, 0), at("2026-01-01T00:00:20Z"), T);
        assert_eq!(
            tr.activity(&e, at("2026-01-01T00:00:25Z")),
            Activity::IdleSince(at("2026-01-01T00:00:10Z"))
        );
        // Reports stopped: idleness can no longer be judged.
        assert_eq!(
            tr.activity(&e, at("2026-01-01T00:01:00Z")),
            Activity::Unreported
        );
        tr.forget(&e);
        assert_eq!(tr.last_active(&e), None);
    }
}
