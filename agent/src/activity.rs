//! Activity for the controller's idle policy: every `activity_interval` the
//! agent reads each running environment's cumulative counters from its
//! runtime and reports the rates over the interval.

use std::collections::HashMap;
use std::time::Instant;

use metrom_protocol::ids::EnvId;
use metrom_protocol::messages::agent::EnvActivity;

use crate::runtime::Counters;

/// The previous reading per environment.
#[derive(Default)]
pub struct Sampler {
    prev: HashMap<EnvId, (Instant, Counters)>,
}

impl Sampler {
    /// Takes this round's readings; returns a report for each environment
    /// read last round too. Environments without a reading are forgotten.
    pub fn round(&mut self, readings: Vec<(EnvId, Counters)>, now: Instant) -> Vec<EnvActivity> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(readings.len());
        for (env, c) in readings {
            if let Some((then, before)) = self.prev.get(&env)
                && let Some(a) = rate(&env, before, &c, now.duration_since(*then))
            {
                out.push(a);
            }
            next.insert(env, (now, c));
        }
        self.prev = next;
        out
    }
}

/// The activity between two readings. Pure; `None` for an empty interval.
/// Counters that went backwards (the instance restarted) count from zero.
pub fn rate(
    env: &EnvId,
    before: &Counters,
    after: &Counters,
    elapsed: std::time::Duration,
) -> Option<EnvActivity> {
    if elapsed.is_zero() {
        return None;
    }
    let cpu = after
        .cpu_ns
        .checked_sub(before.cpu_ns)
        .unwrap_or(after.cpu_ns);
    let net = after
        .net_bytes
        .checked_sub(before.net_bytes)
        .unwrap_or(after.net_bytes);
    Some(EnvActivity {
        env_id: env.clone(),
        cpu_percent: (cpu as f64 / elapsed.as_nanos() as f64 * 100.0) as f32,
        net_bytes: net,
        interval_ms: elapsed.as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_come_from_two_readings() {
        let e = EnvId::generate();
        let t0 = Instant::now();
        let mut s = Sampler::default();
        assert!(
            s.round(vec![(e.clone(), Counters::default())], t0)
                .is_empty()
        );
        let after = Counters {
            cpu_ns: 5_000_000_000,
            net_bytes: 4096,
        };
        let out = s.round(vec![(e.clone(), after)], t0 + Duration::from_secs(10));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].cpu_percent, 50.0);
        assert_eq!((out[0].net_bytes, out[0].interval_ms), (4096, 10_000));
        // A restart resets the counters: the new values count.
        let out = s.round(
            vec![(
                e.clone(),
                Counters {
                    cpu_ns: 1_000_000_000,
                    net_bytes: 0,
                },
            )],
            t0 + Duration::from_secs(20),
        );
        assert_eq!(out[0].cpu_percent, 10.0);
        // Gone for a round: forgotten.
        assert!(s.round(vec![], t0 + Duration::from_secs(30)).is_empty());
        assert!(
            s.round(vec![(e, after)], t0 + Duration::from_secs(40))
                .is_empty()
        );
    }
}
