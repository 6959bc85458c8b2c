//! NVIDIA GPUs through NVML, loaded at run time. A machine without the driver is a normal case:
//! the source then simply lists no devices.

use ipc::system::VramInfo;
use std::sync::OnceLock;

/// One NVIDIA device as NVML reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvidiaDevice {
    pub index: u32,
    pub name: String,
    pub uuid: Option<String>,
    /// NVML's bus id, normalised to "dddd:bb:dd.f".
    pub pci_address: Option<String>,
    pub driver_version: Option<String>,
    pub compute_capability: Option<String>,
    pub vram: Option<VramInfo>,
}

/// Where NVIDIA devices come from: NVML on a real machine, a list in tests.
pub trait NvidiaSource: Send + Sync + std::fmt::Debug {
    /// All devices with their current VRAM; empty when there is no driver.
    fn devices(&self) -> Vec<NvidiaDevice>;
    /// Current VRAM of device `index` (the live part, asked for on every poll).
    fn vram(&self, index: u32) -> Option<VramInfo>;
}

/// "00000000:01:00.0" (NVML) and "0000:01:00.0" (sysfs) name the same device.
pub fn normalise_pci_address(raw: &str) -> Option<String> {
    let raw = raw.trim().to_ascii_lowercase();
    let (domain, rest) = raw.split_once(':')?;
    let domain = u32::from_str_radix(domain, 16).ok()?;
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let bus = u32::from_str_radix(bus, 16).ok()?;
    let dev = u32::from_str_radix(dev, 16).ok()?;
    let func = u32::from_str_radix(func, 16).ok()?;
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}"))
}

/// The real source. NVML is opened on first use and kept; if it cannot be opened (no driver,
/// no library) that is remembered too, so a machine without NVIDIA pays the cost once.
#[derive(Debug, Default)]
pub struct Nvml {
    handle: OnceLock<Option<nvml_wrapper::Nvml>>,
}

impl Nvml {
    fn handle(&self) -> Option<&nvml_wrapper::Nvml> {
        self.handle
            .get_or_init(|| {
                // The unversioned name exists only with the development package; try both.
                nvml_wrapper::Nvml::init().ok().or_else(|| {
                    nvml_wrapper::Nvml::builder()
                        .lib_path(std::ffi::OsStr::new("libnvidia-ml.so"))
                        .init()
                        .ok()
                })
            })
            .as_ref()
    }
}

fn vram_of(device: &nvml_wrapper::Device<'_>) -> Option<VramInfo> {
    let m = device.memory_info().ok()?;
    Some(VramInfo { total_bytes: m.total, used_bytes: m.used, free_bytes: m.free })
}

impl NvidiaSource for Nvml {
    fn devices(&self) -> Vec<NvidiaDevice> {
        let Some(nvml) = self.handle() else {
            return Vec::new();
        };
        let driver = nvml.sys_driver_version().ok();
        let count = nvml.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|index| {
                let d = nvml.device_by_index(index).ok()?;
                Some(NvidiaDevice {
                    index,
                    name: d.name().unwrap_or_else(|_| "NVIDIA GPU".to_owned()),
                    uuid: d.uuid().ok(),
                    pci_address: d.pci_info().ok().and_then(|p| normalise_pci_address(&p.bus_id)),
                    driver_version: driver.clone(),
                    compute_capability: d
                        .cuda_compute_capability()
                        .ok()
                        .map(|c| format!("{}.{}", c.major, c.minor)),
                    vram: vram_of(&d),
                })
            })
            .collect()
    }

    fn vram(&self, index: u32) -> Option<VramInfo> {
        vram_of(&self.handle()?.device_by_index(index).ok()?)
    }
}

/// A fixed list of devices, for tests and for machines where NVML must not be touched.
#[derive(Debug, Default, Clone)]
pub struct FixedNvidia(pub Vec<NvidiaDevice>);

impl NvidiaSource for FixedNvidia {
    fn devices(&self) -> Vec<NvidiaDevice> {
        self.0.clone()
    }

    fn vram(&self, index: u32) -> Option<VramInfo> {
        self.0.iter().find(|d| d.index == index).and_then(|d| d.vram)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_from_both_sources_agree() {
        assert_eq!(normalise_pci_address("00000000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(normalise_pci_address("0000:01:00.0").as_deref(), Some("0000:01:00.0"));
        assert_eq!(normalise_pci_address("0000:C1:00.0\n").as_deref(), Some("0000:c1:00.0"));
        assert_eq!(normalise_pci_address("garbage"), None);
        assert_eq!(normalise_pci_address("0000:01"), None);
    }

    #[test]
    fn no_driver_is_no_devices_not_an_error() {
        // On machines without the NVIDIA driver (like CI) this lists nothing; with one, the
        // GPU script (scripts/gpu-check) compares the result with nvidia-smi.
        let devices = Nvml::default().devices();
        for d in &devices {
            assert!(!d.name.is_empty());
        }
    }
}
