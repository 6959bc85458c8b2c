//! GPUs as Linux's DRM subsystem shows them under `<root>/class/drm/card<N>/device`: the vendor
//! id for every card, and for AMD the VRAM counters `mem_info_vram_{total,used}`.

use ipc::system::{GpuVendor, VramInfo};
use std::path::{Path, PathBuf};

/// One DRM card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrmCard {
    /// "card0"
    pub card: String,
    /// The card's `device` folder: where the live VRAM counters are read from.
    pub device_dir: PathBuf,
    pub vendor: GpuVendor,
    pub vendor_id: u16,
    pub device_id: Option<u16>,
    pub pci_address: Option<String>,
    /// The marketing name where the driver gives one (amdgpu's `product_name`).
    pub product_name: Option<String>,
    pub vram: Option<VramInfo>,
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

fn read_hex_u16(path: &Path) -> Option<u16> {
    let s = read_trimmed(path)?;
    u16::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

pub fn vendor_of(id: u16) -> GpuVendor {
    match id {
        0x10de => GpuVendor::Nvidia,
        0x1002 | 0x1022 => GpuVendor::Amd,
        0x8086 => GpuVendor::Intel,
        0x106b => GpuVendor::Apple,
        _ => GpuVendor::Other,
    }
}

/// VRAM counters of an amdgpu device folder; `None` for drivers that have none.
pub fn read_vram(device_dir: &Path) -> Option<VramInfo> {
    let total = read_u64(&device_dir.join("mem_info_vram_total"))?;
    let used = read_u64(&device_dir.join("mem_info_vram_used"))?.min(total);
    Some(VramInfo { total_bytes: total, used_bytes: used, free_bytes: total - used })
}

fn pci_address(device_dir: &Path) -> Option<String> {
    let uevent = std::fs::read_to_string(device_dir.join("uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
        .and_then(super::nvidia::normalise_pci_address)
}

/// Lists `card<N>` entries (not connectors such as `card0-DP-1`), in card order.
pub fn scan(sysfs_root: &Path) -> Vec<DrmCard> {
    let drm = sysfs_root.join("class/drm");
    let Ok(entries) = std::fs::read_dir(&drm) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, DrmCard)> = entries
        .flatten()
        .filter_map(|e| {
            let card = e.file_name().to_str()?.to_owned();
            let n: u32 = card.strip_prefix("card")?.parse().ok()?;
            let device_dir = drm.join(&card).join("device");
            let vendor_id = read_hex_u16(&device_dir.join("vendor"))?;
            let vendor = vendor_of(vendor_id);
            Some((
                n,
                DrmCard {
                    card,
                    vendor,
                    vendor_id,
                    device_id: read_hex_u16(&device_dir.join("device")),
                    pci_address: pci_address(&device_dir),
                    product_name: read_trimmed(&device_dir.join("product_name")),
                    vram: read_vram(&device_dir),
                    device_dir,
                },
            ))
        })
        .collect();
    cards.sort_by_key(|(n, _)| *n);
    cards.into_iter().map(|(_, c)| c).collect()
}
