//! The machine: CPU, memory and GPUs, and what they mean for the models it can run.
//!
//! Static facts (CPU model, which GPUs exist) are cached for a minute and dropped whenever a
//! server starts or stops; live figures (RAM, VRAM used and free) are read on every call.

pub mod history;
pub mod memory;
pub mod nvidia;
pub mod nvidia_smi;
pub mod recommend;
pub mod sysfs;

/// Whether this machine has a GPU render node (`/dev/dri/renderD*`): any GPU driver that can
/// render offers one. Without it, OpenGL (and so WebKit's compositing) runs on the CPU.
pub fn has_render_node() -> bool {
    std::fs::read_dir("/dev/dri")
        .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("renderD")))
        .unwrap_or(false)
}

use crate::{Result, RuntimeError};
use ipc::system::{
    Backend, CpuInfo, GpuInfo, GpuMemory, GpuVendor, MemoryInfo, MemoryNow, SystemInfo, VramInfo,
};
use nvidia::NvidiaSource;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the static facts are trusted without a server starting or stopping.
pub const STATIC_TTL: Duration = Duration::from_secs(60);

/// Where detection reads from. Tests point these at a fake tree.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// Normally `/sys`.
    pub sysfs_root: PathBuf,
    /// Normally `/proc/meminfo`.
    pub meminfo: PathBuf,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { sysfs_root: "/sys".into(), meminfo: "/proc/meminfo".into() }
    }
}

/// Where a GPU's live VRAM is read from.
#[derive(Debug, Clone)]
enum LiveVram {
    Nvml(u32),
    Sysfs(PathBuf),
    /// Unified memory: the system's own figures.
    SystemMemory,
    None,
}

#[derive(Debug, Clone)]
struct StaticFacts {
    at: Instant,
    cpu: CpuInfo,
    gpus: Vec<(GpuInfo, LiveVram)>,
}

#[derive(Debug)]
pub struct SystemProbe {
    config: ProbeConfig,
    nvidia: Arc<dyn NvidiaSource>,
    cache: Mutex<Option<StaticFacts>>,
}

impl SystemProbe {
    pub fn new(config: ProbeConfig, nvidia: Arc<dyn NvidiaSource>) -> Self {
        Self { config, nvidia, cache: Mutex::new(None) }
    }

    /// The real machine: `/sys`, `/proc/meminfo`, NVML.
    pub fn real() -> Self {
        Self::new(ProbeConfig::default(), Arc::new(nvidia::Nvml::default()))
    }

    /// Forgets the static facts; the next call detects again.
    pub fn invalidate(&self) {
        *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn static_facts(&self) -> StaticFacts {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_ref() {
            Some(f) if f.at.elapsed() < STATIC_TTL => f.clone(),
            _ => {
                let facts = StaticFacts {
                    at: Instant::now(),
                    cpu: detect_cpu(),
                    gpus: detect_gpus(&self.config, self.nvidia.as_ref()),
                };
                *cache = Some(facts.clone());
                facts
            }
        }
    }

    fn memory(&self) -> Result<MemoryInfo> {
        memory::read(&self.config.meminfo).ok_or_else(|| {
            RuntimeError::Unsupported(format!(
                "could not read system memory from {}",
                self.config.meminfo.display()
            ))
        })
    }

    fn live_vram(&self, source: &LiveVram, memory: &MemoryInfo) -> Option<VramInfo> {
        match source {
            LiveVram::Nvml(index) => self.nvidia.vram(*index),
            LiveVram::Sysfs(dir) => sysfs::read_vram(dir),
            LiveVram::SystemMemory => Some(VramInfo {
                total_bytes: memory.total_bytes,
                used_bytes: memory.used_bytes(),
                free_bytes: memory.available_bytes,
            }),
            LiveVram::None => None,
        }
    }

    /// RAM and every GPU's VRAM, now. Cheap: meant for polling.
    pub fn memory_now(&self) -> Result<MemoryNow> {
        let memory = self.memory()?;
        let facts = self.static_facts();
        let gpus = facts
            .gpus
            .iter()
            .filter_map(|(g, live)| {
                Some(GpuMemory { id: g.id.clone(), vram: self.live_vram(live, &memory)? })
            })
            .collect();
        Ok(MemoryNow { memory, gpus })
    }

    /// Everything: CPU, memory, GPUs with live VRAM, recommendations, read now.
    pub fn system_info(&self) -> Result<SystemInfo> {
        Ok(self.system_info_with(self.memory_now()?))
    }

    /// Everything, with the live figures of a reading already taken (the memory feed's): the
    /// static facts come from the cache, so nothing else is read.
    pub fn system_info_with(&self, now: MemoryNow) -> SystemInfo {
        let MemoryNow { memory, gpus: live } = now;
        let facts = self.static_facts();
        let gpus: Vec<GpuInfo> = facts
            .gpus
            .iter()
            .map(|(g, _)| GpuInfo {
                vram: live.iter().find(|l| l.id == g.id).map(|l| l.vram).or(g.vram),
                ..g.clone()
            })
            .collect();
        let recommendations = recommend::recommend(&facts.cpu, &memory, &gpus);
        SystemInfo { cpu: facts.cpu, memory, gpus, recommendations }
    }

    /// Every GPU as last detected (no live read): enough to choose a runtime's variant.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        self.static_facts().gpus.into_iter().map(|(g, _)| g).collect()
    }

    /// (id, name) of each GPU, from the cached facts (no live read).
    pub fn gpu_names(&self) -> Vec<(String, String)> {
        self.static_facts().gpus.iter().map(|(g, _)| (g.id.clone(), g.name.clone())).collect()
    }
}

fn detect_cpu() -> CpuInfo {
    let mut sys = sysinfo::System::new().ok();
    if let Some(s) = sys.as_mut() {
        s.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    }
    let cpus = sys.as_ref().map(|s| s.cpus()).unwrap_or(&[]);
    let logical = match cpus.len() {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    };
    let model = cpus
        .first()
        .map(|c| c.brand().trim().to_owned())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| "Unknown CPU".to_owned());
    CpuInfo {
        model,
        physical_cores: sysinfo::System::physical_core_count().ok().map(|n| n as u32),
        logical_cores: logical as u32,
        arch: std::env::consts::ARCH.to_owned(),
    }
}

/// NVML devices first (they carry the most), then DRM cards not already listed, matched by PCI
/// address, so a GPU that both sources see is listed once.
fn detect_gpus(config: &ProbeConfig, nvidia: &dyn NvidiaSource) -> Vec<(GpuInfo, LiveVram)> {
    let mut out: Vec<(GpuInfo, LiveVram)> = Vec::new();
    for d in nvidia.devices() {
        let id = match (&d.uuid, &d.pci_address) {
            (Some(u), _) => format!("nvidia:{u}"),
            (None, Some(p)) => format!("pci:{p}"),
            (None, None) => format!("nvidia:{}", d.index),
        };
        out.push((
            GpuInfo {
                id,
                name: d.name,
                vendor: GpuVendor::Nvidia,
                backend: Backend::Cuda,
                vram: d.vram,
                unified_memory: false,
                driver_version: d.driver_version,
                compute_capability: d.compute_capability,
                uuid: d.uuid,
                pci_address: d.pci_address,
            },
            LiveVram::Nvml(d.index),
        ));
    }
    for card in sysfs::scan(&config.sysfs_root) {
        let seen = out
            .iter()
            .any(|(g, _)| card.pci_address.is_some() && g.pci_address == card.pci_address);
        if seen {
            continue;
        }
        let ids = match card.device_id {
            Some(dev) => format!("[{:04x}:{dev:04x}]", card.vendor_id),
            None => format!("[{:04x}]", card.vendor_id),
        };
        let name = card.product_name.clone().unwrap_or_else(|| match card.vendor {
            // An NVIDIA card that NVML did not report: nouveau, or the driver is not loaded.
            GpuVendor::Nvidia => format!("NVIDIA GPU {ids} (NVIDIA driver not loaded)"),
            v => format!("{} GPU {ids}", v.label()),
        });
        let live = if card.vram.is_some() {
            LiveVram::Sysfs(card.device_dir.clone())
        } else {
            LiveVram::None
        };
        out.push((
            GpuInfo {
                id: card
                    .pci_address
                    .as_ref()
                    .map_or_else(|| card.card.clone(), |p| format!("pci:{p}")),
                name,
                vendor: card.vendor,
                backend: Backend::Vulkan,
                vram: card.vram,
                unified_memory: false,
                driver_version: None,
                compute_capability: None,
                uuid: None,
                pci_address: card.pci_address,
            },
            live,
        ));
    }
    if cfg!(target_os = "macos") && cfg!(target_arch = "aarch64") {
        out.push((apple_silicon_gpu(), LiveVram::SystemMemory));
    }
    out
}

/// Apple silicon shares memory between CPU and GPU; Metal may use most of it.
fn apple_silicon_gpu() -> GpuInfo {
    GpuInfo {
        id: "apple:0".into(),
        name: "Apple silicon GPU".into(),
        vendor: GpuVendor::Apple,
        backend: Backend::Metal,
        vram: None,
        unified_memory: true,
        driver_version: None,
        compute_capability: None,
        uuid: None,
        pci_address: None,
    }
}

/// A GPU for table tests: `total_gib` of free VRAM, or no figures at all.
#[cfg(test)]
pub(crate) fn test_gpu(vendor: GpuVendor, backend: Backend, total_gib: Option<u64>) -> GpuInfo {
    const GIB: u64 = 1 << 30;
    GpuInfo {
        id: format!("{vendor:?}"),
        name: "g".into(),
        vendor,
        backend,
        vram: total_gib.map(|t| VramInfo {
            total_bytes: t * GIB,
            used_bytes: 0,
            free_bytes: t * GIB,
        }),
        unified_memory: false,
        driver_version: None,
        compute_capability: None,
        uuid: None,
        pci_address: None,
    }
}

/// Live memory figures, and the names of the GPUs they are about: the seam through which the
/// orchestrator and the image server read memory (tests script it).
pub trait MemorySource: Send + Sync {
    fn memory_now(&self) -> Result<MemoryNow>;
    /// (id, name) of each GPU.
    fn gpu_names(&self) -> Vec<(String, String)>;
}

impl MemorySource for SystemProbe {
    fn memory_now(&self) -> Result<MemoryNow> {
        SystemProbe::memory_now(self)
    }

    fn gpu_names(&self) -> Vec<(String, String)> {
        SystemProbe::gpu_names(self)
    }
}
