//! Exponential backoff with jitter: the one retry-delay rule of the host and every plugin
//! (reconnects, sign-ins, event channels, delivery retries, instance restarts).

use std::time::Duration;

/// Delays that grow by `factor` from `initial` up to `max`, each lengthened by a random part of
/// up to `jitter` × itself, so that many clients that failed together do not retry together.
///
/// The n-th delay (n from 1) is `min(initial × factorⁿ⁻¹, max)` plus up to `jitter` of that:
/// never shorter than the step, at most `max × (1 + jitter)`. [`Backoff::next`] counts failures
/// itself; [`Backoff::delay`] is for callers that keep the count elsewhere (a stored attempt
/// number).
///
/// ```
/// # use std::time::Duration;
/// # use alertbridge_plugin_api::kit::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
/// let first = b.next(); // 500 ms … 600 ms
/// assert!(first >= Duration::from_millis(500) && first <= Duration::from_millis(600));
/// b.reset(); // after a success
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// The first step.
    pub initial: Duration,
    /// The largest step.
    pub max: Duration,
    /// How much each step grows (at least 1).
    pub factor: u32,
    /// The largest random part of a delay, as a fraction of its step (0 for none).
    pub jitter: f64,
    failures: u32,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with up to 20 % jitter.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            factor: 2,
            jitter: 0.2,
            failures: 0,
        }
    }

    /// The same with another growth factor.
    #[must_use]
    pub const fn factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The same with another jitter fraction.
    #[must_use]
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The step (without jitter) after `n` consecutive failures (`n` from 1; 0 counts as 1).
    pub fn step(&self, n: u32) -> Duration {
        let mut step = self.initial.min(self.max);
        if self.factor <= 1 || step.is_zero() {
            return step;
        }
        for _ in 1..n.max(1) {
            if step >= self.max {
                break;
            }
            step = step.saturating_mul(self.factor).min(self.max);
        }
        step
    }

    /// The delay after `n` consecutive failures: its step plus the jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let step = self.step(n);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 || step.is_zero() {
            return step;
        }
        let extra =
            Duration::try_from_secs_f64(step.as_secs_f64() * jitter * rand::random::<f64>())
                .unwrap_or(Duration::MAX);
        step.saturating_add(extra)
    }

    /// Counts one more failure and answers the delay before the next try.
    #[allow(clippy::should_implement_trait)] // Endless: an Iterator's `Option` would only be unwrapped.
    pub fn next(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.delay(self.failures)
    }

    /// Forgets the failures (after a success): the next delay is the first again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Consecutive failures counted by [`Backoff::next`] since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_by_its_factor_up_to_the_max_with_jitter_above_the_step() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        for step in [100, 200, 400, 800, 1000, 1000] {
            let wait = b.next();
            let step = step * MS;
            assert!(
                wait >= step && wait <= step.mul_f64(1.2),
                "{wait:?} outside [{step:?}, {:?}]",
                step.mul_f64(1.2)
            );
        }
        assert_eq!(b.failures(), 6);
        b.reset();
        assert!(b.next() <= 120 * MS);
        let b = Backoff::new(250 * MS, 5000 * MS).factor(3).jitter(0.0);
        let steps: Vec<Duration> = (0..6).map(|n| b.delay(n)).collect();
        assert_eq!(
            steps,
            [
                250 * MS,
                250 * MS,
                750 * MS,
                2250 * MS,
                5000 * MS,
                5000 * MS
            ]
        );
    }

    #[test]
    fn jitter_spreads_delays_and_huge_counts_do_not_overflow() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).jitter(0.5);
        let delays: std::collections::BTreeSet<Duration> = (0..50).map(|_| b.delay(1)).collect();
        assert!(delays.len() > 10, "no spread: {delays:?}");
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(1)));
        assert!(b.delay(u32::MAX) <= Duration::from_secs(90));
        let odd = Backoff::new(Duration::MAX, Duration::MAX)
            .factor(0)
            .jitter(7.0);
        assert!(odd.delay(3) >= Duration::MAX / 2);
        assert_eq!(Backoff::new(Duration::ZERO, MS).delay(5), Duration::ZERO);
    }
}
