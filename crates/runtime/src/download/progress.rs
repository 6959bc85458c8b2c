//! Progress figures (speed, ETA) and the throttle that keeps the window from being flooded.

use std::time::{Duration, Instant};

/// At most this often a progress event goes out (the last one always does).
pub const EMIT_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub downloaded: u64,
    pub total: Option<u64>,
    pub bytes_per_sec: f64,
    pub eta_secs: Option<f64>,
}

/// Turns a stream of byte counts into throttled snapshots with a smoothed speed.
#[derive(Debug)]
pub struct Meter {
    last_emit: Option<Instant>,
    last_bytes: u64,
    speed: f64,
}

impl Meter {
    pub fn new(start_bytes: u64) -> Self {
        Self { last_emit: None, last_bytes: start_bytes, speed: 0.0 }
    }

    /// Call with the byte count after each chunk; returns a snapshot when one is due.
    pub fn tick(
        &mut self,
        now: Instant,
        downloaded: u64,
        total: Option<u64>,
        force: bool,
    ) -> Option<Snapshot> {
        let due = match self.last_emit {
            None => true,
            Some(t) => force || now.duration_since(t) >= EMIT_EVERY,
        };
        if !due {
            return None;
        }
        if let Some(t) = self.last_emit {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.0 {
                let instant = (downloaded.saturating_sub(self.last_bytes)) as f64 / dt;
                // Smooth over about a second of samples so the ETA does not jump around.
                self.speed =
                    if self.speed == 0.0 { instant } else { 0.7 * self.speed + 0.3 * instant };
            }
        }
        self.last_emit = Some(now);
        self.last_bytes = downloaded;
        let eta_secs = match total {
            Some(t) if self.speed > 0.0 => Some(t.saturating_sub(downloaded) as f64 / self.speed),
            Some(t) if t == downloaded => Some(0.0),
            _ => None,
        };
        Some(Snapshot { downloaded, total, bytes_per_sec: self.speed, eta_secs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_and_estimates() {
        let t0 = Instant::now();
        let mut m = Meter::new(0);
        assert!(m.tick(t0, 0, Some(1000), false).is_some(), "first tick emits");
        assert!(m.tick(t0 + Duration::from_millis(100), 100, Some(1000), false).is_none());
        let s = m.tick(t0 + Duration::from_millis(500), 500, Some(1000), false).unwrap();
        assert_eq!(s.bytes_per_sec, 1000.0);
        assert_eq!(s.eta_secs, Some(0.5));
        let done = m.tick(t0 + Duration::from_millis(510), 1000, Some(1000), true).unwrap();
        assert_eq!(done.downloaded, 1000);
        assert_eq!(done.eta_secs, Some(0.0));
        let unknown = Meter::new(0).tick(t0, 5, None, false).unwrap();
        assert_eq!(unknown.eta_secs, None);
    }
}
