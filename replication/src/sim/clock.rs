//! Simulated time: a clock that moves only when the simulator moves it.

use std::time::Duration;

use crate::seams::Clock;

/// The simulator's clock. Time starts at zero and jumps straight to the next event, so a simulated minute costs only
/// the work done in it. The wall clock is the monotonic clock plus a fixed start, an arbitrary but fixed instant, so
/// that record timestamps replay too.
#[derive(Clone, Debug)]
pub struct SimClock {
    now: Duration,
    wall_start_ms: i64,
}

impl SimClock {
    /// 2025-01-01T00:00:00Z: a plausible present, fixed so that a seed replays the same timestamps.
    pub const WALL_START_MS: i64 = 1_735_689_600_000;

    pub fn new() -> SimClock {
        SimClock { now: Duration::ZERO, wall_start_ms: SimClock::WALL_START_MS }
    }

    /// Moves time forward to `time`. Time never moves backwards, so asking for that is a bug in the simulator.
    pub fn advance_to(&mut self, time: Duration) {
        assert!(time >= self.now, "simulated time would move backwards from {:?} to {:?}", self.now, time);
        self.now = time;
    }

    pub fn now(&self) -> Duration {
        self.now
    }
}

impl Default for SimClock {
    fn default() -> SimClock {
        SimClock::new()
    }
}

impl Clock for SimClock {
    fn monotonic(&self) -> Duration {
        self.now
    }

    fn wall_ms(&self) -> i64 {
        // Simulated runs last hours at most, so the millisecond count fits an i64 with room to spare.
        self.wall_start_ms + self.now.as_millis() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The wall clock follows the monotonic one from a fixed start, and time never goes backwards.
    #[test]
    fn advances_monotonically() {
        let mut clock = SimClock::new();
        assert_eq!(clock.wall_ms(), SimClock::WALL_START_MS);
        clock.advance_to(Duration::from_millis(1_500));
        assert_eq!(clock.monotonic(), Duration::from_millis(1_500));
        assert_eq!(clock.wall_ms(), SimClock::WALL_START_MS + 1_500);
        clock.advance_to(Duration::from_millis(1_500));
        let result = std::panic::catch_unwind(move || clock.advance_to(Duration::from_millis(1_499)));
        assert!(result.is_err());
    }
}
