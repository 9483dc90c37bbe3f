//! Seams between the log and its runtime, so that a simulation can drive time and tasks: a [`Clock`] for every
//! time the log reads, and a [`Spawner`] for its background tasks and timers. [`LogRuntime::default`] is the real
//! thing (the system clock, glommio); tests use [`ManualClock`].

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future::BoxedLocal;

/// Where the log reads time.
pub trait Clock {
    /// Wall-clock milliseconds since the Unix epoch, as Kafka timestamps are: LogAppendTime, `segment.ms` ages.
    fn now_ms(&self) -> i64;
    /// Monotonic time, for intervals and deadlines (the `flush.ms` interval).
    fn now(&self) -> Instant;
}

/// The machine's clocks.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::types::now_ms()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; both readings move together.
#[derive(Debug)]
pub struct ManualClock {
    wall_ms: Cell<i64>,
    origin: Instant,
    elapsed: Cell<Duration>,
}

impl ManualClock {
    pub fn new(wall_ms: i64) -> ManualClock {
        ManualClock {
            wall_ms: Cell::new(wall_ms),
            origin: Instant::now(),
            elapsed: Cell::new(Duration::ZERO),
        }
    }

    pub fn advance(&self, duration: Duration) {
        self.wall_ms.set(self.wall_ms.get() + duration.as_millis() as i64);
        self.elapsed.set(self.elapsed.get() + duration);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms.get()
    }

    fn now(&self) -> Instant {
        self.origin + self.elapsed.get()
    }
}

/// How the log runs its background work: the flusher, read-ahead, and the flusher's interval timer. Single-threaded:
/// the futures are not `Send`, and a spawned task runs on the caller's executor.
pub trait Spawner {
    /// Runs `task` to completion in the background; nothing joins it (the log tracks its own tasks' ends).
    fn spawn_detached(&self, task: BoxedLocal<()>);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> BoxedLocal<()>;
    /// Lets other tasks run if this one has had the executor for long enough.
    fn yield_if_needed(&self) -> BoxedLocal<()>;
}

/// glommio's task queue and timers on the current executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioSpawner;

impl Spawner for GlommioSpawner {
    fn spawn_detached(&self, task: BoxedLocal<()>) {
        glommio::spawn_local(task).detach();
    }

    fn sleep(&self, duration: Duration) -> BoxedLocal<()> {
        Box::pin(glommio::timer::sleep(duration))
    }

    fn yield_if_needed(&self) -> BoxedLocal<()> {
        Box::pin(glommio::yield_if_needed())
    }
}

/// The clock and spawner a log uses; see [`crate::Log::open_with_runtime`].
#[derive(Clone)]
pub struct LogRuntime {
    pub clock: Rc<dyn Clock>,
    pub spawner: Rc<dyn Spawner>,
}

impl Default for LogRuntime {
    fn default() -> Self {
        LogRuntime { clock: Rc::new(SystemClock), spawner: Rc::new(GlommioSpawner) }
    }
}

impl fmt::Debug for LogRuntime {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("LogRuntime").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_both_readings_only_when_advanced() {
        let clock = ManualClock::new(1_000);
        let (wall, monotonic) = (clock.now_ms(), clock.now());
        assert_eq!((clock.now_ms(), clock.now()), (wall, monotonic));
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), 2_500);
        assert_eq!(clock.now() - monotonic, Duration::from_millis(1_500));
    }
}
