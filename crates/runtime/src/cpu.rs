//! CPU follows memory, as on AWS Lambda: a function gets a share of one core proportional to
//! its memory size, a full core at the node's `cpu_full_core_bytes` (1,769 MiB by default).
//!
//! The share is a quota per period, as Linux's CFS bandwidth control enforces it for Lambda:
//! in every 100 ms a function may run `share × 100 ms`; past that it is paused until the
//! period ends. Short requests run at full speed (a 0.5 ms handler never meets its quota),
//! while sustained computation runs at `share` of a core. The check runs in the epoch
//! callback, once per millisecond of guest execution, and pauses by sleeping on the tokio
//! timer, so a throttled guest holds no worker thread.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::EPOCH_TICK;

/// The accounting period of the CPU quota (Linux's default `cfs_period_us`).
pub const CPU_PERIOD: Duration = Duration::from_millis(100);

/// Memory size that buys one full core unless the node says otherwise (as on AWS Lambda).
pub const DEFAULT_FULL_CORE_BYTES: u64 = 1769 << 20;

/// How much of one core a function may use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CpuShare {
    /// A fraction of one core, in (0, 1].
    Fraction(f64),
    /// No quota (`cpu = "unthrottled"`, or a node with proportional CPU off).
    Unthrottled,
}

impl CpuShare {
    /// The share a function of `memory_bytes` gets on a node where `full_core_bytes` buys a
    /// full core.
    pub fn for_memory(memory_bytes: u64, full_core_bytes: u64) -> CpuShare {
        if full_core_bytes == 0 || memory_bytes >= full_core_bytes {
            return CpuShare::Unthrottled;
        }
        CpuShare::Fraction((memory_bytes as f64 / full_core_bytes as f64).max(0.001))
    }
}

/// One instance's CPU accounting, kept in its store.
pub(crate) struct CpuThrottle {
    quota: Option<Duration>,
    base: Instant,
    /// When the guest last resumed after a pause or yield, in nanoseconds after `base`;
    /// written by the pause future as it completes. Made at the first callback, so a short
    /// request allocates nothing for it.
    resumed: Option<Arc<AtomicU64>>,
    period_start: Instant,
    used: Duration,
    throttled: Duration,
}

/// What the epoch callback should do next.
pub(crate) type Pause = Pin<Box<dyn Future<Output = ()> + Send>>;

impl CpuThrottle {
    pub(crate) fn new(share: CpuShare, now: Instant) -> CpuThrottle {
        let quota = match share {
            CpuShare::Fraction(f) => Some(CPU_PERIOD.mul_f64(f)),
            CpuShare::Unthrottled => None,
        };
        CpuThrottle {
            quota,
            base: now,
            resumed: None,
            period_start: now,
            used: Duration::ZERO,
            throttled: Duration::ZERO,
        }
    }

    /// Time spent paused for being over the quota.
    pub(crate) fn throttled(&self) -> Duration {
        self.throttled
    }

    /// Accounts for the time the guest ran since it last resumed, and returns the future
    /// to yield on: a pause to the end of the period when the quota is spent (never past
    /// `deadline`), else a plain yield.
    pub(crate) fn tick(&mut self, now: Instant, deadline: Instant) -> Pause {
        let Some(quota) = self.quota else {
            return Box::pin(tokio::task::yield_now());
        };
        let resumed = self.base
            + self.resumed.as_ref().map_or(Duration::ZERO, |r| {
                Duration::from_nanos(r.load(Ordering::Acquire))
            });
        // Between two callbacks the guest ran about one tick; a longer gap means it waited
        // on the host (I/O), which costs no CPU quota.
        let ran = now.saturating_duration_since(resumed).min(EPOCH_TICK * 2);
        if now.saturating_duration_since(self.period_start) >= CPU_PERIOD {
            self.period_start = now;
            self.used = Duration::ZERO;
        }
        self.used += ran;
        if self.used < quota {
            return self.resume_after(Box::pin(tokio::task::yield_now()));
        }
        let period_end = self.period_start + CPU_PERIOD;
        let pause = period_end
            .min(deadline)
            .saturating_duration_since(now)
            .max(EPOCH_TICK);
        self.throttled += pause;
        self.period_start = now + pause;
        self.used = Duration::ZERO;
        self.resume_after(Box::pin(tokio::time::sleep(pause)))
    }

    fn resume_after(&mut self, wait: Pause) -> Pause {
        let resumed = self
            .resumed
            .get_or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone();
        let base = self.base;
        Box::pin(async move {
            wait.await;
            resumed.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_grows_with_memory_up_to_one_core() {
        let full = DEFAULT_FULL_CORE_BYTES;
        let CpuShare::Fraction(small) = CpuShare::for_memory(128 << 20, full) else {
            panic!("128 MiB is throttled");
        };
        assert!((small - 128.0 / 1769.0).abs() < 1e-9);
        let CpuShare::Fraction(half) = CpuShare::for_memory(full / 2, full) else {
            panic!()
        };
        assert!((half - 0.5).abs() < 1e-3);
        assert_eq!(CpuShare::for_memory(full, full), CpuShare::Unthrottled);
        assert_eq!(CpuShare::for_memory(4 << 30, full), CpuShare::Unthrottled);
        assert_eq!(CpuShare::for_memory(128 << 20, 0), CpuShare::Unthrottled);
    }

    /// Runs `ticks` epoch callbacks of a guest that computes without pause, one tick apart,
    /// on tokio's paused clock; returns the time it was paused.
    async fn compute(cpu: &mut CpuThrottle, ticks: u32, deadline: Instant) -> Duration {
        let mut paused = Duration::ZERO;
        for _ in 0..ticks {
            let resumed = cpu.base
                + cpu.resumed.as_ref().map_or(Duration::ZERO, |r| {
                    Duration::from_nanos(r.load(Ordering::Acquire))
                });
            let now = resumed + EPOCH_TICK;
            let before = tokio::time::Instant::now();
            cpu.tick(now, deadline).await;
            let waited = tokio::time::Instant::now() - before;
            paused += waited;
            // The real clock does not move under a paused tokio clock: resume by hand.
            if let Some(r) = &cpu.resumed {
                r.store(
                    (now + waited - cpu.base).as_nanos() as u64,
                    Ordering::Release,
                );
            }
        }
        paused
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_over_its_quota_pauses_to_the_end_of_the_period() {
        let start = Instant::now();
        // A tenth of a core: 10 ms of every 100 ms.
        let mut cpu = CpuThrottle::new(CpuShare::Fraction(0.1), start);
        let paused = compute(&mut cpu, 50, start + Duration::from_secs(10)).await;
        // 50 ms of computing at 10 ms per 100 ms period: five pauses of 90 ms.
        assert_eq!(cpu.throttled(), paused);
        assert_eq!(cpu.throttled(), Duration::from_millis(450));
    }

    #[tokio::test(start_paused = true)]
    async fn short_bursts_and_unthrottled_guests_never_pause() {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(10);
        let mut small = CpuThrottle::new(CpuShare::Fraction(0.07), start);
        compute(&mut small, 5, deadline).await;
        assert_eq!(
            small.throttled(),
            Duration::ZERO,
            "5 ms is within a 7 ms quota"
        );
        let mut free = CpuThrottle::new(CpuShare::Unthrottled, start);
        assert_eq!(compute(&mut free, 1000, deadline).await, Duration::ZERO);
        assert_eq!(free.throttled(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_never_runs_past_the_deadline() {
        let start = Instant::now();
        let mut cpu = CpuThrottle::new(CpuShare::Fraction(0.01), start);
        compute(&mut cpu, 1, start + Duration::from_millis(20)).await;
        // 1 ms of quota: spent by the first tick; the pause stops at the deadline.
        assert_eq!(cpu.throttled(), Duration::from_millis(19));
    }
}
