//! The Resource Monitor's past: a ring of memory readings taken every few seconds by the
//! runtime, so that the window shows the last minutes when it opens (or is reloaded) instead of
//! an empty chart, and need not poll while the Monitor is hidden.

use super::MemorySource;
use ipc::system::MemorySample;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How far back the ring reaches.
pub const KEEP_MS: u64 = 10 * 60 * 1000;
/// Between two readings.
pub const EVERY: Duration = Duration::from_secs(2);

/// The readings of the last [`KEEP_MS`], oldest first.
#[derive(Clone, Debug, Default)]
pub struct MemoryHistory {
    ring: Arc<Mutex<VecDeque<MemorySample>>>,
}

impl MemoryHistory {
    /// Adds a reading and drops those more than [`KEEP_MS`] older than it. A reading older
    /// than the newest (a clock step back) replaces nothing and is dropped.
    pub fn push(&self, sample: MemorySample) {
        let mut ring = self.ring.lock().unwrap();
        if ring.back().is_some_and(|last| last.at_ms > sample.at_ms) {
            return;
        }
        let cutoff = sample.at_ms.saturating_sub(KEEP_MS);
        while ring.front().is_some_and(|s| s.at_ms < cutoff) {
            ring.pop_front();
        }
        ring.push_back(sample);
    }

    pub fn samples(&self) -> Vec<MemorySample> {
        self.ring.lock().unwrap().iter().cloned().collect()
    }

    /// Reads `source` every `every` for as long as the returned task lives. The reading runs
    /// on a blocking thread (NVML and sysfs reads may stall), never under the ring's lock; a
    /// failed reading is skipped.
    pub fn sample_every(
        &self,
        source: Arc<dyn MemorySource>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let history = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let source = source.clone();
                let read = tokio::task::spawn_blocking(move || source.memory_now()).await;
                if let Ok(Ok(now)) = read {
                    history.push(MemorySample { at_ms: crate::now_ms(), now });
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Result;
    use ipc::system::{MemoryInfo, MemoryNow};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn sample(at_ms: u64, available: u64) -> MemorySample {
        MemorySample {
            at_ms,
            now: MemoryNow {
                memory: MemoryInfo { total_bytes: 100, available_bytes: available },
                gpus: vec![],
            },
        }
    }

    #[test]
    fn keeps_ten_minutes_oldest_first() {
        let h = MemoryHistory::default();
        // (at, available) pushed; what is left afterwards (by time).
        let table: &[(u64, &[u64])] = &[
            (1_000, &[1_000]),
            (3_000, &[1_000, 3_000]),
            (KEEP_MS + 1_000, &[1_000, 3_000, KEEP_MS + 1_000]),
            (KEEP_MS + 2_000, &[3_000, KEEP_MS + 1_000, KEEP_MS + 2_000]),
            // The clock went back: ignored.
            (2_000, &[3_000, KEEP_MS + 1_000, KEEP_MS + 2_000]),
            (3 * KEEP_MS, &[3 * KEEP_MS]),
        ];
        for (at, left) in table {
            h.push(sample(*at, 50));
            let times: Vec<u64> = h.samples().iter().map(|s| s.at_ms).collect();
            assert_eq!(times, *left, "after {at}");
        }
    }

    /// A source whose available memory counts its readings; every third reading fails.
    struct Counting(AtomicU64);

    impl MemorySource for Counting {
        fn memory_now(&self) -> Result<MemoryNow> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            if n.is_multiple_of(3) {
                return Err(crate::RuntimeError::Internal("sensor gone".into()));
            }
            Ok(sample(0, n).now)
        }

        fn gpu_names(&self) -> Vec<(String, String)> {
            vec![]
        }
    }

    #[tokio::test]
    async fn the_sampler_reads_on_its_own_and_skips_failed_readings() {
        let h = MemoryHistory::default();
        let task = h.sample_every(Arc::new(Counting(AtomicU64::new(0))), Duration::from_millis(5));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.samples().len() < 4 {
            assert!(std::time::Instant::now() < deadline, "the sampler did not read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let read: Vec<u64> = h.samples().iter().map(|s| s.now.memory.available_bytes).collect();
        assert_eq!(&read[..4], &[1, 2, 4, 5], "the failed third reading is skipped");
    }
}
