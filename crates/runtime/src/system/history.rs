//! The one place live memory is read. [`MemoryFeed`] reads RAM and VRAM at one pace for every
//! consumer: a sampler task reads every [`EVERY`] into a ring of the last ten minutes (the Resource
//! Monitor's past, shown at once when the tab opens), the window's figures are the newest reading
//! (no hardware read per poll), and decisions (the orchestrator, a server's settings) ask for a
//! reading at most [`FOR_DECISIONS`] old, which every other consumer then shares.

use super::MemorySource;
use crate::Result;
use ipc::system::{MemoryNow, MemorySample};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How far back the ring reaches.
pub const KEEP_MS: u64 = 10 * 60 * 1000;
/// Between two readings of the sampler.
pub const EVERY: Duration = Duration::from_secs(2);
/// The oldest reading a decision uses (the orchestrator polls for freed memory every 100 ms).
pub const FOR_DECISIONS: Duration = Duration::from_millis(100);
/// The oldest reading the window is shown: the sampler's, with slack for a late tick.
pub const FOR_DISPLAY: Duration = Duration::from_millis(EVERY.as_millis() as u64 + 1_000);

/// The readings of the last [`KEEP_MS`], oldest first.
#[derive(Clone, Debug, Default)]
pub struct MemoryHistory {
    ring: Arc<Mutex<VecDeque<MemorySample>>>,
}

impl MemoryHistory {
    /// Adds a reading and drops those more than [`KEEP_MS`] older than it. A reading older
    /// than the newest (a clock step back, or two readers racing) replaces nothing and is dropped.
    pub fn push(&self, sample: MemorySample) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
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
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

/// Live memory, read once for everyone who needs it at about the same time.
pub struct MemoryFeed {
    source: Arc<dyn MemorySource>,
    latest: Mutex<Option<(Instant, MemoryNow)>>,
    history: MemoryHistory,
    reads: AtomicU64,
}

impl std::fmt::Debug for MemoryFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFeed").field("reads", &self.hardware_reads()).finish()
    }
}

impl MemoryFeed {
    pub fn new(source: Arc<dyn MemorySource>) -> Self {
        Self {
            source,
            latest: Mutex::new(None),
            history: MemoryHistory::default(),
            reads: AtomicU64::new(0),
        }
    }

    /// The newest reading if it is at most `max_age` old, else a new one (recorded for every
    /// consumer and the ring). No lock is held while the hardware is read: NVML and sysfs may
    /// stall, and two callers racing past a stale reading both read, which costs one read more.
    /// Blocking: call it from a blocking thread where it may read.
    pub fn reading(&self, max_age: Duration) -> Result<MemoryNow> {
        if let Some((at, now)) = self.latest.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() <= max_age {
                return Ok(now.clone());
            }
        }
        let now = self.source.memory_now()?;
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.history.push(MemorySample { at_ms: crate::now_ms(), now: now.clone() });
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), now.clone()));
        Ok(now)
    }

    /// The readings of the last ten minutes.
    pub fn history(&self) -> &MemoryHistory {
        &self.history
    }

    /// How many times the hardware was read (for tests and the idle benchmark).
    pub fn hardware_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Reads every `every` for as long as the returned task lives, on a blocking thread; a tick
    /// that finds a reading younger than half a period (a decision just read) reads nothing. A
    /// failed reading is skipped.
    pub fn sample_every(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let feed = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let feed = feed.clone();
                let _ = tokio::task::spawn_blocking(move || feed.reading(every / 2)).await;
            }
        })
    }
}

/// Decisions read through the feed: a reading at most [`FOR_DECISIONS`] old.
impl MemorySource for MemoryFeed {
    fn memory_now(&self) -> Result<MemoryNow> {
        self.reading(FOR_DECISIONS)
    }

    fn gpu_names(&self) -> Vec<(String, String)> {
        self.source.gpu_names()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::system::MemoryInfo;

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
        let feed = Arc::new(MemoryFeed::new(Arc::new(Counting(AtomicU64::new(0)))));
        let task = feed.sample_every(Duration::from_millis(5));
        let h = feed.history();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.samples().len() < 4 {
            assert!(std::time::Instant::now() < deadline, "the sampler did not read");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        let read: Vec<u64> = h.samples().iter().map(|s| s.now.memory.available_bytes).collect();
        assert_eq!(&read[..4], &[1, 2, 4, 5], "the failed third reading is skipped");
    }

    #[test]
    fn one_reading_serves_every_consumer_younger_than_it_asks() {
        let feed = MemoryFeed::new(Arc::new(Counting(AtomicU64::new(0))));
        // (max age asked, hardware reads afterwards, available bytes answered): each reading
        // counts up, so the answer says which reading was given.
        let table: &[(Duration, u64, u64)] = &[
            (FOR_DISPLAY, 1, 1),    // nothing read yet: reads
            (FOR_DISPLAY, 1, 1),    // the window again: the same reading
            (FOR_DECISIONS, 1, 1),  // a decision right after: still young enough
            (Duration::ZERO, 2, 2), // asks for a new one
            (FOR_DECISIONS, 2, 2),  // shares it
        ];
        for (i, (age, reads, available)) in table.iter().enumerate() {
            let got = feed.reading(*age).unwrap();
            assert_eq!(feed.hardware_reads(), *reads, "row {i}");
            assert_eq!(got.memory.available_bytes, *available, "row {i}");
        }
        // Every reading taken, whoever asked, is in the ring once.
        let ring: Vec<u64> =
            feed.history().samples().iter().map(|s| s.now.memory.available_bytes).collect();
        assert_eq!(ring, [1, 2]);
        // A failed reading is an error for the caller, and counts as no reading.
        assert!(feed.reading(Duration::ZERO).is_err(), "the third reading fails");
        assert_eq!(feed.hardware_reads(), 2);
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(feed.memory_now().unwrap().memory.available_bytes, 4, "a decision reads anew");
    }
}
