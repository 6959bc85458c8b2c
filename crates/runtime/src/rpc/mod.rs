//! llama.cpp's RPC workers (#18): `ggml-rpc-server` lends a machine's devices over TCP, and
//! `llama-server --rpc host:port,...` splits a model's layers across them. `probe` asks a
//! worker who it is and what it lends, in the protocol itself, bounded in time; `cache` keeps
//! the local worker's tensor cache under a cap. Here: the worker program of an installed build
//! and the protocol it speaks, and what stops a start (pure).

pub mod cache;
pub mod local;
pub mod probe;

use crate::process::{Event, ExitInfo, Supervised};
use crate::{Result, RuntimeError};
use ipc::rpc::{RpcVersion, WorkerProbe, WorkerState};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a worker started only to read its protocol has to answer.
const VERSION_WITHIN: Duration = Duration::from_secs(10);

/// The worker's names in llama.cpp's builds: `ggml-rpc-server` now, `rpc-server` before.
pub const WORKER_NAMES: [&str; 2] = ["ggml-rpc-server", "rpc-server"];

/// The worker program shipped beside an installed llama-server, if the build has one (only
/// builds with the RPC backend do).
pub fn worker_beside(llama_server: &Path) -> Option<PathBuf> {
    let dir = llama_server.parent()?;
    let exe = |name: &str| dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    WORKER_NAMES.iter().map(|n| exe(n)).find(|p| crate::process::is_executable(p))
}

/// Waits until the worker started as `child` answers HELLO on `address`, giving its lines to
/// `on_line` between tries. Each HELLO runs to its end, never cancelled midway: a worker whose
/// client vanishes while it answers dies of SIGPIPE. `Err` with its exit when it ended first
/// (it exits 0 when it cannot listen), with `None` when `within` passed.
pub async fn answering(
    child: &mut Supervised,
    address: &str,
    within: Duration,
    mut on_line: impl FnMut(String),
) -> std::result::Result<RpcVersion, Option<ExitInfo>> {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = probe::version(address, Duration::from_millis(500)).await {
            return Ok(v);
        }
        match tokio::time::timeout(Duration::from_millis(50), child.next()).await {
            Ok(Event::Line(_, l)) => on_line(l),
            Ok(Event::Exited(info)) => return Err(Some(info)),
            Err(_) => {}
        }
        if Instant::now() > until {
            return Err(None);
        }
    }
}

/// The RPC protocol a build speaks, read from its own worker: started on a free loopback port,
/// asked HELLO, stopped. About a tenth of a second.
pub async fn version_of(worker: &Path) -> Result<RpcVersion> {
    let port = crate::net::free_port()?;
    let argv = ["-H", "127.0.0.1", "-p", &port.to_string(), "-t", "1"].map(str::to_owned);
    let mut child = Supervised::spawn(worker, &argv)?;
    let found = answering(&mut child, &format!("127.0.0.1:{port}"), VERSION_WITHIN, drop).await;
    let _ = child.kill().await;
    found.map_err(|_| RuntimeError::BinaryRejected {
        path: worker.display().to_string(),
        detail: "it did not answer as an RPC worker on a loopback port".into(),
    })
}

/// The workers a start asks for, as llama.cpp reads them: trimmed, each once, each `host:port`
/// (else the error that says which is not).
pub fn addresses(asked: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for a in asked.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
        probe::check_address(a).map_err(RuntimeError::InvalidInput)?;
        if !out.iter().any(|b| b == a) {
            out.push(a.to_owned());
        }
    }
    Ok(out)
}

/// The free memory the ready workers lend, in all (each device's free bytes).
pub fn lent(probes: &[WorkerProbe]) -> u64 {
    probes
        .iter()
        .filter_map(|p| match &p.state {
            WorkerState::Ready { devices, .. } => {
                Some(devices.iter().map(|d| d.free_bytes).sum::<u64>())
            }
            _ => None,
        })
        .sum()
}

/// The device llama.cpp offloads layers to when workers lend memory: this machine's GPU (if
/// any) and every remote device, pooled. llama.cpp splits the offloaded layers across them in
/// proportion to their free memory, so the pool holds what its parts hold together. Pure.
pub fn pooled(gpu: Option<(String, u64)>, probes: &[WorkerProbe]) -> Option<(String, u64)> {
    let remote = lent(probes);
    let workers = probes.iter().filter(|p| p.is_ready()).count();
    if workers == 0 {
        return gpu;
    }
    let them =
        if workers == 1 { "1 RPC worker".to_owned() } else { format!("{workers} RPC workers") };
    Some(match gpu {
        Some((name, free)) => (format!("{name} + {them}"), free + remote),
        None => (them, remote),
    })
}

/// The devices llama.cpp offloads to when given `probes` (ready ones) and this machine's
/// `gpu`, in its order: every worker's devices first (named `RPC0`, `RPC1`, … across the workers
/// in `--rpc` order), then the local GPU. Each with its worker and free bytes.
pub fn devices(
    probes: &[WorkerProbe],
    gpu: Option<(String, u64)>,
) -> Vec<(String, Option<String>, u64)> {
    let mut out = Vec::new();
    for p in probes {
        if let WorkerState::Ready { devices, .. } = &p.state {
            for d in devices {
                out.push((format!("RPC{}", out.len()), Some(p.address.clone()), d.free_bytes));
            }
        }
    }
    out.extend(gpu.map(|(name, free)| (name, None, free)));
    out
}

/// How llama.cpp assigns a model's `blocks` and its output layer when the last `gpu_layers` of
/// them are offloaded and no split is given (`llama-model.cpp`, `load_tensors`): in proportion
/// to each device's free memory, by cumulative share, in single precision as it computes; the
/// rest stay on the `CPU`. Devices that take no layer are left out. Pure.
pub fn layer_split(
    blocks: u32,
    gpu_layers: u32,
    devices: &[(String, Option<String>, u64)],
) -> Vec<ipc::llm::LayerShare> {
    let all = blocks as i64 + 1;
    let start = (all - gpu_layers as i64).max(0);
    let act = if devices.is_empty() { 0 } else { (gpu_layers as i64).min(all) };
    let mut cumulative = Vec::with_capacity(devices.len());
    let mut sum = 0f32;
    for (_, _, free) in devices {
        sum += *free as f32;
        cumulative.push(sum);
    }
    for c in &mut cumulative {
        *c /= sum;
    }
    let mut shares: Vec<ipc::llm::LayerShare> = Vec::new();
    for il in 0..all {
        let (device, worker) = if il < start || il - start >= act {
            ("CPU".to_owned(), None)
        } else {
            let x = (il - start) as f32 / act as f32;
            // The first split point above x (C++'s upper_bound).
            let at = cumulative.partition_point(|&c| c <= x).min(devices.len() - 1);
            (devices[at].0.clone(), devices[at].1.clone())
        };
        match shares.iter_mut().find(|s| s.device == device) {
            Some(s) => s.layers += 1,
            None => shares.push(ipc::llm::LayerShare { device, worker, layers: 1 }),
        }
    }
    shares
}

/// What a start over workers holds where (pure but for `tail`). The fit weighed the offloaded
/// layers against one pooled device; here its part (`GPU` in `settings.estimate`) is shared out
/// over the planned `split`. llama.cpp hands the offloaded layers out in order, the output layer
/// last, so each device holds a run of them: its weights and KV cache are what `tail(n)` (the
/// weights and KV of the last `n` layers) gives for the runs up to and after it; each device
/// that runs blocks allocates a compute buffer of its own, of the pooled size. The workers'
/// parts are named `RPC0`, `RPC1`, … (another machine's memory); this machine's GPU keeps
/// `GPU`. The expected VRAM and the explanation then speak of this machine alone, with what
/// the workers hold said apart. A vision projector counted on the pool (named `pool` in the
/// explanation) stays in this machine's VRAM when it has a GPU (`local_gpu`, its name); else
/// llama.cpp loads it on the first GPU-like device, the first worker's (`RPC0`).
pub fn apportion(
    settings: &mut ipc::llm::LlmSettings,
    pool: &str,
    local_gpu: Option<&str>,
    tail: impl Fn(u32) -> (u64, u64),
) {
    use ipc::llm::{DeviceMemory, MemoryPlace};
    let Some(at) = settings.estimate.iter().position(|d| d.device == "GPU") else { return };
    let offloaded: Vec<_> = settings.split.iter().filter(|s| s.device != "CPU").cloned().collect();
    if offloaded.iter().all(|s| s.layers == 0) {
        return;
    }
    let before = crate::llama::autoconfig::expected_words(
        settings.expected_vram_bytes,
        settings.expected_ram_bytes,
    );
    let pooled = settings.estimate.remove(at);
    let projector = settings.expected_vram_bytes.saturating_sub(pooled.total());
    // The layers each device and those after it hold: its run is the difference.
    let mut after: u32 = offloaded.iter().map(|s| s.layers).sum();
    let parts: Vec<DeviceMemory> = offloaded
        .iter()
        .map(|s| {
            let (upto, from) = (tail(after), tail(after - s.layers));
            after -= s.layers;
            DeviceMemory {
                device: if s.worker.is_some() { s.device.clone() } else { "GPU".into() },
                model_bytes: upto.0.saturating_sub(from.0),
                kv_bytes: upto.1.saturating_sub(from.1),
                compute_bytes: pooled.compute_bytes,
            }
        })
        .collect();
    let here = DeviceMemory::sum_at(&parts, MemoryPlace::Vram);
    let mut remote = DeviceMemory::sum_at(&parts, MemoryPlace::Remote);
    settings.expected_vram_bytes = here + if local_gpu.is_some() { projector } else { 0 };
    if local_gpu.is_none() {
        remote += projector;
    }
    settings.estimate.splice(at..at, parts);
    let words = format!(
        "{} here, {} on the RPC workers",
        crate::llama::autoconfig::expected_words(
            settings.expected_vram_bytes,
            settings.expected_ram_bytes
        ),
        ipc::format::bytes(remote)
    );
    settings.explanation = settings
        .explanation
        .replacen(&before, &words, 1)
        .replacen(" on GPU (", " offloaded (", 1)
        .replacen(&format!(") on {pool}"), &format!(") on {}", local_gpu.unwrap_or("RPC0")), 1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::rpc::RpcDevice;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;
    const V7: RpcVersion = RpcVersion { major: 7, minor: 0, patch: 0 };

    fn probe(address: &str, state: WorkerState) -> WorkerProbe {
        WorkerProbe { address: address.into(), state, took_ms: 3 }
    }

    fn ready(address: &str, free: &[u64]) -> WorkerProbe {
        let devices = free
            .iter()
            .enumerate()
            .map(|(i, &f)| RpcDevice { index: i as u32, free_bytes: f, total_bytes: f + GIB })
            .collect();
        probe(address, WorkerState::Ready { version: V7, devices })
    }

    #[test]
    fn asked_workers_are_trimmed_checked_and_kept_once() {
        let asked = [" a:1".to_owned(), "".into(), "a:1".into(), "b:2 ".into()];
        assert_eq!(addresses(&asked).unwrap(), ["a:1", "b:2"]);
        assert!(addresses(&["a".into()]).is_err());
    }

    #[test]
    fn layers_are_split_by_free_memory_as_llama_cpp_does() {
        let share = |device: &str, layers| ipc::llm::LayerShare {
            device: device.into(),
            worker: device.starts_with("RPC").then(|| format!("w{}", &device[3..])),
            layers,
        };
        let two = [ready("w0", &[8 * GIB]), ready("w1", &[8 * GIB])];
        let devs = devices(&two, None);
        // 4 blocks and the output layer, all offloaded, equal memory: 0.0, 0.2, 0.4 on the
        // first; 0.6, 0.8 on the second.
        assert_eq!(layer_split(4, 5, &devs), [share("RPC0", 3), share("RPC1", 2)]);
        // Three layers offloaded: the first two stay on the CPU.
        assert_eq!(layer_split(4, 3, &devs), [share("CPU", 2), share("RPC0", 2), share("RPC1", 1)]);
        // 3:1 memory across 32 blocks + output: 25 and 8 of 33.
        let uneven = devices(&[ready("w0", &[12 * GIB]), ready("w1", &[4 * GIB])], None);
        assert_eq!(layer_split(32, 33, &uneven), [share("RPC0", 25), share("RPC1", 8)]);
        // A worker with two devices, then this machine's GPU: named in llama.cpp's order.
        let mixed = devices(&[ready("w0", &[GIB, GIB])], Some(("CUDA0".into(), 2 * GIB)));
        let names: Vec<&str> = mixed.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(names, ["RPC0", "RPC1", "CUDA0"]);
        let split = layer_split(7, 8, &mixed);
        assert_eq!(split.iter().map(|s| s.layers).collect::<Vec<_>>(), [2, 2, 4]);
        assert_eq!(split[1].worker.as_deref(), Some("w0"));
        // Nothing offloaded, or no device: all on the CPU.
        assert_eq!(layer_split(4, 0, &devs), [share("CPU", 5)]);
        assert_eq!(layer_split(4, 5, &[]), [share("CPU", 5)]);
    }

    /// The 8B test model resolved as a start over `workers` does, with this machine's GPU
    /// (`local`) and a projector of `projector` bytes.
    fn over(workers: &[WorkerProbe], local: Option<u64>, projector: u64) -> ipc::llm::LlmSettings {
        use crate::llama::autoconfig::{resolve_with_projector, tests::llama8b, MachineFacts};
        let gpu = local.map(|f| ("RTX".to_owned(), f));
        let machine = MachineFacts {
            physical_cores: 8,
            ram_available: 64 * GIB,
            gpu: pooled(gpu.clone(), workers),
        };
        let cfg = ipc::llm::LlmConfig { context_size: Some(8192), ..Default::default() };
        let with = (projector > 0).then_some(("/m/mmproj.gguf", projector));
        let mut s = resolve_with_projector(&cfg, &llama8b(), &machine, 8080, with).unwrap();
        s.split = layer_split(s.total_layers - 1, s.gpu_layers, &devices(workers, gpu));
        let pool = machine.gpu.as_ref().map_or("", |g| g.0.as_str()).to_owned();
        let facts = llama8b();
        let tail = crate::llama::autoconfig::offloaded(&facts, &s);
        apportion(&mut s, &pool, local.map(|_| "RTX"), tail);
        s
    }

    #[test]
    fn memory_lent_by_workers_is_theirs_not_this_machines_vram() {
        use ipc::llm::{DeviceMemory, MemoryPlace};
        let two = [ready("a:1", &[8 * GIB]), ready("b:1", &[8 * GIB])];
        let pooled_alone = {
            let machine = crate::llama::autoconfig::MachineFacts {
                physical_cores: 8,
                ram_available: 64 * GIB,
                gpu: pooled(None, &two),
            };
            let cfg = ipc::llm::LlmConfig { context_size: Some(8192), ..Default::default() };
            let m = crate::llama::autoconfig::tests::llama8b();
            crate::llama::autoconfig::resolve(&cfg, &m, &machine, 8080).unwrap()
        };
        let pool = pooled_alone.estimate.iter().find(|d| d.device == "GPU").unwrap().clone();

        // Two workers, no GPU here: 33 layers, 17 blocks on the first, 15 and the output layer
        // on the second (the 8B's blocks are 140 MiB each, 128 KiB of f16 KV per token);
        // a compute buffer on each; nothing in this machine's VRAM.
        let s = over(&two, None, 0);
        let names: Vec<&str> = s.estimate.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["RPC0", "RPC1", "CPU"]);
        let (a, b) = (&s.estimate[0], &s.estimate[1]);
        assert_eq!(a.model_bytes + b.model_bytes, pool.model_bytes);
        assert_eq!(a.kv_bytes + b.kv_bytes, pool.kv_bytes);
        assert_eq!(a.model_bytes, 17 * 140 * MIB);
        assert_eq!((a.kv_bytes, b.kv_bytes), (17 * 8192 * 4096, 15 * 8192 * 4096));
        assert!(b.model_bytes > 15 * 140 * MIB, "the output layer's weights are the last's");
        assert_eq!((a.compute_bytes, b.compute_bytes), (pool.compute_bytes, pool.compute_bytes));
        assert_eq!(s.expected_vram_bytes, 0);
        assert_eq!(s.expected_ram_bytes, pooled_alone.expected_ram_bytes);
        let remote = DeviceMemory::sum_at(&s.estimate, MemoryPlace::Remote);
        assert!(
            s.explanation.starts_with("33/33 layers offloaded (2 RPC workers), 8192 context"),
            "{}",
            s.explanation
        );
        let words = format!(
            "{} RAM expected here, {} on the RPC workers",
            ipc::format::bytes(s.expected_ram_bytes),
            ipc::format::bytes(remote)
        );
        assert!(s.explanation.contains(&words), "{}", s.explanation);
        assert!(!s.explanation.contains("VRAM"), "{}", s.explanation);

        // A GPU here beside one worker: its share is this machine's VRAM, the worker's is not;
        // a projector loads on this GPU.
        let one = [ready("a:1", &[8 * GIB])];
        let s = over(&one, Some(8 * GIB), GIB);
        let names: Vec<&str> = s.estimate.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["RPC0", "GPU", "CPU"]);
        let here = DeviceMemory::sum_at(&s.estimate, MemoryPlace::Vram);
        assert_eq!(s.expected_vram_bytes, here + GIB);
        assert!(
            s.explanation.contains("layers offloaded (RTX + 1 RPC worker)"),
            "{}",
            s.explanation
        );
        assert!(s.explanation.contains(" VRAM + "), "{}", s.explanation);
        assert!(s.explanation.contains("on the RPC workers"), "{}", s.explanation);
        assert!(s.explanation.ends_with("vision projector (1.0 GiB) on RTX"), "{}", s.explanation);

        // No GPU here: the projector goes to the first worker, not to this machine.
        let s = over(&two, None, GIB);
        assert_eq!(s.expected_vram_bytes, 0);
        let remote = DeviceMemory::sum_at(&s.estimate, MemoryPlace::Remote) + GIB;
        assert!(
            s.explanation.contains(&format!("{} on the RPC workers", ipc::format::bytes(remote))),
            "{}",
            s.explanation
        );
        assert!(s.explanation.ends_with("vision projector (1.0 GiB) on RPC0"), "{}", s.explanation);

        // Without workers (or with nothing offloaded) nothing changes.
        let mut plain = pooled_alone.clone();
        plain.split = layer_split(32, 0, &devices(&two, None));
        apportion(&mut plain, "2 RPC workers", None, |_| unreachable!("nothing offloaded"));
        assert_eq!(plain, {
            let mut p = pooled_alone.clone();
            p.split = plain.split.clone();
            p
        });
    }

    #[test]
    fn ready_workers_pool_their_memory_with_the_local_gpu() {
        let two = [ready("a:1", &[10 * GIB]), ready("b:1", &[4 * GIB, 2 * GIB])];
        assert_eq!(lent(&two), 16 * GIB);
        assert_eq!(pooled(None, &two), Some(("2 RPC workers".into(), 16 * GIB)));
        assert_eq!(
            pooled(Some(("RTX".into(), 8 * GIB)), &two[..1]),
            Some(("RTX + 1 RPC worker".into(), 18 * GIB))
        );
        // A worker that is not ready lends nothing.
        let down = [probe("a:1", WorkerState::Busy)];
        assert_eq!(pooled(Some(("RTX".into(), GIB)), &down), Some(("RTX".into(), GIB)));
        assert_eq!(pooled(None, &[]), None);
    }
}
