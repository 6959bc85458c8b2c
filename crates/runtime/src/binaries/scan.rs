//! Reading what a runtime build prints: its version, whether `--help` printed usage text, the
//! compute devices it found, the layers it offloaded, and lines that mean the GPU failed.
//!
//! llama.cpp's wording moves between builds, so each fact is recognised by several patterns
//! (old `ggml_cuda_init` / `ggml_vulkan` lines, `using device`, the newer `device_info` list).

/// A line that means the GPU (or the model load) failed, named for the log.
pub fn gpu_error(line: &str) -> Option<&'static str> {
    const PATTERNS: &[(&str, &str)] = &[
        ("cuda error", "CUDA error"),
        ("cuda_error", "CUDA error"),
        ("failed to allocate", "failed to allocate memory"),
        ("vkcreatedevice failed", "Vulkan device creation failed"),
        ("vulkan error", "Vulkan error"),
        ("gpu error", "GPU error"),
        ("out of memory", "out of memory"),
        ("llama_model_load: error", "model load error"),
        ("failed to load model", "failed to load model"),
        ("error: invalid argument", "invalid argument"),
        ("cudamalloc failed", "CUDA allocation failed"),
    ];
    let lower = strip_prefixes(line).to_ascii_lowercase();
    // Anchored at the start of the message or right after a `source:` prefix such as
    // `ggml_cuda_init:` or `srv    load_model:`, so that prose mentioning memory is not a failure.
    let mut starts = vec![lower.as_str()];
    let mut rest = lower.as_str();
    while let Some((_, after)) = rest.split_once(": ") {
        starts.push(after.trim_start());
        rest = after;
    }
    PATTERNS.iter().find(|(p, _)| starts.iter().any(|s| s.starts_with(p))).map(|(_, label)| *label)
}

/// Drops what llama.cpp puts before the message: `[…]` prefixes, the timestamp and level of the
/// newer log format (`0.00.006.511 I `), and leading blanks.
fn strip_prefixes(line: &str) -> &str {
    let mut s = line.trim_start();
    while let Some(rest) = s.strip_prefix('[') {
        match rest.find(']') {
            Some(end) => s = rest[end + 1..].trim_start(),
            None => break,
        }
    }
    match timestamped(s) {
        Some((_, rest)) => rest,
        None => s,
    }
}

/// The newer llama.cpp log format, `0.00.006.511 W message`: the level letter and the message.
pub fn timestamped(line: &str) -> Option<(char, &str)> {
    let mut parts = line.trim_start().splitn(3, ' ');
    let (ts, level, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let stamp = ts.split('.').count() >= 3 && ts.chars().all(|c| c.is_ascii_digit() || c == '.');
    match level {
        "D" | "I" | "W" | "E" if stamp => Some((level.chars().next()?, rest.trim_start())),
        _ => None,
    }
}

/// Whether `--help` output holds the usage text (sd-cli prints an error line first and may
/// exit 0 either way, so the text decides).
pub fn has_usage_text(output: &str) -> bool {
    let lower = output.to_ascii_lowercase();
    lower.contains("usage:") && (lower.contains("options") || lower.contains("arguments"))
}

/// The line a build gives for `--version` (`version: 9860 (abc123)`), or the first line.
pub fn version_line(output: &str) -> Option<String> {
    let mut lines = output.lines().map(str::trim).filter(|l| !l.is_empty());
    let all: Vec<&str> = lines.by_ref().collect();
    all.iter()
        .find(|l| l.to_ascii_lowercase().starts_with("version"))
        .or(all.first())
        .map(|l| l.chars().take(200).collect())
}

/// What a llama-server load log says about devices and offloading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// GPU devices the build found, as `NAME: description`.
    pub gpus: Vec<String>,
    /// Layers put on a GPU, out of all.
    pub offloaded: Option<(u32, u32)>,
    /// The build said it found no usable GPU.
    pub no_gpu: bool,
    /// The first GPU error line, labelled.
    pub error: Option<(String, String)>,
}

impl LoadReport {
    pub fn feed(&mut self, line: &str) {
        let msg = strip_prefixes(line);
        let lower = msg.to_ascii_lowercase();
        if self.error.is_none() {
            if let Some(label) = gpu_error(line) {
                self.error = Some((label.to_owned(), line.trim().to_owned()));
            }
        }
        if lower.contains("no usable gpu found")
            || lower.contains("no devices found")
            || lower.contains("found 0 cuda devices")
            || lower.contains("found 0 vulkan devices")
        {
            self.no_gpu = true;
        }
        if let Some(i) = lower.find("offloaded ") {
            let rest = &msg[i + "offloaded ".len()..];
            if let Some((a, b)) = rest.split_whitespace().next().and_then(|t| t.split_once('/')) {
                if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                    self.offloaded = Some((a, b));
                }
            }
        }
        if let Some(dev) = device_of(msg) {
            if !self.gpus.contains(&dev) {
                self.gpus.push(dev);
            }
        }
    }

    /// The build found a GPU and used it.
    pub fn used_gpu(&self) -> bool {
        !self.no_gpu && (!self.gpus.is_empty() || self.offloaded.is_some_and(|(a, _)| a > 0))
    }

    /// Why a start that asked for `asked` GPU layers runs (wholly or partly) on the CPU, from its
    /// load log: fewer layers offloaded than asked, or no GPU found. `None` when it got them.
    pub fn cpu_fallback(&self, asked: u32) -> Option<String> {
        if asked == 0 {
            return None;
        }
        match self.offloaded {
            Some((0, all)) => Some(format!(
                "{asked} GPU layers were asked for, but llama-server offloaded 0/{all}: it runs on \
                 the CPU"
            )),
            Some((got, all)) if got < asked.min(all) => Some(format!(
                "{asked} GPU layers were asked for, but llama-server offloaded {got}/{all}"
            )),
            Some(_) => None,
            None if self.no_gpu || self.gpus.is_empty() => Some(format!(
                "{asked} GPU layers were asked for, but llama-server found no GPU: it runs on the \
                 CPU"
            )),
            None => None,
        }
    }
}

/// A GPU device named on this line, in any of the forms llama.cpp builds use.
fn device_of(msg: &str) -> Option<String> {
    let lower = msg.to_ascii_lowercase();
    // `llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H100) - 80000 MiB free`
    if let Some(i) = lower.find("using device ") {
        let rest = &msg[i + "using device ".len()..];
        let (name, desc) = rest.split_once(' ').unwrap_or((rest, ""));
        let desc = desc.split(" - ").next().unwrap_or("").trim().trim_matches(['(', ')']);
        return gpu_name(name).then(|| join(name, desc));
    }
    // newer `common_param:   - CUDA0   : NVIDIA H100 (81079 MiB, 80000 MiB free)`
    if let Some(rest) = msg.split_once(": ").map(|(_, r)| r.trim_start()) {
        if let Some(item) = rest.strip_prefix("- ") {
            if let Some((name, desc)) = item.split_once(':') {
                let name = name.trim();
                let desc = desc.split(" (").next().unwrap_or("").trim();
                if gpu_name(name) && !name.contains(' ') {
                    return Some(join(name, desc));
                }
            }
        }
    }
    // `ggml_cuda_init:   Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes`
    // (the `Device` line is printed on its own, indented, after `found N CUDA devices`)
    if lower.contains("compute capability") {
        let rest = msg.strip_prefix("ggml_cuda_init:").unwrap_or(msg).trim_start();
        if let Some(d) = rest.strip_prefix("Device ") {
            let (idx, desc) = d.split_once(':')?;
            let desc = desc.split(',').next().unwrap_or("").trim();
            return Some(join(&format!("CUDA{}", idx.trim()), desc));
        }
    }
    // `ggml_vulkan: 0 = AMD Radeon RX 7900 XTX (RADV NAVI31) (radv) | uma: 0 | …`
    if lower.starts_with("ggml_vulkan:") {
        let rest = msg["ggml_vulkan:".len()..].trim_start();
        if let Some((idx, desc)) = rest.split_once(" = ") {
            if idx.trim().chars().all(|c| c.is_ascii_digit()) {
                let desc = desc.split(" | ").next().unwrap_or("").trim();
                return Some(join(&format!("Vulkan{}", idx.trim()), desc));
            }
        }
    }
    None
}

fn gpu_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["CUDA", "VULKAN", "METAL", "ROCM", "HIP", "SYCL", "MTL"].iter().any(|p| n.starts_with(p))
}

fn join(name: &str, desc: &str) -> String {
    if desc.is_empty() {
        name.to_owned()
    } else {
        format!("{name}: {desc}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_error_lines() {
        let yes = [
            "CUDA error: out of memory",
            "ggml_cuda_init: CUDA error: no CUDA-capable device is detected",
            "[1234] ggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed: out of memory",
            "ggml_vulkan: vkCreateDevice failed",
            "llama_model_load: error loading model: tensor data is not within the file bounds",
            "0.00.006.511 E srv    load_model: failed to load model, '/m.gguf'",
            "error: invalid argument: -lv",
            "ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 123",
        ];
        for l in yes {
            assert!(gpu_error(l).is_some(), "{l}");
            assert!(LoadReport::scan(l).error.is_some(), "{l}");
        }
        let no = [
            "load_tensors: offloaded 3/3 layers to GPU",
            "warning: no usable GPU found, --gpu-layers option will be ignored",
            "main: server is listening on http://127.0.0.1:8080",
            "print_info: n_layer = 2 (out of memory budget? no)",
        ];
        for l in no {
            assert_eq!(gpu_error(l), None, "{l}");
        }
    }

    impl LoadReport {
        fn scan(text: &str) -> Self {
            let mut r = Self::default();
            text.lines().for_each(|l| r.feed(l));
            r
        }
    }

    #[test]
    fn devices_and_offload_in_each_log_style() {
        let cuda_old = "ggml_cuda_init: found 1 CUDA devices:\n  \
            Device 0: NVIDIA H100 80GB HBM3, compute capability 9.0, VMM: yes\n\
            load_tensors: offloaded 3/3 layers to GPU";
        let r = LoadReport::scan(cuda_old);
        assert_eq!(r.gpus, ["CUDA0: NVIDIA H100 80GB HBM3"]);
        assert_eq!(r.offloaded, Some((3, 3)));
        assert!(r.used_gpu());

        let using = "llama_model_load_from_file_impl: using device Vulkan0 (AMD Radeon RX 7900 XTX) - 24560 MiB free";
        assert_eq!(LoadReport::scan(using).gpus, ["Vulkan0: AMD Radeon RX 7900 XTX"]);

        let vk = "ggml_vulkan: Found 1 Vulkan devices:\nggml_vulkan: 0 = Intel(R) Arc(tm) A770 (Intel open-source Mesa driver) | uma: 0 | fp16: 1";
        assert_eq!(
            LoadReport::scan(vk).gpus,
            ["Vulkan0: Intel(R) Arc(tm) A770 (Intel open-source Mesa driver)"]
        );

        let new = "0.00.002.809 I cmn  common_param: device_info:\n\
            0.00.002.816 I cmn  common_param:   - CUDA0   : NVIDIA H100 (81079 MiB, 80000 MiB free)\n\
            0.00.002.816 I cmn  common_param:   - CPU     : AMD EPYC (24105 MiB, 24105 MiB free)";
        assert_eq!(LoadReport::scan(new).gpus, ["CUDA0: NVIDIA H100"]);

        // The real CPU build of this repo's script, asked for GPU layers.
        let cpu = "warning: no usable GPU found, --gpu-layers option will be ignored\n\
            0.00.002.816 I cmn  common_param:   - CPU     : AMD EPYC (24105 MiB, 24105 MiB free)";
        let r = LoadReport::scan(cpu);
        assert!(r.gpus.is_empty() && r.no_gpu && !r.used_gpu());
        assert!(!LoadReport::scan("ggml_vulkan: No devices found.").used_gpu());
        assert!(!LoadReport::scan("load_tensors: offloaded 0/3 layers to GPU").used_gpu());
    }

    #[test]
    fn cpu_fallback_table() {
        let report = |gpus: &[&str], offloaded, no_gpu| LoadReport {
            gpus: gpus.iter().map(|s| s.to_string()).collect(),
            offloaded,
            no_gpu,
            error: None,
        };
        let cases: &[(LoadReport, u32, Option<&str>)] = &[
            (report(&[], Some((0, 3)), false), 0, None),
            (report(&[], Some((0, 3)), false), 2, Some("offloaded 0/3: it runs on the CPU")),
            (report(&["CUDA0: H200"], Some((33, 33)), false), 999, None),
            (report(&["CUDA0: H200"], Some((20, 33)), false), 999, Some("offloaded 20/33")),
            (report(&["CUDA0: H200"], Some((20, 33)), false), 20, None),
            (report(&[], None, true), 10, Some("found no GPU")),
            (report(&["Vulkan0: RX"], None, false), 10, None),
        ];
        for (r, asked, want) in cases {
            let got = r.cpu_fallback(*asked);
            match want {
                None => assert_eq!(got, None, "{r:?} asked {asked}"),
                Some(w) => assert!(got.as_deref().is_some_and(|g| g.contains(w)), "{got:?} vs {w}"),
            }
        }
    }

    #[test]
    fn usage_and_version() {
        let sd = "[ERROR] stable-diffusion.cpp: missing prompt\nusage: sd-cli [options]\n\nArguments:\n  -h, --help";
        assert!(has_usage_text(sd));
        assert!(!has_usage_text("error: while loading shared libraries: libvulkan.so.1"));
        assert_eq!(
            version_line("\nversion: 9860 (abc123)\nbuilt with cc").as_deref(),
            Some("version: 9860 (abc123)")
        );
        assert_eq!(version_line("sd 1.0").as_deref(), Some("sd 1.0"));
        assert_eq!(version_line(" \n"), None);
    }
}
