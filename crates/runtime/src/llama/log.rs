//! Reading llama-server's output: a level for each line, and the memory each device took
//! (the load log's buffer sizes), which is what the model really costs on this machine.

use ipc::event::LogLevel;
use ipc::llm::DeviceMemory;

/// A level for a llama-server line. The newer log format carries its own (`0.00.006 W …`);
/// older lines are judged by their words (upstream's heuristics, §4.5).
pub fn level(line: &str) -> LogLevel {
    match crate::binaries::scan::timestamped(line) {
        Some(('D', _)) => return LogLevel::Debug,
        Some(('W', _)) => return LogLevel::Warn,
        Some(('E', _)) => return LogLevel::Error,
        _ => {}
    }
    let l = line.to_ascii_lowercase();
    if l.contains("{%") || l.contains("{{") || l.contains("example_format:") {
        return LogLevel::Debug;
    }
    if let Some(i) = l.find("request:") {
        let status_4xx_5xx = l[i..].split_whitespace().any(|w| {
            w.len() == 3
                && (w.starts_with('4') || w.starts_with('5'))
                && w.bytes().all(|c| c.is_ascii_digit())
        });
        return if status_4xx_5xx { LogLevel::Error } else { LogLevel::Info };
    }
    if l.contains("slot")
        && ["update_slots", "launch_slot", "release", "get_availabl", "print_timing"]
            .iter()
            .any(|w| l.contains(w))
    {
        return LogLevel::Debug;
    }
    if ["server is listening", "all slots are idle", "main:", "params_from_"]
        .iter()
        .any(|w| l.contains(w))
    {
        return LogLevel::Info;
    }
    if ["failed", "error:", ": error", "exception", "fatal"].iter().any(|w| l.contains(w)) {
        return LogLevel::Error;
    }
    if l.contains("warn") {
        return LogLevel::Warn;
    }
    LogLevel::Info
}

/// Buffer sizes per device from the load log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryLog {
    pub devices: Vec<DeviceMemory>,
}

impl MemoryLog {
    /// Takes lines such as `load_tensors:   CPU_Mapped model buffer size =   0.44 MiB`,
    /// `llama_kv_cache:  CUDA0 KV buffer size =  512.00 MiB`,
    /// `sched_reserve:   CUDA0 compute buffer size = 300.01 MiB`.
    pub fn feed(&mut self, line: &str) {
        let Some(i) = line.find(" buffer size") else { return };
        let head = &line[..i];
        let Some(eq) = line[i..].find('=') else { return };
        let value = line[i + eq + 1..].trim();
        let mut it = value.split_whitespace();
        let (Some(num), Some(unit)) = (it.next(), it.next()) else { return };
        let Ok(num) = num.parse::<f64>() else { return };
        let scale = match unit {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1048576.0,
            "GiB" => 1073741824.0,
            _ => return,
        };
        let n = (num * scale).round() as u64;
        let words: Vec<&str> = head.split_whitespace().collect();
        let Some(kind_at) =
            words.iter().rposition(|w| ["model", "KV", "compute", "output"].contains(w))
        else {
            return;
        };
        let Some(dev) = kind_at.checked_sub(1).map(|d| words[d]) else { return };
        let device = normalise_device(dev);
        let entry = match self.devices.iter_mut().position(|d| d.device == device) {
            Some(p) => &mut self.devices[p],
            None => {
                self.devices.push(DeviceMemory { device, ..Default::default() });
                self.devices.last_mut().unwrap()
            }
        };
        match words[kind_at] {
            "model" => entry.model_bytes += n,
            "KV" => entry.kv_bytes += n,
            _ => entry.compute_bytes += n,
        }
    }
}

/// The fallback a load log's buffers show when `asked` GPU layers were asked for: every model
/// buffer in this machine's RAM. (A build with the RPC backend says it offloaded the layers,
/// and no longer warns that it found no GPU, even when it has no device to put them on.) Pure.
pub fn buffers_fallback(asked: u32, devices: &[DeviceMemory]) -> Option<String> {
    let ram = ipc::llm::MemoryPlace::Ram;
    let loaded = devices.iter().any(|d| d.model_bytes > 0);
    let all_in_ram = devices.iter().filter(|d| d.model_bytes > 0).all(|d| d.place() == ram);
    (asked > 0 && loaded && all_in_ram).then(|| {
        format!(
            "{asked} GPU layers were asked for, but every model buffer is in RAM: it runs on the \
             CPU"
        )
    })
}

/// `CPU_Mapped`, `CPU_REPACK`, `CUDA_Host` (pinned host memory) are all RAM: `CPU`.
fn normalise_device(d: &str) -> String {
    let d = d.trim_end_matches(':');
    let upper = d.to_ascii_uppercase();
    if upper.starts_with("CPU") || upper.ends_with("_HOST") {
        "CPU".to_owned()
    } else {
        d.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        use LogLevel::*;
        let table = [
            ("0.00.001.960 W srv  llama_server: security: no API key is set", Warn),
            ("0.00.006.511 E srv    load_model: failed to load model", Error),
            ("0.03.041.428 I slot get_availabl: id  3 | task -1 | selected slot by LRU", Debug),
            ("0.00.008.554 I srv  llama_server: listening on http://127.0.0.1:18999", Info),
            ("main: server is listening on http://127.0.0.1:8080", Info),
            ("request: POST /completion 127.0.0.1 200", Info),
            ("request: POST /completion 127.0.0.1 500", Error),
            ("slot launch_slot_: id 0 | task 1 | processing task", Debug),
            ("llama_model_load: error loading model: corrupted", Error),
            ("warning: no usable GPU found", Warn),
            ("{% if messages %}", Debug),
            ("print_info: n_layer = 2", Info),
        ];
        for (line, want) in table {
            assert_eq!(level(line), want, "{line}");
        }
    }

    #[test]
    fn memory_from_both_log_styles() {
        let mut m = MemoryLog::default();
        for l in [
            "0.00.006.511 I load_tensors:   CPU_Mapped model buffer size =     0.44 MiB",
            "0.00.006.696 I llama_context:        CPU  output buffer size =     0.00 MiB",
            "0.00.006.710 I llama_kv_cache:        CPU KV buffer size =     0.12 MiB",
            "0.00.007.455 I sched_reserve:        CPU compute buffer size =     0.70 MiB",
            "load_tensors:        CUDA0 model buffer size =  4403.49 MiB",
            "llama_kv_cache_unified:      CUDA0 KV buffer size =  1024.00 MiB",
            "llama_context:      CUDA0 compute buffer size =   300.01 MiB",
            "llama_context:  CUDA_Host compute buffer size =    24.01 MiB",
            "llama_kv_cache: size =    0.12 MiB (   256 cells,   2 layers,  4/1 seqs)",
        ] {
            m.feed(l);
        }
        let mib = |x: f64| (x * 1048576.0).round() as u64;
        assert_eq!(
            m.devices,
            [
                DeviceMemory {
                    device: "CPU".into(),
                    model_bytes: mib(0.44),
                    kv_bytes: mib(0.12),
                    compute_bytes: mib(0.70) + mib(24.01),
                },
                DeviceMemory {
                    device: "CUDA0".into(),
                    model_bytes: mib(4403.49),
                    kv_bytes: mib(1024.0),
                    compute_bytes: mib(300.01),
                },
            ]
        );
    }

    #[test]
    fn a_fallback_is_read_from_where_the_buffers_are() {
        let d = |device: &str, model_bytes| DeviceMemory {
            device: device.into(),
            model_bytes,
            ..Default::default()
        };
        let table = [
            (2, vec![d("CPU", 100)], true),
            (0, vec![d("CPU", 100)], false),
            (2, vec![d("CPU", 10), d("CUDA0", 100)], false),
            (2, vec![d("CPU", 10), d("RPC0[127.0.0.1:50052]", 100)], false),
            (2, vec![d("CPU", 10), d("CUDA0", 0)], true),
            (2, vec![], false),
        ];
        for (asked, devices, want) in table {
            assert_eq!(buffers_fallback(asked, &devices).is_some(), want, "{asked} {devices:?}");
        }
    }

    /// An RPC worker's buffers keep their name: another machine's memory.
    #[test]
    fn rpc_buffers_are_another_machines() {
        let mut m = MemoryLog::default();
        for l in [
            "0.00.014.522 I load_tensors: RPC0[127.0.0.1:50052] model buffer size =     0.47 MiB",
            "0.00.017.378 I llama_kv_cache: RPC0[127.0.0.1:50053] KV buffer size =     0.12 MiB",
        ] {
            m.feed(l);
        }
        let names: Vec<&str> = m.devices.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["RPC0[127.0.0.1:50052]", "RPC0[127.0.0.1:50053]"]);
        assert_eq!(m.devices[0].place(), ipc::llm::MemoryPlace::Remote);
    }
}
