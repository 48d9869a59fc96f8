//! Random-exponential backoff (SPEC §4): after the n-th failed attempt wait a
//! uniformly random time in `[min, clamp(multiplier * 2^(n-1), min, max)]`.

use crate::settings::Settings;

/// The backoff parameters, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Multiplier.
    pub multiplier_ms: u64,
    /// Lower bound of every wait.
    pub min_ms: u64,
    /// Upper bound of every wait.
    pub max_ms: u64,
}

impl Backoff {
    /// The backoff configured in `settings`; a `max` below `min` is raised to it.
    pub fn from_settings(s: &Settings) -> Self {
        let min_ms = u64::from(s.backoff_min_ms);
        Backoff {
            multiplier_ms: u64::from(s.backoff_multiplier_ms),
            min_ms,
            max_ms: u64::from(s.backoff_max_ms).max(min_ms),
        }
    }

    /// The window `[lo, hi]` (ms) to draw the wait from after attempt `n` (1-based).
    pub fn window(&self, n: u32) -> (u64, u64) {
        let exp = self
            .multiplier_ms
            .saturating_mul(1u64 << n.saturating_sub(1).min(62));
        (self.min_ms, exp.clamp(self.min_ms, self.max_ms))
    }

    /// The wait after attempt `n`, drawn with the random number `random`.
    pub fn wait_ms(&self, n: u32, random: u64) -> u64 {
        let (lo, hi) = self.window(n);
        lo + random % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> Backoff {
        Backoff::from_settings(&Settings::default())
    }

    #[test]
    fn default_waits_are_two_seconds_for_three_attempts() {
        assert_eq!(default().window(1), (2_000, 2_000));
        assert_eq!(default().window(2), (2_000, 2_000));
        assert_eq!(default().wait_ms(1, u64::MAX), 2_000);
    }

    #[test]
    fn window_widens_then_caps() {
        let b = default();
        assert_eq!(b.window(3), (2_000, 4_000));
        assert_eq!(b.window(4), (2_000, 8_000));
        assert_eq!(b.window(5), (2_000, 10_000));
        assert_eq!(b.window(64), (2_000, 10_000));
        for r in [0, 1, 7_999, 123_456_789, u64::MAX] {
            let w = b.wait_ms(4, r);
            assert!((2_000..=8_000).contains(&w), "{w}");
        }
    }

    #[test]
    fn max_below_min_is_raised() {
        let s = Settings {
            backoff_min_ms: 50,
            backoff_max_ms: 10,
            ..Settings::default()
        };
        assert_eq!(Backoff::from_settings(&s).window(9), (50, 50));
    }
}
