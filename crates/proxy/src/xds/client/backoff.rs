//! How long to wait before the next connection attempt: exponential, capped, and jittered so a
//! fleet of proxies that lost the same pilot does not come back in lockstep. Pure: the caller
//! owns the clock and the randomness.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            failures: 0,
        }
    }

    /// Start again from `initial` (after a stream that delivered something).
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The delay after one more failure: the ceiling `initial * 2^failures` (at most `max`),
    /// of which a uniformly random half is taken off.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures))
            .min(self.max);
        // Past 2^31 the ceiling is long saturated; stop counting rather than overflow.
        self.failures = (self.failures + 1).min(31);
        rng.random_range(ceiling / 2..=ceiling)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn backoff() -> Backoff {
        Backoff::new(100 * MS, 5000 * MS)
    }

    #[test]
    fn delays_double_within_their_jitter_band_until_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut b = backoff();
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for (i, ceiling) in ceilings.into_iter().enumerate() {
            let d = b.next_delay(&mut rng);
            let ceiling = ceiling * MS;
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "attempt {i}: {d:?} outside [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
    }

    #[test]
    fn delays_are_jittered_across_the_band() {
        let mut rng = StdRng::seed_from_u64(42);
        let mut b = backoff();
        for _ in 0..10 {
            b.next_delay(&mut rng); // reach the cap
        }
        let capped: Vec<Duration> = (0..200).map(|_| b.next_delay(&mut rng)).collect();
        let (min, max) = (capped.iter().min(), capped.iter().max());
        assert!(
            min < Some(&(2750 * MS)),
            "low end of the band reached: {min:?}"
        );
        assert!(
            max > Some(&(4750 * MS)),
            "high end of the band reached: {max:?}"
        );
        assert!(capped.iter().all(|d| *d >= 2500 * MS && *d <= 5000 * MS));
    }

    #[test]
    fn reset_starts_from_the_initial_delay() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut b = backoff();
        for _ in 0..6 {
            b.next_delay(&mut rng);
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= 100 * MS);
    }

    #[test]
    fn survives_absurd_failure_counts() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut b = Backoff::new(Duration::from_secs(1), Duration::MAX);
        for _ in 0..100 {
            b.next_delay(&mut rng);
        }
        assert!(b.next_delay(&mut rng) >= Duration::from_secs(1 << 30));
    }
}
