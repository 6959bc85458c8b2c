//! The validation cache's record, `binaries/<runtime>/validation.json`: which build passed its
//! checks, and the file facts that let a later start trust it without hashing it again.

use super::{mirror_enum, mirror_struct, Conv};
use serde::{Deserialize, Serialize};

/// Format 1 is the first one (the cache had its `format` from the start).
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub format: u32,
    #[serde(flatten)]
    pub installed: Installed,
    /// The executable's modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
}

impl ValidationRecord {
    pub fn of(installed: &ipc::runtimes::InstalledRuntime, mtime_ns: u64) -> Self {
        Self { format: FORMAT, installed: installed.conv(), mtime_ns }
    }

    pub fn installed(&self) -> ipc::runtimes::InstalledRuntime {
        self.installed.conv()
    }
}

mirror_struct! {
    pub struct Installed <=> ipc::runtimes::InstalledRuntime {
        runtime: RuntimeKind,
        version: String,
        variant: Variant,
        path: String,
        reported_version: String,
        size: u64,
        sha256: String,
        checked_at_ms: u64,
        generation_checked: bool,
        devices: Vec<String>,
        offloaded_layers: Option<(u32, u32)>,
        custom: bool,
    }
}

mirror_enum! {
    pub enum RuntimeKind <=> ipc::runtimes::RuntimeKind { Llama, Diffusion }
}

mirror_enum! {
    pub enum Variant <=> ipc::runtimes::Variant { Cuda, Vulkan, Metal, Cpu, Custom }
}
