//! Reconnection delays: exponential with full jitter (a random delay between
//! zero and the exponential cap), so a thousand agents that lost their
//! controller at the same moment do not all come back at the same moment.

use std::time::Duration;

/// Exponential backoff state.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The cap for the current attempt: base × 2^attempt, at most `max`.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, given a random fraction in [0, 1); advances the attempt.
    pub fn next_with(&mut self, fraction: f64) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        // Never zero: at least a tenth of the base, so a flapping peer is not hammered.
        cap.mul_f64(fraction.clamp(0.0, 1.0)).max(self.base / 10)
    }

    /// The next delay with a random fraction.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// After a successful session.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_exponentially_to_the_max() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let caps: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.cap().as_millis() as u64;
                b.next_with(0.5);
                c
            })
            .collect();
        assert_eq!(
            caps,
            vec![
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
    }

    #[test]
    fn jitter_stays_within_the_cap_and_above_a_floor() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(b.next_with(0.0), Duration::from_millis(50));
        assert_eq!(b.next_with(1.0), Duration::from_millis(1000));
        b.reset();
        assert_eq!(b.attempt(), 0);
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(30));
        }
    }
}
