//! The one place live memory is read. [`MemoryFeed`] reads RAM and VRAM at one pace for every
//! consumer: a sampler task reads every [`EVERY`] into a ring of the last ten minutes (the Resource
//! Monitor's past, shown at once when the tab opens), the window's figures are the newest reading
//! (no hardware read per poll), and decisions (the orchestrator, a server's settings) ask for a
//! reading at most [`FOR_DECISIONS`] old, which every other consumer then shares.
//!
//! While the window watches (a tab showing live memory is on screen: [`MemoryFeed::watch`]),
//! each new reading that differs visibly from the last one announced ([`visibly_different`]) is
//! sent as [`AppEvent::MemoryChanged`]; nothing is sent while memory holds still, so a window
//! at rest polls nothing and is sent nothing.

use super::MemorySource;
use crate::{EventBus, Result};
use ipc::system::{MemoryNow, MemorySample};
use ipc::AppEvent;
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

/// The smallest change announced, as a share of the total (RAM, or a GPU's VRAM): 0.2 %, about
/// 50 MB of 24 GiB, half of the 0.1 GiB step the window shows figures in.
pub const SHOWN_STEP: f64 = 0.002;

/// Whether the window would show `b` differently from `a`: a total, the set of GPUs, or a figure
/// in use moved by at least [`SHOWN_STEP`] of its total.
pub fn visibly_different(a: &MemoryNow, b: &MemoryNow) -> bool {
    let moved = |x: u64, y: u64, total: u64| x.abs_diff(y) as f64 >= total as f64 * SHOWN_STEP;
    let (ma, mb) = (&a.memory, &b.memory);
    if ma.total_bytes != mb.total_bytes
        || moved(ma.available_bytes, mb.available_bytes, mb.total_bytes)
        || a.gpus.len() != b.gpus.len()
    {
        return true;
    }
    a.gpus.iter().zip(&b.gpus).any(|(ga, gb)| {
        ga.id != gb.id
            || ga.vram.total_bytes != gb.vram.total_bytes
            || moved(ga.vram.used_bytes, gb.vram.used_bytes, gb.vram.total_bytes)
    })
}

/// Who is told of visible changes, and what they were told last.
#[derive(Default)]
struct Watch {
    bus: Option<EventBus>,
    on: bool,
    announced: Option<MemoryNow>,
}

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
    watch: Mutex<Watch>,
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
            watch: Mutex::new(Watch::default()),
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
        let sample = MemorySample { at_ms: crate::now_ms(), now: now.clone() };
        self.history.push(sample.clone());
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((Instant::now(), now.clone()));
        self.announce(sample);
        Ok(now)
    }

    /// Where visible changes are announced (the app's event bus).
    pub fn announce_to(&self, bus: EventBus) {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).bus = Some(bus);
    }

    /// Whether the window shows live memory now. Turned on, the next reading is announced
    /// whatever it is (the window may have missed changes while it did not watch).
    pub fn watch(&self, on: bool) {
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        w.on = on;
        w.announced = None;
    }

    fn announce(&self, sample: MemorySample) {
        let mut w = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bus) = w.bus.clone().filter(|_| w.on) else { return };
        if w.announced.as_ref().is_some_and(|last| !visibly_different(last, &sample.now)) {
            return;
        }
        w.announced = Some(sample.now.clone());
        drop(w);
        bus.emit(AppEvent::MemoryChanged(sample));
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

    fn now(total: u64, available: u64, gpus: &[(&str, u64, u64)]) -> MemoryNow {
        MemoryNow {
            memory: MemoryInfo { total_bytes: total, available_bytes: available },
            gpus: gpus
                .iter()
                .map(|&(id, total, used)| ipc::system::GpuMemory {
                    id: id.to_owned(),
                    vram: ipc::system::VramInfo {
                        total_bytes: total,
                        used_bytes: used,
                        free_bytes: total - used,
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_change_the_window_would_show_is_visible() {
        const G: u64 = 1 << 30;
        let base = now(24 * G, 12 * G, &[("0", 8 * G, 2 * G)]);
        // (the new reading, visibly different from `base`?)
        let table: Vec<(MemoryNow, bool)> = vec![
            (base.clone(), false),
            // 10 MB of RAM either way: noise.
            (now(24 * G, 12 * G + 10_000_000, &[("0", 8 * G, 2 * G)]), false),
            (now(24 * G, 12 * G - 10_000_000, &[("0", 8 * G, 2 * G)]), false),
            // 0.2 % of 24 GiB (about 52 MB) and more: shown.
            (now(24 * G, 12 * G - 52_000_000, &[("0", 8 * G, 2 * G)]), true),
            (now(24 * G, 8 * G, &[("0", 8 * G, 2 * G)]), true),
            // VRAM: 0.2 % of 8 GiB is about 17 MB.
            (now(24 * G, 12 * G, &[("0", 8 * G, 2 * G + 10_000_000)]), false),
            (now(24 * G, 12 * G, &[("0", 8 * G, 2 * G + 20_000_000)]), true),
            // A total, a GPU gone or another GPU: always.
            (now(16 * G, 12 * G, &[("0", 8 * G, 2 * G)]), true),
            (now(24 * G, 12 * G, &[]), true),
            (now(24 * G, 12 * G, &[("1", 8 * G, 2 * G)]), true),
            (now(24 * G, 12 * G, &[("0", 8 * G, 2 * G), ("1", 8 * G, 0)]), true),
        ];
        for (i, (b, want)) in table.iter().enumerate() {
            assert_eq!(visibly_different(&base, b), *want, "row {i}");
        }
    }

    /// A source whose next reading is set by the test.
    struct Scripted(Mutex<u64>);
    impl MemorySource for Scripted {
        fn memory_now(&self) -> Result<MemoryNow> {
            Ok(now(1_000_000, *self.0.lock().unwrap(), &[]))
        }
        fn gpu_names(&self) -> Vec<(String, String)> {
            vec![]
        }
    }

    #[tokio::test]
    async fn visible_changes_are_announced_only_while_watched() {
        let source = Arc::new(Scripted(Mutex::new(500_000)));
        let feed = MemoryFeed::new(source.clone());
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        feed.announce_to(bus);
        // (watch now?, available bytes read next, announced?)
        let table: &[(Option<bool>, u64, bool)] = &[
            (None, 500_000, false),        // nobody watches
            (Some(true), 500_000, true),   // watching: the first reading goes out
            (None, 500_500, false),        // 0.05 %: noise
            (None, 502_000, true),         // 0.2 % since the last announced (not the last read)
            (None, 501_000, false),        // 0.1 % back
            (Some(false), 400_000, false), // not watched: nothing, however large
            (Some(true), 400_000, true),   // watched again: the next reading, unchanged or not
        ];
        for (i, &(watch, available, announced)) in table.iter().enumerate() {
            if let Some(on) = watch {
                feed.watch(on);
            }
            *source.0.lock().unwrap() = available;
            feed.reading(Duration::ZERO).unwrap();
            match rx.try_recv() {
                Ok(AppEvent::MemoryChanged(s)) => {
                    assert!(announced, "row {i}: announced {s:?}");
                    assert_eq!(s.now.memory.available_bytes, available, "row {i}");
                }
                Ok(other) => panic!("row {i}: {other:?}"),
                Err(_) => assert!(!announced, "row {i}: nothing announced"),
            }
        }
    }
}
