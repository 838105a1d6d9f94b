//! The dispatcher's clock, in Unix milliseconds: the wall clock in service; in tests, a clock
//! that follows tokio's (paused) time, so rounds, retries and holds run deterministically and
//! without waiting.

use crate::model::now_ms;

/// Where "now" comes from.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    /// `SystemTime::now()`: what records and the admin API show.
    Wall,
    /// `base_ms` plus the tokio time elapsed since `start`: moves with `tokio::time::advance`
    /// and with a paused runtime's auto-advance.
    #[cfg_attr(not(test), allow(dead_code))]
    Tokio {
        base_ms: i64,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `base_ms` now and moves with tokio's time.
    #[cfg(test)]
    pub fn tokio(base_ms: i64) -> Self {
        Self::Tokio {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        match self {
            Self::Wall => now_ms(),
            Self::Tokio { base_ms, start } => {
                base_ms + i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
            }
        }
    }
}
