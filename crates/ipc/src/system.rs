//! What the app knows about the machine: CPU, memory, GPUs, and what that means for models.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub model: String,
    /// `None` when the platform does not say (some VMs).
    pub physical_cores: Option<u32>,
    pub logical_cores: u32,
    pub arch: String,
}

/// System memory, read fresh on every call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    pub total_bytes: u64,
    /// What can be given to a new program without swapping (Linux `MemAvailable`), not "free".
    pub available_bytes: u64,
}

impl MemoryInfo {
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuVendor {
    Nvidia,
    Amd,
    Intel,
    Apple,
    Other,
}

impl GpuVendor {
    pub fn label(self) -> &'static str {
        match self {
            Self::Nvidia => "NVIDIA",
            Self::Amd => "AMD",
            Self::Intel => "Intel",
            Self::Apple => "Apple",
            Self::Other => "Other",
        }
    }
}

/// How llama.cpp / stable-diffusion.cpp would use a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Cuda,
    Vulkan,
    Metal,
    Cpu,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Self::Cuda => "CUDA",
            Self::Vulkan => "Vulkan",
            Self::Metal => "Metal",
            Self::Cpu => "CPU",
        }
    }
}

/// VRAM figures of one GPU at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VramInfo {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// Stable within one listing; the key for [`GpuMemory`].
    pub id: String,
    pub name: String,
    pub vendor: GpuVendor,
    pub backend: Backend,
    /// `None` where the platform gives no figures (Intel, a driver not loaded).
    pub vram: Option<VramInfo>,
    /// Shares system memory (Apple silicon, most integrated GPUs).
    pub unified_memory: bool,
    pub driver_version: Option<String>,
    /// CUDA compute capability, e.g. "8.9".
    pub compute_capability: Option<String>,
    pub uuid: Option<String>,
    /// PCI address, e.g. "0000:01:00.0".
    pub pci_address: Option<String>,
}

/// The largest model file that fits somewhere, and what that means in parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFit {
    pub bytes: u64,
    /// e.g. "up to ~13B at Q4_K_M".
    pub label: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendations {
    /// Threads for llama-server / sd-cli: physical cores, one left for the UI on larger machines.
    pub threads: u32,
    pub backend: Backend,
    pub gpu_acceleration: bool,
    /// Fits wholly in the best GPU's VRAM with room for its context; `None` without such a GPU.
    pub max_model_gpu: Option<ModelFit>,
    /// Fits in RAM with room for the system and its context (CPU inference).
    pub max_model_ram: ModelFit,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    pub gpus: Vec<GpuInfo>,
    pub recommendations: Recommendations,
}

/// Live VRAM of one GPU, keyed by [`GpuInfo::id`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuMemory {
    pub id: String,
    pub vram: VramInfo,
}

/// The cheap, live part: what polling asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryNow {
    pub memory: MemoryInfo,
    pub gpus: Vec<GpuMemory>,
}

/// Arguments of `memory_watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryWatchArgs {
    pub on: bool,
}

/// One reading of the runtime's memory sampler (every 2 s, the last 10 minutes kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub now: MemoryNow,
}

impl MemoryNow {
    /// Whether a fit badge weighed at `self` could read differently now: the GPUs changed, or
    /// RAM available or a GPU's free VRAM moved by at least `step` bytes. (The badges follow
    /// what is free, not the small drift of a busy machine.)
    pub fn free_moved(&self, now: &MemoryNow, step: u64) -> bool {
        let moved = |a: u64, b: u64| a.abs_diff(b) >= step;
        moved(self.memory.available_bytes, now.memory.available_bytes)
            || self.gpus.len() != now.gpus.len()
            || self
                .gpus
                .iter()
                .zip(&now.gpus)
                .any(|(a, b)| a.id != b.id || moved(a.vram.free_bytes, b.vram.free_bytes))
    }
}

/// How far free memory moves before the installed models' fit badges are weighed again.
pub const FIT_STEP: u64 = 256 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn badges_are_weighed_again_when_free_memory_moves_a_step() {
        const MIB: u64 = 1 << 20;
        let at = |ram: u64, gpus: &[(&str, u64)]| MemoryNow {
            memory: MemoryInfo { total_bytes: 32 << 30, available_bytes: ram * MIB },
            gpus: gpus
                .iter()
                .map(|(id, free)| GpuMemory {
                    id: (*id).into(),
                    vram: VramInfo {
                        total_bytes: 8 << 30,
                        used_bytes: (8 << 30) - free * MIB,
                        free_bytes: free * MIB,
                    },
                })
                .collect(),
        };
        let was = at(16000, &[("0", 6000)]);
        let table = [
            (at(16000, &[("0", 6000)]), false),
            (at(16255, &[("0", 5745)]), false),
            (at(16256, &[("0", 6000)]), true),
            (at(15744, &[("0", 6000)]), true),
            (at(16000, &[("0", 6256)]), true),
            (at(16000, &[("1", 6000)]), true),
            (at(16000, &[]), true),
            (at(16000, &[("0", 6000), ("1", 100)]), true),
        ];
        for (now, want) in table {
            assert_eq!(was.free_moved(&now, FIT_STEP), want, "{now:?}");
        }
    }
}
