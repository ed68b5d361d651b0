//! The one backoff of every retry loop (the client's requests, metadata, the group and
//! transaction coordinators, fetches, produce batches, the engine's handlers):
//! exponential from a base to a cap, with jitter where many clients may retry together.

use std::time::Duration;

use crate::config::ClientConfig;

/// Waits before retries: `base * 2^(attempt - 1)`, at most `max`, scaled by a jitter in
/// [0.8, 1.2) unless made [`exact`](Backoff::exact).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    jitter: bool,
}

impl Backoff {
    /// Jittered, from `base` to `max`.
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            jitter: true,
        }
    }

    /// Without jitter (waits a user configured and expects to see as configured).
    pub(crate) fn exact(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            jitter: false,
        }
    }

    /// `retry.backoff.ms` to `retry.backoff.max.ms`, jittered.
    pub(crate) fn of(cfg: &ClientConfig) -> Self {
        Backoff::new(cfg.retry_backoff, cfg.retry_backoff_max)
    }

    /// The wait before retry number `attempt` (1 for the first).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        if self.jitter {
            jitter(exp)
        } else {
            exp
        }
    }

    /// Successive waits, for a loop: the first retry's, then the second's, ...
    pub(crate) fn delays(self) -> Delays {
        Delays {
            backoff: self,
            attempt: 0,
        }
    }
}

/// The waits of one retry loop, in turn.
#[derive(Debug, Clone)]
pub(crate) struct Delays {
    backoff: Backoff,
    attempt: u32,
}

impl Delays {
    /// The wait before the next retry.
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        self.backoff.delay(self.attempt)
    }

    /// Retries so far (the number of waits handed out).
    pub(crate) fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// `d` scaled by a factor in [0.8, 1.2), so clients that failed together do not retry
/// together.
pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.8 + f64::from(nanos % 400) / 1000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::exact(Duration::from_millis(100), Duration::from_millis(1000));
        let got: Vec<u128> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_millis(1000));
        let mut d = b.delays();
        assert_eq!(d.next_delay(), Duration::from_millis(100));
        assert_eq!(d.next_delay(), Duration::from_millis(200));
        assert_eq!(d.attempts(), 2);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for _ in 0..100 {
            let j = b.delay(1);
            assert!(j >= Duration::from_millis(80) && j < Duration::from_millis(120));
        }
    }
}
