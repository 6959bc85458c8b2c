//! System memory, read fresh on every call.

use ipc::system::MemoryInfo;
use std::path::Path;

/// Parses `/proc/meminfo`. `MemAvailable` is the kernel's own estimate of what a new program can
/// get without swapping (free + reclaimable cache); "free" alone undercounts badly. Kernels older
/// than 3.14 lack it, so then free + buffers + cached stands in.
pub fn parse_meminfo(text: &str) -> Option<MemoryInfo> {
    let (mut total, mut available, mut free, mut buffers, mut cached) = (None, None, 0, 0, 0);
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        let bytes = kib.saturating_mul(1024);
        match key {
            "MemTotal:" => total = Some(bytes),
            "MemAvailable:" => available = Some(bytes),
            "MemFree:" => free = bytes,
            "Buffers:" => buffers = bytes,
            "Cached:" => cached = bytes,
            _ => {}
        }
        if total.is_some() && available.is_some() {
            break;
        }
    }
    let total = total?;
    let available = available.unwrap_or(free + buffers + cached).min(total);
    Some(MemoryInfo { total_bytes: total, available_bytes: available })
}

/// Reads memory from `meminfo` (Linux) or, where that file does not exist, from sysinfo.
pub fn read(meminfo: &Path) -> Option<MemoryInfo> {
    match std::fs::read_to_string(meminfo) {
        Ok(text) => parse_meminfo(&text),
        Err(_) => {
            let mut sys = sysinfo::System::new().ok()?;
            sys.refresh_memory();
            Some(MemoryInfo {
                total_bytes: sys.total_memory(),
                available_bytes: sys.available_memory(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_used() {
        let text = "MemTotal:       24684084 kB\nMemFree:        18453880 kB\n\
                    MemAvailable:   23972708 kB\nBuffers:          100 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.total_bytes, 24_684_084 * 1024);
        assert_eq!(m.available_bytes, 23_972_708 * 1024);
        assert_eq!(m.used_bytes(), (24_684_084 - 23_972_708) * 1024);
    }

    #[test]
    fn old_kernels_without_mem_available() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n";
        let m = parse_meminfo(text).unwrap();
        assert_eq!(m.available_bytes, 400 * 1024);
    }

    #[test]
    fn garbage_gives_none_not_a_panic() {
        assert_eq!(parse_meminfo(""), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal"), None);
    }

    #[test]
    fn this_machine() {
        let m = read(Path::new("/proc/meminfo")).unwrap();
        assert!(m.total_bytes > 0 && m.available_bytes <= m.total_bytes);
    }
}
