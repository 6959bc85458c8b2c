//! Hardware detection against fake machines: a sysfs tree in a temporary folder, a fake
//! /proc/meminfo, and a fixed list standing in for NVML.

use ipc::system::{Backend, GpuVendor, VramInfo};
use runtime::system::nvidia::{FixedNvidia, NvidiaDevice};
use runtime::system::{ProbeConfig, SystemProbe};
use std::path::PathBuf;
use std::sync::Arc;

const GIB: u64 = 1024 * 1024 * 1024;

struct FakeMachine {
    root: PathBuf,
}

impl FakeMachine {
    fn new(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("genai-fake-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sys/class/drm")).unwrap();
        let m = Self { root };
        m.set_meminfo(16 * GIB, 10 * GIB);
        m
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn set_meminfo(&self, total: u64, available: u64) {
        self.write(
            "meminfo",
            &format!(
                "MemTotal: {} kB\nMemFree: 1 kB\nMemAvailable: {} kB\n",
                total / 1024,
                available / 1024
            ),
        );
    }

    /// A DRM card with its PCI device folder, as the kernel lays it out.
    fn card(&self, n: u32, vendor: &str, device: &str, pci: &str) {
        let dev = format!("sys/class/drm/card{n}/device");
        self.write(&format!("{dev}/vendor"), &format!("{vendor}\n"));
        self.write(&format!("{dev}/device"), &format!("{device}\n"));
        self.write(&format!("{dev}/uevent"), &format!("DRIVER=x\nPCI_SLOT_NAME={pci}\n"));
        // Connectors and render nodes sit beside the cards and are not GPUs of their own.
        self.write(&format!("sys/class/drm/card{n}-DP-1/status"), "disconnected\n");
        self.write(&format!("sys/class/drm/renderD{}/dev", 128 + n), "226:128\n");
    }

    fn amd_vram(&self, n: u32, total: u64, used: u64) {
        let dev = format!("sys/class/drm/card{n}/device");
        self.write(&format!("{dev}/mem_info_vram_total"), &format!("{total}\n"));
        self.write(&format!("{dev}/mem_info_vram_used"), &format!("{used}\n"));
    }

    fn probe(&self, nvidia: Vec<NvidiaDevice>) -> SystemProbe {
        SystemProbe::new(
            ProbeConfig { sysfs_root: self.root.join("sys"), meminfo: self.root.join("meminfo") },
            Arc::new(FixedNvidia(nvidia)),
        )
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn rtx(index: u32, pci: &str, total: u64, used: u64) -> NvidiaDevice {
    NvidiaDevice {
        index,
        name: "NVIDIA GeForce RTX 4090".into(),
        uuid: Some(format!("GPU-{index}abc")),
        pci_address: runtime::system::nvidia::normalise_pci_address(pci),
        driver_version: Some("560.35.03".into()),
        compute_capability: Some("8.9".into()),
        vram: Some(VramInfo { total_bytes: total, used_bytes: used, free_bytes: total - used }),
    }
}

#[test]
fn no_gpu_means_cpu_and_no_gpu_fit() {
    let m = FakeMachine::new("none");
    let info = m.probe(vec![]).system_info().unwrap();
    assert!(info.gpus.is_empty());
    assert_eq!(info.memory.total_bytes, 16 * GIB);
    assert_eq!(info.memory.available_bytes, 10 * GIB);
    assert_eq!(info.recommendations.backend, Backend::Cpu);
    assert!(!info.recommendations.gpu_acceleration);
    assert_eq!(info.recommendations.max_model_gpu, None);
    // 16 GiB - 3.2 reserve = 12.8, /1.2 = 10.7 GiB of model: 14B class at Q4_K_M.
    assert_eq!(info.recommendations.max_model_ram.label, "up to ~14B at Q4_K_M");
}

#[test]
fn missing_sysfs_is_no_gpu_not_an_error() {
    let m = FakeMachine::new("nosys");
    std::fs::remove_dir_all(m.root.join("sys")).unwrap();
    assert!(m.probe(vec![]).system_info().unwrap().gpus.is_empty());
}

#[test]
fn one_amd_gpu_with_live_vram() {
    let m = FakeMachine::new("amd");
    m.card(0, "0x1002", "0x73bf", "0000:03:00.0");
    m.amd_vram(0, 16 * GIB, GIB);
    m.write("sys/class/drm/card0/device/product_name", "AMD Radeon RX 6800 XT\n");
    let probe = m.probe(vec![]);

    let info = probe.system_info().unwrap();
    assert_eq!(info.gpus.len(), 1, "{:?}", info.gpus);
    let g = &info.gpus[0];
    assert_eq!(g.name, "AMD Radeon RX 6800 XT");
    assert_eq!(g.vendor, GpuVendor::Amd);
    assert_eq!(g.backend, Backend::Vulkan);
    assert_eq!(g.pci_address.as_deref(), Some("0000:03:00.0"));
    assert_eq!(
        g.vram,
        Some(VramInfo { total_bytes: 16 * GIB, used_bytes: GIB, free_bytes: 15 * GIB })
    );
    assert_eq!(info.recommendations.backend, Backend::Vulkan);
    assert!(info.recommendations.max_model_gpu.is_some());

    // VRAM in use changes (another program loads a model): the next poll shows it at once,
    // although the GPU list itself is cached.
    m.amd_vram(0, 16 * GIB, 9 * GIB);
    let now = probe.memory_now().unwrap();
    assert_eq!(now.gpus.len(), 1);
    assert_eq!(now.gpus[0].id, g.id);
    assert_eq!(now.gpus[0].vram.used_bytes, 9 * GIB);
    assert_eq!(now.gpus[0].vram.free_bytes, 7 * GIB);
}

#[test]
fn nvidia_card_without_driver_is_listed_without_figures() {
    let m = FakeMachine::new("nodriver");
    m.card(0, "0x10de", "0x2684", "0000:01:00.0");
    let info = m.probe(vec![]).system_info().unwrap();
    assert_eq!(info.gpus.len(), 1);
    let g = &info.gpus[0];
    assert_eq!(g.vendor, GpuVendor::Nvidia);
    assert!(g.name.contains("driver not loaded"), "{}", g.name);
    assert_eq!(g.vram, None);
    assert_eq!(g.backend, Backend::Vulkan, "no CUDA without the NVIDIA driver");
    assert_eq!(info.recommendations.max_model_gpu, None, "no figures, no GPU fit");
}

#[test]
fn two_gpus_of_different_vendors_each_listed_once() {
    let m = FakeMachine::new("two");
    // The NVIDIA card appears in sysfs and in NVML: one GPU, with NVML's richer facts.
    m.card(0, "0x10de", "0x2684", "0000:01:00.0");
    m.card(1, "0x1002", "0x744c", "0000:03:00.0");
    m.amd_vram(1, 24 * GIB, 2 * GIB);
    let probe = m.probe(vec![rtx(0, "00000000:01:00.0", 24 * GIB, 3 * GIB)]);

    let info = probe.system_info().unwrap();
    let vendors: Vec<GpuVendor> = info.gpus.iter().map(|g| g.vendor).collect();
    assert_eq!(vendors, [GpuVendor::Nvidia, GpuVendor::Amd], "{:#?}", info.gpus);
    let nv = &info.gpus[0];
    assert_eq!(nv.name, "NVIDIA GeForce RTX 4090");
    assert_eq!(nv.backend, Backend::Cuda);
    assert_eq!(nv.compute_capability.as_deref(), Some("8.9"));
    assert_eq!(nv.driver_version.as_deref(), Some("560.35.03"));
    assert_eq!(nv.uuid.as_deref(), Some("GPU-0abc"));
    assert_eq!(info.gpus[1].name, "AMD GPU [1002:744c]");
    assert_eq!(info.recommendations.backend, Backend::Cuda, "CUDA preferred when it works");

    let ids: Vec<&str> = info.gpus.iter().map(|g| g.id.as_str()).collect();
    let now = probe.memory_now().unwrap();
    let now_ids: Vec<&str> = now.gpus.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, now_ids, "memory_now keys match system_info's GPUs");
}

#[test]
fn static_facts_are_cached_until_invalidated_live_ones_never() {
    let m = FakeMachine::new("cache");
    let probe = m.probe(vec![]);
    assert!(probe.system_info().unwrap().gpus.is_empty());

    // A GPU appearing (eGPU plugged in) is static: not seen until the cache is dropped...
    m.card(0, "0x1002", "0x73bf", "0000:03:00.0");
    m.amd_vram(0, 8 * GIB, 0);
    // ...while memory is live: seen at once.
    m.set_meminfo(16 * GIB, 3 * GIB);
    let info = probe.system_info().unwrap();
    assert!(info.gpus.is_empty(), "GPU list should still be the cached one");
    assert_eq!(info.memory.available_bytes, 3 * GIB);
    assert_eq!(probe.memory_now().unwrap().memory.available_bytes, 3 * GIB);

    probe.invalidate();
    assert_eq!(probe.system_info().unwrap().gpus.len(), 1);
}

#[test]
fn unreadable_meminfo_is_a_clear_error_elsewhere_a_fallback() {
    let m = FakeMachine::new("nomem");
    std::fs::write(m.root.join("meminfo"), "nonsense").unwrap();
    let e = m.probe(vec![]).memory_now().unwrap_err();
    assert_eq!(e.code(), ipc::ErrorCode::Unsupported);
    assert!(e.to_string().contains("meminfo"), "{e}");
}

#[test]
fn the_real_machine_answers() {
    let probe = SystemProbe::real();
    let info = probe.system_info().unwrap();
    let nproc = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(info.cpu.logical_cores, nproc);
    assert!(!info.cpu.model.is_empty());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 =
        meminfo.lines().next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(info.memory.total_bytes, total_kib * 1024);
}

#[tokio::test]
async fn a_server_starting_or_stopping_refreshes_the_facts_and_tells_the_window() {
    let m = FakeMachine::new("changed");
    let probe = Arc::new(m.probe(vec![]));
    let events = runtime::EventBus::default();
    let mut rx = events.subscribe();
    let home = m.root.join("home");
    let rt = runtime::Runtime::open(
        runtime::StorageRoot::new(&home, ipc::StorageRootSource::Env),
        events,
        probe.clone(),
    )
    .unwrap();
    assert!(probe.system_info().unwrap().gpus.is_empty());
    m.card(0, "0x1002", "0x73bf", "0000:03:00.0");

    rt.system_changed();
    assert_eq!(rx.recv().await.unwrap(), ipc::AppEvent::SystemChanged);
    assert_eq!(probe.system_info().unwrap().gpus.len(), 1, "cache dropped on change");
}
