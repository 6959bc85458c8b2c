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

/// How many of llama-server's slots are processing a request, from its `/slots` answer (an
/// array of slots with `is_processing`, or `state` 1 in older builds). Anything else: `None`.
pub fn busy_slots(slots: &serde_json::Value) -> Option<u32> {
    let slots = slots.as_array()?;
    let busy = slots.iter().map(|s| {
        s.get("is_processing")
            .and_then(serde_json::Value::as_bool)
            .or_else(|| s.get("state").and_then(serde_json::Value::as_u64).map(|v| v != 0))
    });
    busy.map(|b| b.map(u32::from)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_slots_count_the_processing_ones() {
        use serde_json::json;
        let table = [
            (json!([{"id": 0, "is_processing": false}]), Some(0)),
            (json!([{"id": 0, "is_processing": true}, {"id": 1, "is_processing": false}]), Some(1)),
            (json!([{"id": 0, "state": 1}, {"id": 1, "state": 1}]), Some(2)),
            (json!([]), Some(0)),
            // Not what /slots answers: no figure rather than a wrong one.
            (
                json!({"error": {"code": 501, "message": "This server does not support slots"}}),
                None,
            ),
            (json!([{"id": 0}]), None),
            (json!([{"id": 0, "is_processing": "yes"}]), None),
        ];
        for (body, want) in table {
            assert_eq!(busy_slots(&body), want, "{body}");
        }
    }
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
