//! The watchdog's rule: `/health` checks in a row decide whether the running server answers,
//! has stopped answering, or is hung (then it is treated as a crash: killed and restarted).

/// Failures in a row that count as a hang.
pub const HANG_AFTER: u32 = 3;

/// What one more check means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthVerdict {
    /// It answered, as before.
    Steady,
    /// It answered after failing.
    Recovered,
    /// It failed `failures` times in a row, since `since_ms`.
    Failing { failures: u32, since_ms: u64 },
    /// It failed `limit` times in a row: kill it and treat it as a crash.
    Hung { failures: u32, since_ms: u64 },
}

#[derive(Debug, Clone)]
pub struct Watchdog {
    limit: u32,
    failures: u32,
    since_ms: Option<u64>,
}

impl Watchdog {
    pub fn new(limit: u32) -> Self {
        Self { limit: limit.max(1), failures: 0, since_ms: None }
    }

    /// Records a check made at `now_ms`.
    pub fn record(&mut self, ok: bool, now_ms: u64) -> HealthVerdict {
        if ok {
            let was_failing = self.failures > 0;
            self.failures = 0;
            self.since_ms = None;
            return if was_failing { HealthVerdict::Recovered } else { HealthVerdict::Steady };
        }
        self.failures += 1;
        let since_ms = *self.since_ms.get_or_insert(now_ms);
        if self.failures >= self.limit {
            HealthVerdict::Hung { failures: self.failures, since_ms }
        } else {
            HealthVerdict::Failing { failures: self.failures, since_ms }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthVerdict::*;

    #[test]
    fn three_failures_in_a_row_are_a_hang_and_an_answer_resets_the_count() {
        // (check ok?, time, verdict)
        let table: &[(bool, u64, HealthVerdict)] = &[
            (true, 0, Steady),
            (false, 5, Failing { failures: 1, since_ms: 5 }),
            (false, 10, Failing { failures: 2, since_ms: 5 }),
            (true, 15, Recovered),
            (true, 20, Steady),
            (false, 25, Failing { failures: 1, since_ms: 25 }),
            (false, 30, Failing { failures: 2, since_ms: 25 }),
            (false, 35, Hung { failures: 3, since_ms: 25 }),
        ];
        let mut dog = Watchdog::new(HANG_AFTER);
        for (i, (ok, at, want)) in table.iter().enumerate() {
            assert_eq!(dog.record(*ok, *at), *want, "check {i}");
        }
        // A limit of 1 (or 0, read as 1): the first failure is a hang.
        assert_eq!(Watchdog::new(0).record(false, 7), Hung { failures: 1, since_ms: 7 });
    }
}
