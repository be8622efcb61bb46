//! Rank scorers: how good a feasible host is for a placement. Higher scores
//! win; `Scheduler::best` breaks ties by host id. Wired in `mod.rs`.

use super::Limits;

/// A scorer's verdict on one host. Integer, so equal really means equal and
/// ties are broken the same way on every machine.
pub(super) type Score = i64;

/// How full a host is: the sum of its cpu, memory and disk fractions of the
/// overcommitted limits, each in millionths and capped at 1 (so 0 ..= 3,000,000).
/// A resource the host has none of counts as full. Nomad's binpack, as a mean
/// rather than its exponential curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Utilisation(u64);

/// Parts per million in one fraction.
const PPM: u64 = 1_000_000;

impl Utilisation {
    /// Utilisation with `cpus`, `memory_mb` and `disk_gb` in use.
    pub fn of(limits: &Limits, cpus: u64, memory_mb: u64, disk_gb: u64) -> Utilisation {
        Utilisation(
            fraction(cpus, limits.cpus)
                + fraction(memory_mb, limits.memory_mb)
                + fraction(disk_gb, limits.disk_gb),
        )
    }

    /// The mean of the three fractions, 0.0 ..= 1.0.
    pub fn mean(self) -> f64 {
        self.0 as f64 / (3 * PPM) as f64
    }
}

/// Binpack: the fuller the host ends up, the better, so whole hosts stay idle.
pub(super) fn binpack(after: Utilisation) -> Score {
    after.0 as Score
}

/// Spread: the emptier the host ends up, the better, so load is even.
pub(super) fn spread(after: Utilisation) -> Score {
    -(after.0 as Score)
}

/// `used / limit` in millionths, capped at one million.
fn fraction(used: u64, limit: u64) -> u64 {
    if limit == 0 {
        return PPM;
    }
    let ppm = u128::from(used) * u128::from(PPM) / u128::from(limit);
    ppm.min(u128::from(PPM)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilisation_is_the_mean_of_capped_fractions() {
        let limits = Limits {
            cpus: 8,
            memory_mb: 1000,
            disk_gb: 0,
        };
        let u = Utilisation::of(&limits, 4, 250, 0);
        assert_eq!(u, Utilisation(500_000 + 250_000 + PPM));
        assert!((u.mean() - 0.5833).abs() < 1e-3);
        assert_eq!(Utilisation::of(&limits, 80, 5000, 9), Utilisation(3 * PPM));
        let huge = Limits {
            cpus: u64::MAX,
            memory_mb: u64::MAX,
            disk_gb: u64::MAX,
        };
        assert_eq!(Utilisation::of(&huge, u64::MAX, 0, 0), Utilisation(PPM));
    }

    #[test]
    fn binpack_prefers_fuller_spread_emptier() {
        let (full, empty) = (Utilisation(2_000_000), Utilisation(100));
        assert!(binpack(full) > binpack(empty));
        assert!(spread(empty) > spread(full));
    }
}
