//! Numbers as people read them. Shared by the window and the tests that read the window.

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// Bytes in binary units with one decimal: "23.5 GiB", "512.0 MiB", "900 B".
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= GIB {
        format!("{:.1} GiB", f / GIB)
    } else if f >= MIB {
        format!("{:.1} MiB", f / MIB)
    } else if n >= 1024 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// `part` as a percentage of `whole`, 0 when `whole` is 0, clamped to 0..=100.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        (part as f64 * 100.0 / whole as f64).clamp(0.0, 100.0)
    }
}

/// The time axis of a chart that shows the last `span_ms`: (position 0..=1 from the left,
/// label), four equal steps from the far left to "now" at the right.
pub fn time_ticks(span_ms: u64) -> Vec<(f64, String)> {
    let span_s = (span_ms / 1000).max(1);
    let label = |ago_s: u64| match ago_s {
        0 => "now".to_owned(),
        s if s % 60 == 0 => format!("−{} min", s / 60),
        s if s > 60 => format!("−{:.1} min", s as f64 / 60.0),
        s => format!("−{s} s"),
    };
    (0..=4u64)
        .map(|i| {
            let ago = span_s * (4 - i) / 4;
            (1.0 - ago as f64 / span_s as f64, label(ago))
        })
        .collect()
}

/// The memory axis of a chart of `total` bytes: (height 0..=1 from the bottom, label) at
/// nothing, half and all of it.
pub fn memory_ticks(total: u64) -> Vec<(f64, String)> {
    vec![(0.0, "0".to_owned()), (0.5, bytes(total / 2)), (1.0, bytes(total))]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_axes_read_in_minutes_seconds_and_bytes() {
        let labels = |t: Vec<(f64, String)>| t.into_iter().map(|(_, l)| l).collect::<Vec<_>>();
        assert_eq!(
            labels(time_ticks(600_000)),
            ["−10 min", "−7.5 min", "−5 min", "−2.5 min", "now"]
        );
        assert_eq!(labels(time_ticks(120_000)), ["−2 min", "−1.5 min", "−1 min", "−30 s", "now"]);
        assert_eq!(labels(time_ticks(60_000)), ["−1 min", "−45 s", "−30 s", "−15 s", "now"]);
        let t = time_ticks(600_000);
        assert_eq!((t[0].0, t[2].0, t[4].0), (0.0, 0.5, 1.0));
        let m = memory_ticks(24 << 30);
        assert_eq!(m, [(0.0, "0".into()), (0.5, "12.0 GiB".into()), (1.0, "24.0 GiB".into())]);
    }

    #[test]
    fn binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(512 * 1024 * 1024), "512.0 MiB");
        assert_eq!(bytes(24_684_084 * 1024), "23.5 GiB");
    }

    #[test]
    fn percent_is_safe() {
        assert_eq!(percent(1, 0), 0.0);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(5, 4), 100.0);
    }
}
