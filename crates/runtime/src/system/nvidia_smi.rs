//! Checking our NVIDIA detection against `nvidia-smi`, on machines that have one (see
//! `scripts/gpu-check`). Parsing and comparing are pure so they are tested everywhere.

use ipc::system::GpuInfo;

/// The query `scripts/gpu-check` runs: `nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits`.
pub const QUERY: &str = "uuid,name,memory.total,memory.free";

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmiGpu {
    pub uuid: String,
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

/// Parses the CSV that [`QUERY`] prints (MiB figures).
pub fn parse(csv: &str) -> Result<Vec<SmiGpu>, String> {
    csv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            let [uuid, name, total, free] = f[..] else {
                return Err(format!("expected 4 fields, got {}: {line:?}", f.len()));
            };
            let mib = |v: &str| {
                v.parse::<u64>().map(|n| n * MIB).map_err(|_| format!("not a number: {v:?}"))
            };
            Ok(SmiGpu {
                uuid: uuid.to_owned(),
                name: name.to_owned(),
                total_bytes: mib(total)?,
                free_bytes: mib(free)?,
            })
        })
        .collect()
}

/// Compares each nvidia-smi GPU with ours: same name, total VRAM within 1%, free VRAM within 5%
/// (of nvidia-smi's free figure, at least 64 MiB, since free moves while both are read).
/// Returns one line per check; any line starting with "MISMATCH" is a failure.
pub fn compare(smi: &[SmiGpu], ours: &[GpuInfo]) -> Vec<String> {
    let mut lines = Vec::new();
    for s in smi {
        let Some(g) = ours.iter().find(|g| g.uuid.as_deref() == Some(s.uuid.as_str())) else {
            lines.push(format!("MISMATCH {}: not detected by the app", s.uuid));
            continue;
        };
        let status = |ok: bool| if ok { "ok" } else { "MISMATCH" };
        lines.push(format!(
            "{} {} name: app {:?}, nvidia-smi {:?}",
            status(g.name == s.name),
            s.uuid,
            g.name,
            s.name
        ));
        let Some(v) = g.vram else {
            lines.push(format!("MISMATCH {}: the app has no VRAM figures", s.uuid));
            continue;
        };
        let within = |a: u64, b: u64, tol: u64| a.abs_diff(b) <= tol;
        let total_ok = within(v.total_bytes, s.total_bytes, s.total_bytes / 100);
        lines.push(format!(
            "{} {} total VRAM: app {} MiB, nvidia-smi {} MiB (within 1%)",
            status(total_ok),
            s.uuid,
            v.total_bytes / MIB,
            s.total_bytes / MIB
        ));
        let free_ok = within(v.free_bytes, s.free_bytes, (s.free_bytes / 20).max(64 * MIB));
        lines.push(format!(
            "{} {} free VRAM: app {} MiB, nvidia-smi {} MiB (within 5%)",
            status(free_ok),
            s.uuid,
            v.free_bytes / MIB,
            s.free_bytes / MIB
        ));
    }
    let app_nvidia = ours.iter().filter(|g| g.uuid.is_some()).count();
    if app_nvidia != smi.len() {
        lines.push(format!(
            "MISMATCH count: the app lists {app_nvidia} NVIDIA GPU(s), nvidia-smi {}",
            smi.len()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::system::{Backend, GpuVendor, VramInfo};

    const H100: &str = "GPU-1b2c, NVIDIA H100 80GB HBM3, 81559, 81016\n";

    fn ours(name: &str, total_mib: u64, free_mib: u64) -> GpuInfo {
        GpuInfo {
            id: "nvidia:GPU-1b2c".into(),
            name: name.into(),
            vendor: GpuVendor::Nvidia,
            backend: Backend::Cuda,
            vram: Some(VramInfo {
                total_bytes: total_mib * MIB,
                used_bytes: (total_mib - free_mib) * MIB,
                free_bytes: free_mib * MIB,
            }),
            unified_memory: false,
            driver_version: None,
            compute_capability: None,
            uuid: Some("GPU-1b2c".into()),
            pci_address: None,
        }
    }

    #[test]
    fn parses_the_query_output() {
        let g = parse(H100).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].total_bytes, 81559 * MIB);
        assert!(parse("a, b, c\n").is_err());
        assert!(parse("u, n, lots, 1\n").is_err());
    }

    #[test]
    fn agreement_and_each_kind_of_mismatch() {
        let smi = parse(H100).unwrap();
        let ok = compare(&smi, &[ours("NVIDIA H100 80GB HBM3", 81559, 81000)]);
        assert!(ok.iter().all(|l| !l.starts_with("MISMATCH")), "{ok:#?}");

        let bad_total = compare(&smi, &[ours("NVIDIA H100 80GB HBM3", 70000, 69000)]);
        assert!(bad_total.iter().any(|l| l.starts_with("MISMATCH") && l.contains("total")));
        let bad_free = compare(&smi, &[ours("NVIDIA H100 80GB HBM3", 81559, 60000)]);
        assert!(bad_free.iter().any(|l| l.starts_with("MISMATCH") && l.contains("free")));
        let bad_name = compare(&smi, &[ours("H100", 81559, 81016)]);
        assert!(bad_name.iter().any(|l| l.starts_with("MISMATCH") && l.contains("name")));
        let missing = compare(&smi, &[]);
        assert!(missing.iter().any(|l| l.contains("not detected")));
    }
}
