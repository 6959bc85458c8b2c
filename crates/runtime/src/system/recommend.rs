//! What the machine can run: a pure function of what was detected, with its constants named.

use ipc::system::{Backend, CpuInfo, GpuInfo, MemoryInfo, ModelFit, Recommendations};

const GIB: u64 = 1024 * 1024 * 1024;

/// Model bytes times this = what loading it takes: the KV cache and compute buffers of a 4–8k
/// context add about a fifth for common models.
const CONTEXT_OVERHEAD: f64 = 1.2;

/// Bytes per parameter at Q4_K_M (about 4.85 bits per weight for llama-family models).
const Q4_K_M_BYTES_PER_PARAM: f64 = 0.61;

/// Parameter classes people choose between, in billions.
const CLASSES_B: &[f64] =
    &[0.5, 1.0, 1.5, 3.0, 4.0, 7.0, 8.0, 13.0, 14.0, 24.0, 32.0, 70.0, 123.0, 235.0, 405.0];

/// VRAM a GPU keeps for itself: the CUDA/Vulkan context, the display, fragmentation.
fn gpu_reserve(total: u64) -> u64 {
    (total / 10).max(GIB)
}

/// RAM the system and this app keep for themselves.
fn ram_reserve(total: u64) -> u64 {
    (total / 5).max(2 * GIB)
}

/// The largest model file (bytes) that fits in `usable` bytes with its context.
fn fit_bytes(usable: u64) -> u64 {
    (usable as f64 / CONTEXT_OVERHEAD) as u64
}

/// "up to ~13B at Q4_K_M", or a plain sentence when even the smallest class does not fit.
pub fn class_label(model_bytes: u64) -> String {
    let params_b = model_bytes as f64 / Q4_K_M_BYTES_PER_PARAM / 1e9;
    match CLASSES_B.iter().rev().find(|&&c| c <= params_b) {
        // `{}` of an f64 prints 7 as "7" and 1.5 as "1.5".
        Some(c) => format!("up to ~{c}B at Q4_K_M"),
        None => "too little memory for a 0.5B model at Q4_K_M".to_owned(),
    }
}

fn fit(usable: u64) -> ModelFit {
    let bytes = fit_bytes(usable);
    ModelFit { bytes, label: class_label(bytes) }
}

/// The GPU the app would run a model on: the one with the most dedicated VRAM.
pub fn best_gpu(gpus: &[GpuInfo]) -> Option<&GpuInfo> {
    gpus.iter()
        .filter(|g| g.backend != Backend::Cpu && !g.unified_memory)
        .filter_map(|g| g.vram.map(|v| (g, v.total_bytes)))
        .max_by_key(|(_, total)| *total)
        .map(|(g, _)| g)
}

/// The backend llama.cpp should use: CUDA when an NVIDIA driver answers, else Vulkan for any
/// other GPU, Metal on Apple, else the CPU.
pub fn preferred_backend(gpus: &[GpuInfo]) -> Backend {
    [Backend::Cuda, Backend::Metal, Backend::Vulkan]
        .into_iter()
        .find(|b| gpus.iter().any(|g| g.backend == *b))
        .unwrap_or(Backend::Cpu)
}

/// Physical cores (llama.cpp is fastest there), one left for the window on 8 cores or more.
pub fn threads(cpu: &CpuInfo) -> u32 {
    let cores = cpu.physical_cores.unwrap_or(cpu.logical_cores).max(1);
    if cores >= 8 {
        cores - 1
    } else {
        cores
    }
}

pub fn recommend(cpu: &CpuInfo, memory: &MemoryInfo, gpus: &[GpuInfo]) -> Recommendations {
    let backend = preferred_backend(gpus);
    let max_model_gpu = best_gpu(gpus)
        .and_then(|g| g.vram)
        .map(|v| fit(v.total_bytes.saturating_sub(gpu_reserve(v.total_bytes))));
    let max_model_ram = fit(memory.total_bytes.saturating_sub(ram_reserve(memory.total_bytes)));
    Recommendations {
        threads: threads(cpu),
        backend,
        gpu_acceleration: backend != Backend::Cpu,
        max_model_gpu,
        max_model_ram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::system::GpuVendor;

    fn cpu(physical: Option<u32>, logical: u32) -> CpuInfo {
        CpuInfo {
            model: "x".into(),
            physical_cores: physical,
            logical_cores: logical,
            arch: "x86_64".into(),
        }
    }

    use crate::system::test_gpu as gpu;

    #[test]
    fn threads_table() {
        for (physical, logical, want) in [
            (Some(2), 2, 2),
            (Some(4), 8, 4),
            (Some(8), 16, 7),
            (Some(16), 32, 15),
            (None, 6, 6),
            (Some(0), 0, 1),
        ] {
            assert_eq!(threads(&cpu(physical, logical)), want, "{physical:?}/{logical}");
        }
    }

    #[test]
    fn class_labels() {
        // bytes of a model file -> the class it allows at Q4_K_M
        for (gib, want) in [
            (0.2, "too little memory for a 0.5B model at Q4_K_M"),
            (0.4, "up to ~0.5B at Q4_K_M"),
            (1.0, "up to ~1.5B at Q4_K_M"),
            (4.5, "up to ~7B at Q4_K_M"),
            (5.0, "up to ~8B at Q4_K_M"),
            (8.5, "up to ~14B at Q4_K_M"),
            (17.0, "up to ~24B at Q4_K_M"),
            (43.0, "up to ~70B at Q4_K_M"),
        ] {
            assert_eq!(class_label((gib * GIB as f64) as u64), want, "{gib} GiB");
        }
    }

    #[test]
    fn recommendations_table() {
        let mem = |gib: u64| MemoryInfo { total_bytes: gib * GIB, available_bytes: gib * GIB / 2 };
        // A 24 GiB card: 24 - 2.4 reserve = 21.6 GiB usable, /1.2 = 18 GiB of model -> 24B class.
        let r = recommend(
            &cpu(Some(8), 16),
            &mem(32),
            &[gpu(GpuVendor::Nvidia, Backend::Cuda, Some(24))],
        );
        assert_eq!(r.backend, Backend::Cuda);
        assert!(r.gpu_acceleration);
        assert_eq!(r.threads, 7);
        let g = r.max_model_gpu.unwrap();
        assert_eq!(g.bytes, (21.6 * GIB as f64 / 1.2) as u64);
        assert_eq!(g.label, "up to ~24B at Q4_K_M");
        // 32 GiB RAM: 32 - 6.4 = 25.6 usable, /1.2 = 21.3 GiB -> 32B class.
        assert_eq!(r.max_model_ram.label, "up to ~32B at Q4_K_M");

        // No GPU, 24 GiB RAM (this build machine): CPU, no GPU fit.
        let r = recommend(&cpu(Some(2), 2), &mem(24), &[]);
        assert_eq!(r.backend, Backend::Cpu);
        assert!(!r.gpu_acceleration);
        assert_eq!(r.max_model_gpu, None);
        assert_eq!(r.max_model_ram.label, "up to ~24B at Q4_K_M");

        // An AMD card and an Intel iGPU without figures: Vulkan, fit from the AMD card.
        let r = recommend(
            &cpu(Some(6), 12),
            &mem(16),
            &[
                gpu(GpuVendor::Intel, Backend::Vulkan, None),
                gpu(GpuVendor::Amd, Backend::Vulkan, Some(8)),
            ],
        );
        assert_eq!(r.backend, Backend::Vulkan);
        assert_eq!(r.max_model_gpu.unwrap().label, "up to ~8B at Q4_K_M");

        // CUDA wins over Vulkan when both kinds are present; the bigger card is the best one.
        let gpus = [
            gpu(GpuVendor::Amd, Backend::Vulkan, Some(16)),
            gpu(GpuVendor::Nvidia, Backend::Cuda, Some(12)),
        ];
        assert_eq!(preferred_backend(&gpus), Backend::Cuda);
        assert_eq!(best_gpu(&gpus).unwrap().vendor, GpuVendor::Amd);
    }
}
