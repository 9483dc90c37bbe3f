//! Time for the load generator: one monotonic nanosecond clock anchored to the wall clock at start-up, and the rate
//! clock that gives every message of an open-loop producer its intended send time.
//!
//! Producers and consumers run in one process, so a monotonic clock is enough for end-to-end latency and cannot
//! jump when NTP steps the wall clock; anchoring it to the wall clock keeps record timestamps meaningful to brokers.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    wall_ns: u64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        wall_ns: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64),
    })
}

/// Nanoseconds since the Unix epoch, monotonic within this process.
pub fn now_ns() -> u64 {
    let anchor = anchor();
    anchor.wall_ns + anchor.instant.elapsed().as_nanos() as u64
}

/// Sleeps until `deadline_ns` (on `now_ns`'s scale); returns at once if it has passed.
pub fn sleep_until_ns(deadline_ns: u64) {
    let now = now_ns();
    if deadline_ns > now {
        std::thread::sleep(Duration::from_nanos(deadline_ns - now));
    }
}

/// Asks the kernel to wake this thread's sleeps within 1 µs of the deadline instead of the default 50 µs slack,
/// so that a 10 µs send interval is not rounded up into bursts.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer argument and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
}

/// The open-loop schedule: message `index` is due at `start_ns + index / rate`. The schedule never waits for the
/// system under test; a send that happens late is recorded as publish delay, so a stall cannot hide (no
/// coordinated omission).
#[derive(Debug, Clone)]
pub struct RateClock {
    start_ns: u64,
    rate_per_s: f64,
    index: u64,
}

impl RateClock {
    pub fn new(start_ns: u64, rate_per_s: f64) -> Self {
        assert!(rate_per_s > 0.0, "a rate clock needs a positive rate");
        RateClock { start_ns, rate_per_s, index: 0 }
    }

    /// The intended send time of message `index`, computed from the start rather than by adding intervals so that
    /// rounding cannot accumulate over millions of messages.
    pub fn intended_ns(&self, index: u64) -> u64 {
        self.start_ns + (index as f64 * 1e9 / self.rate_per_s).round() as u64
    }

    /// The next message's intended send time; advances the clock.
    pub fn next_intended_ns(&mut self) -> u64 {
        let intended = self.intended_ns(self.index);
        self.index += 1;
        intended
    }

    /// The next intended time without advancing.
    pub fn peek_ns(&self) -> u64 {
        self.intended_ns(self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_and_does_not_drift() {
        // Proves the schedule lands on exact multiples of the interval and is still exact at the billionth message.
        let mut clock = RateClock::new(1_000, 1e6);
        assert_eq!(clock.next_intended_ns(), 1_000);
        assert_eq!(clock.next_intended_ns(), 2_000);
        assert_eq!(clock.peek_ns(), 3_000);
        assert_eq!(clock.intended_ns(1_000_000_000), 1_000 + 1_000_000_000_000);
        let clock = RateClock::new(0, 3.0);
        assert_eq!(clock.intended_ns(3), 1_000_000_000);
        assert_eq!(clock.intended_ns(3_000_000), 1_000_000_000_000_000);
    }

    #[test]
    fn schedule_ignores_late_sends() {
        // Proves the open loop: however late the caller is, the next intended time stays on the original schedule,
        // so the lateness shows up as delay instead of silently lowering the offered rate.
        let mut clock = RateClock::new(0, 1000.0);
        let first = clock.next_intended_ns();
        std::thread::sleep(Duration::from_millis(5));
        let second = clock.next_intended_ns();
        assert_eq!(second - first, 1_000_000);
        assert!(now_ns() > second, "the caller is now behind, and the delay is now_ns - intended");
    }

    #[test]
    fn now_is_monotonic_and_near_wall_clock() {
        // Proves the anchored clock moves forward and starts within a second of the wall clock.
        let first = now_ns();
        let second = now_ns();
        assert!(second >= first);
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        assert!(wall.abs_diff(first) < 1_000_000_000);
    }
}
