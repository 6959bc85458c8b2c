//! Prints what the app detects and, on a machine with an NVIDIA GPU, checks it against
//! nvidia-smi. Exit 0: all agree; 1: a mismatch; 2: nvidia-smi missing or failing.
//!
//! scripts/gpu-check (or: cargo run --release -p runtime --example gpu_check)

use runtime::system::{nvidia_smi, SystemProbe};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let info = match SystemProbe::real().system_info() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("detection failed: {}", e.to_ipc());
            return ExitCode::from(1);
        }
    };
    println!(
        "CPU: {} ({:?} physical / {} logical, {})",
        info.cpu.model, info.cpu.physical_cores, info.cpu.logical_cores, info.cpu.arch
    );
    println!(
        "RAM: {} total, {} available",
        ipc::format::bytes(info.memory.total_bytes),
        ipc::format::bytes(info.memory.available_bytes)
    );
    for g in &info.gpus {
        println!(
            "GPU {}: {} [{} / {}] vram={:?} driver={:?} cc={:?} pci={:?}",
            g.id,
            g.name,
            g.vendor.label(),
            g.backend.label(),
            g.vram,
            g.driver_version,
            g.compute_capability,
            g.pci_address
        );
    }
    println!("Recommendations: {:?}", info.recommendations);

    let out = match Command::new("nvidia-smi")
        .args([
            format!("--query-gpu={}", nvidia_smi::QUERY),
            "--format=csv,noheader,nounits".into(),
        ])
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!("nvidia-smi failed: {}", String::from_utf8_lossy(&o.stderr));
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("nvidia-smi not available ({e}): nothing to compare against");
            return ExitCode::from(2);
        }
    };
    let smi = match nvidia_smi::parse(&String::from_utf8_lossy(&out.stdout)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("could not read nvidia-smi's answer: {e}");
            return ExitCode::from(2);
        }
    };
    let lines = nvidia_smi::compare(&smi, &info.gpus);
    for l in &lines {
        println!("{l}");
    }
    if lines.iter().any(|l| l.starts_with("MISMATCH")) {
        println!("RESULT: mismatch");
        ExitCode::from(1)
    } else {
        println!("RESULT: detection agrees with nvidia-smi for {} GPU(s)", smi.len());
        ExitCode::SUCCESS
    }
}
