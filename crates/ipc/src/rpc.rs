//! llama.cpp's RPC workers (#18): other computers (or this one) that lend their devices' memory
//! to one model over TCP (`ggml-rpc-server`; `llama-server --rpc host:port,...`).

use serde::{Deserialize, Serialize};

/// The RPC protocol's version (llama.cpp's `RPC_PROTO_*_VERSION`): it changes between builds,
/// and a client speaks only to a worker of its own major version and no newer minor one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RpcVersion {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl RpcVersion {
    /// Whether a client of version `self` accepts a worker of version `worker` (llama.cpp's
    /// own rule: the same major version, a minor version no newer than the client's).
    pub fn accepts(self, worker: RpcVersion) -> bool {
        worker.major == self.major && worker.minor <= self.minor
    }
}

impl std::fmt::Display for RpcVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One device a worker lends, as it reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcDevice {
    /// Its index on that worker.
    pub index: u32,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// What a probe of a worker found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum WorkerState {
    /// It speaks this build's protocol; its devices and their memory.
    Ready { version: RpcVersion, devices: Vec<RpcDevice> },
    /// Nothing answers there (refused, no route, name not found, timed out connecting).
    Unreachable { why: String },
    /// It answers, but in a protocol this build's llama-server refuses.
    WrongVersion { worker: RpcVersion, ours: RpcVersion },
    /// It took the connection but did not answer in time: it serves one client at a time, so
    /// another program (a llama-server) may be using it; or it is not an RPC worker.
    Busy,
    /// It answered something that is not llama.cpp's RPC protocol.
    NotRpc { why: String },
}

/// A worker's address and what its last probe found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProbe {
    /// `host:port`.
    pub address: String,
    pub state: WorkerState,
    /// How long the probe took, in milliseconds.
    pub took_ms: u64,
}

impl WorkerProbe {
    /// Why it cannot take part in a start, or `None` when it can.
    pub fn problem(&self) -> Option<String> {
        let at = &self.address;
        match &self.state {
            WorkerState::Ready { devices, .. } if devices.is_empty() => {
                Some(format!("{at} lends no device"))
            }
            WorkerState::Ready { .. } => None,
            WorkerState::Unreachable { why } => Some(format!("{at} is unreachable ({why})")),
            WorkerState::WrongVersion { worker, ours } => Some(format!(
                "{at} speaks RPC protocol {worker}, this llama.cpp build {ours}: both need the \
                 same build"
            )),
            WorkerState::Busy => Some(format!(
                "{at} took the connection but did not answer: another program (a llama-server) \
                 is using it"
            )),
            WorkerState::NotRpc { why } => {
                Some(format!("{at} is not a llama.cpp RPC worker ({why})"))
            }
        }
    }

    /// It can take part in a start ([`Self::problem`] is `None`).
    pub fn is_ready(&self) -> bool {
        self.problem().is_none()
    }

    /// The state in a word, for a badge: `ready`, `unreachable`, `wrong version`, `busy`,
    /// `not a worker` (`no device` for a worker that lends none).
    pub fn label(&self) -> &'static str {
        match &self.state {
            WorkerState::Ready { devices, .. } if devices.is_empty() => "no device",
            WorkerState::Ready { .. } => "ready",
            WorkerState::Unreachable { .. } => "unreachable",
            WorkerState::WrongVersion { .. } => "wrong version",
            WorkerState::Busy => "busy",
            WorkerState::NotRpc { .. } => "not a worker",
        }
    }

    /// What the probe found, in a line: the devices and their memory, or what is wrong.
    pub fn detail(&self) -> String {
        match &self.state {
            WorkerState::Ready { version, devices } => {
                let each: Vec<String> = devices
                    .iter()
                    .map(|d| {
                        format!(
                            "{} free of {}",
                            crate::format::bytes(d.free_bytes),
                            crate::format::bytes(d.total_bytes)
                        )
                    })
                    .collect();
                format!("protocol {version}; {}", each.join(", "))
            }
            WorkerState::Unreachable { why } => why.clone(),
            WorkerState::WrongVersion { worker, ours } => {
                format!("it speaks RPC protocol {worker}, this llama.cpp build {ours}")
            }
            WorkerState::Busy => {
                "it took the connection but did not answer: in use by another program".into()
            }
            WorkerState::NotRpc { why } => why.clone(),
        }
    }
}

/// The worker addresses in what a person typed: separated by commas, spaces or lines, each
/// once, in order.
pub fn parse_workers(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in text.split([',', ' ', '\n', '\t']).map(str::trim).filter(|a| !a.is_empty()) {
        if !out.iter().any(|b| b == a) {
            out.push(a.to_owned());
        }
    }
    out
}

/// Whether listening on `host` lends this computer beyond itself (anything but 127.0.0.1,
/// which an empty host means): the user must confirm first.
pub fn exposes(host: &str) -> bool {
    !matches!(host.trim(), "" | "127.0.0.1")
}

/// The port llama.cpp's worker listens on by default.
pub const DEFAULT_PORT: u16 = 50052;
/// The tensor cache's cap by default: 20 GiB.
pub const DEFAULT_CACHE_CAP_GIB: u32 = 20;

/// `rpc_share_start`'s argument: lend this computer's devices to other machines' llama-server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareArgs {
    /// The address to listen on (empty: 127.0.0.1, this computer only).
    #[serde(default)]
    pub host: String,
    /// `None`: [`DEFAULT_PORT`].
    #[serde(default)]
    pub port: Option<u16>,
    /// llama.cpp device names to lend (`CUDA0`, `CPU`, …); empty: every GPU, else the CPU.
    #[serde(default)]
    pub devices: Vec<String>,
    /// The tensor cache's cap in GiB (`None`: [`DEFAULT_CACHE_CAP_GIB`]; 0: no cache).
    #[serde(default)]
    pub cache_cap_gib: Option<u32>,
    /// The user confirmed that an address other than 127.0.0.1 exposes an unauthenticated
    /// protocol, to be used on a trusted network only.
    #[serde(default)]
    pub exposed_ok: bool,
}

/// A device this computer can lend, by llama.cpp's name for it (`CUDA0`, `Vulkan0`, `CPU`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LendableDevice {
    pub name: String,
    pub description: String,
}

impl LendableDevice {
    /// What the installed build can lend: the GPUs its check found (`NAME: description`) and,
    /// always, the processor with the RAM.
    pub fn from_check(found: &[String]) -> Vec<LendableDevice> {
        let mut out: Vec<LendableDevice> = found
            .iter()
            .filter_map(|d| {
                let (name, description) = d.split_once(':').unwrap_or((d.as_str(), ""));
                let name = name.trim();
                let gpu = !name.is_empty() && !name.to_ascii_uppercase().starts_with("CPU");
                gpu.then(|| LendableDevice {
                    name: name.to_owned(),
                    description: description.trim().to_owned(),
                })
            })
            .collect();
        out.dedup_by(|a, b| a.name == b.name);
        out.push(LendableDevice {
            name: "CPU".into(),
            description: "the processor and its RAM".into(),
        });
        out
    }

    /// Why devices asked for (trimmed, blanks ignored) cannot be lent (one this computer does
    /// not have), or `None`.
    pub fn refuse(asked: &[String], lendable: &[LendableDevice]) -> Option<String> {
        let unknown: Vec<&str> = asked
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty() && !lendable.iter().any(|d| d.name == *a))
            .collect();
        (!unknown.is_empty()).then(|| {
            let have: Vec<&str> = lendable.iter().map(|d| d.name.as_str()).collect();
            format!(
                "this computer has no device {}; the installed llama.cpp build can lend {}",
                unknown.join(", "),
                have.join(", ")
            )
        })
    }
}

/// This computer's own worker, as the window shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareStatus {
    pub running: bool,
    /// `host:port` while it runs.
    pub address: Option<String>,
    pub pid: Option<u32>,
    /// What it answered its own probe: protocol and devices.
    pub probe: Option<WorkerProbe>,
    pub cache_bytes: u64,
    pub cache_cap_bytes: u64,
    /// Files removed from the cache at the last trim, and their bytes.
    pub trimmed: (usize, u64),
    pub last_error: Option<crate::IpcError>,
    /// The devices it can lend (the window's choice; none chosen: every GPU, else the CPU).
    #[serde(default)]
    pub lendable: Vec<LendableDevice>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_accepts_its_major_version_and_no_newer_minor() {
        let v = |major, minor, patch| RpcVersion { major, minor, patch };
        let ours = v(7, 1, 0);
        let table = [
            (v(7, 1, 0), true),
            (v(7, 0, 3), true),
            (v(7, 1, 9), true),
            (v(7, 2, 0), false),
            (v(6, 0, 0), false),
            (v(8, 0, 0), false),
        ];
        for (worker, want) in table {
            assert_eq!(ours.accepts(worker), want, "{worker}");
        }
        assert_eq!(v(7, 0, 0).to_string(), "7.0.0");
    }

    #[test]
    fn lendable_devices_are_the_checked_gpus_and_the_cpu() {
        let names = |found: &[&str]| -> Vec<String> {
            let found: Vec<String> = found.iter().map(|s| s.to_string()).collect();
            LendableDevice::from_check(&found).into_iter().map(|d| d.name).collect()
        };
        assert_eq!(names(&[]), ["CPU"]);
        assert_eq!(names(&["CPU: AMD Ryzen"]), ["CPU"]);
        assert_eq!(
            names(&["CUDA0: NVIDIA H100", "CUDA1: NVIDIA L4", "CUDA1: NVIDIA L4"]),
            ["CUDA0", "CUDA1", "CPU"]
        );
        let found = ["Vulkan0: AMD Radeon RX 7900 XTX".to_owned()];
        let lendable = LendableDevice::from_check(&found);
        assert_eq!(lendable[0].description, "AMD Radeon RX 7900 XTX");
        assert_eq!(LendableDevice::refuse(&["Vulkan0".into(), " CPU".into()], &lendable), None);
        assert_eq!(
            LendableDevice::refuse(&["CUDA0".into()], &lendable).as_deref(),
            Some("this computer has no device CUDA0; the installed llama.cpp build can lend Vulkan0, CPU")
        );
    }

    #[test]
    fn a_probe_reads_as_a_badge_and_a_line() {
        let p = |state| WorkerProbe { address: "10.0.0.2:50052".into(), state, took_ms: 4 };
        let v7 = RpcVersion { major: 7, minor: 0, patch: 0 };
        let ready = p(WorkerState::Ready {
            version: v7,
            devices: vec![RpcDevice { index: 0, free_bytes: 10 << 30, total_bytes: 12 << 30 }],
        });
        assert_eq!(ready.label(), "ready");
        assert_eq!(ready.detail(), "protocol 7.0.0; 10.0 GiB free of 12.0 GiB");
        let old = p(WorkerState::WrongVersion { worker: RpcVersion { major: 6, ..v7 }, ours: v7 });
        assert_eq!(old.label(), "wrong version");
        assert_eq!(old.detail(), "it speaks RPC protocol 6.0.0, this llama.cpp build 7.0.0");
        assert_eq!(p(WorkerState::Busy).label(), "busy");
    }

    #[test]
    fn what_stops_a_start_is_said_per_worker() {
        let p = |state| WorkerProbe { address: "a:1".into(), state, took_ms: 3 };
        let v7 = RpcVersion { major: 7, minor: 0, patch: 0 };
        let v6 = RpcVersion { major: 6, minor: 1, patch: 0 };
        let dev = RpcDevice { index: 0, free_bytes: 1 << 30, total_bytes: 2 << 30 };
        let table = [
            (p(WorkerState::Ready { version: v7, devices: vec![dev] }), None),
            (p(WorkerState::Ready { version: v7, devices: vec![] }), Some("lends no device")),
            (
                p(WorkerState::Unreachable { why: "refused".into() }),
                Some("a:1 is unreachable (refused)"),
            ),
            (
                p(WorkerState::WrongVersion { worker: v6, ours: v7 }),
                Some("speaks RPC protocol 6.1.0, this llama.cpp build 7.0.0"),
            ),
            (p(WorkerState::Busy), Some("another program")),
            (p(WorkerState::NotRpc { why: "HTTP".into() }), Some("not a llama.cpp RPC worker")),
        ];
        for (probe, want) in table {
            match (probe.problem(), want) {
                (None, None) => assert!(probe.is_ready()),
                (Some(got), Some(want)) => {
                    assert!(got.contains(want), "{got}");
                    assert!(!probe.is_ready() && probe.label() != "ready", "{probe:?}");
                }
                (got, want) => panic!("{probe:?}: {got:?} vs {want:?}"),
            }
        }
    }

    #[test]
    fn typed_worker_lists_and_exposed_hosts() {
        let table: [(&str, &[&str]); 4] = [
            ("", &[]),
            ("a:1, b:2", &["a:1", "b:2"]),
            (" a:1,,a:1\nb:2\tc:3 ", &["a:1", "b:2", "c:3"]),
            ("10.0.0.2:50052 10.0.0.3:50052", &["10.0.0.2:50052", "10.0.0.3:50052"]),
        ];
        for (text, want) in table {
            assert_eq!(parse_workers(text), want, "{text:?}");
        }
        for (host, want) in
            [("", false), (" 127.0.0.1 ", false), ("0.0.0.0", true), ("10.0.0.2", true)]
        {
            assert_eq!(exposes(host), want, "{host}");
        }
    }
}
