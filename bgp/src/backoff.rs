//! How long a session waits before the next connection attempt: 200 ms doubling to 5 s,
//! each wait drawn between 3/4 of the step and the whole of it (RFC 4271 §10's jitter), so
//! that the nodes of a cluster that all lost the same router do not call back in step.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The first wait.
pub(crate) const INITIAL: Duration = Duration::from_millis(200);
/// The longest wait. A session that stayed up at least this long starts again from
/// [`INITIAL`]; a shorter one (a router that accepts, then refuses) keeps doubling.
pub(crate) const MAX: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Backoff {
    step: Duration,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        // A random seed without a dependency: std seeds every RandomState from the OS.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Backoff::with_seed(seed)
    }

    fn with_seed(seed: u64) -> Backoff {
        Backoff {
            step: INITIAL,
            rng: seed | 1,
        }
    }

    /// The next wait; the step after it doubles up to [`MAX`].
    pub(crate) fn next_wait(&mut self) -> Duration {
        // xorshift64: plenty for jitter.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let fraction = 0.75 + 0.25 * (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        let wait = self.step.mul_f64(fraction);
        self.step = (self.step * 2).min(MAX);
        wait
    }

    pub(crate) fn reset(&mut self) {
        self.step = INITIAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_200_ms_to_5_s_with_jitter_below_each_step() {
        let mut b = Backoff::with_seed(42);
        let steps = [200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ms in steps {
            let step = Duration::from_millis(ms);
            let w = b.next_wait();
            assert!(
                w <= step && w >= step.mul_f64(0.75),
                "{w:?} for step {step:?}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= INITIAL);
    }

    #[test]
    fn two_speakers_do_not_wait_in_step() {
        let mut a = Backoff::with_seed(1);
        let mut b = Backoff::with_seed(2);
        let same = (0..10).filter(|_| a.next_wait() == b.next_wait()).count();
        assert!(same < 10);
    }
}
