//! Will it fit? The badge a GGUF file gets for this machine at the context and KV cache type the
//! user is looking at, before a download (its header read remotely) or after: a pure function of
//! the model's header facts and the memory free now, on the same estimate ([`super::estimate`])
//! and layer placement ([`place_layers`]) as the LLM server's auto-configuration. The window's
//! context slider re-evaluates every badge with it, without a request.
//!
//! The badge is for the context asked: the most layers that fit the GPU with that context's KV
//! cache. (A start that only *prefers* a context may instead keep more layers and shorten the
//! context: [`super::autoconfig::resolve`].)

use super::autoconfig::{
    kv_type_size, largest_context, place_layers, vram_margin, ModelFacts, MIN_CONTEXT, RAM_RESERVE,
};
use super::estimate::{self, Parts, Start, DEFAULT_BATCH, DEFAULT_UBATCH};
use ipc::format::bytes;
use ipc::llm::DeviceMemory;
use ipc::models::{FitBadge, FitReport};

/// VRAM each GPU beyond the first keeps for itself (its own driver context and compute buffer):
/// llama.cpp splits the layers across GPUs by their free memory.
pub const EXTRA_GPU_RESERVE: u64 = 512 << 20;

/// The rule behind "Best fit", for its hover text.
pub const BEST_FIT_RULE: &str = "Best fit: the highest-quality quantisation (the largest file) \
    that keeps every layer on the GPU at the chosen context; without a GPU, the largest that \
    fits in RAM at it.";

/// What the machine has free now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitMachine {
    pub ram_available: u64,
    /// Free VRAM of each usable GPU.
    pub gpus_free: Vec<u64>,
    /// VRAM and RAM the running LLM server holds (its start estimate), given back were it stopped.
    pub llm_holds: Option<(u64, u64)>,
}

impl FitMachine {
    /// What is left once `bytes` are loaded beside the model (a vision projector): on the GPU
    /// with the most free VRAM when there is one, as llama-server places it, else in RAM.
    pub fn less(&self, bytes: u64) -> FitMachine {
        let mut left = self.clone();
        match left.gpus_free.iter_mut().max() {
            Some(free) => *free = free.saturating_sub(bytes),
            None => left.ram_available = left.ram_available.saturating_sub(bytes),
        }
        left
    }
}

/// The context and KV cache type a badge is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitAsk {
    pub context: u32,
    /// `f16`, `q8_0`, `q4_0`, …: a quantized type the model's heads cannot take (or a name that
    /// is not a type) is judged as f16, and the badge says so.
    pub kv_type: String,
}

/// Bytes the model may use: RAM and, with a GPU, VRAM.
struct Budgets {
    ram: u64,
    vram: Option<u64>,
}

impl FitMachine {
    fn budgets(&self, llm_stopped: bool) -> Budgets {
        let (vram_back, ram_back) = self.llm_holds.filter(|_| llm_stopped).unwrap_or((0, 0));
        let vram = (!self.gpus_free.is_empty()).then(|| {
            let free = self.gpus_free.iter().sum::<u64>() + vram_back;
            let extra = EXTRA_GPU_RESERVE * (self.gpus_free.len() as u64 - 1);
            free.saturating_sub(vram_margin(free)).saturating_sub(extra)
        });
        Budgets { ram: (self.ram_available + ram_back).saturating_sub(RAM_RESERVE), vram }
    }
}

/// Where the layers go at one context, and what each device holds.
struct Placed {
    gpu_layers: usize,
    cpu_moe: usize,
    gpu: Parts,
    cpu: Parts,
}

/// A badge before its report: at what context, placed how.
struct Judged {
    badge: FitBadge,
    context: u32,
    gpu_context: u32,
    placed: Option<Placed>,
}

impl Judged {
    /// Better is: the whole asked context, then a better badge, then more context.
    fn rank(&self, asked: u32) -> (bool, u32, u32) {
        let badge = match self.badge {
            FitBadge::Gpu => u32::MAX,
            FitBadge::Partial { layers, cpu_moe, .. } => 2 + layers * 1000 - cpu_moe,
            FitBadge::Cpu => 1,
            FitBadge::TooBig | FitBadge::Unreadable => 0,
        };
        (self.context >= asked, badge, self.context)
    }
}

fn start(context: u64, kv: (u64, u64)) -> Start {
    Start {
        context,
        batch: DEFAULT_BATCH,
        ubatch: DEFAULT_UBATCH,
        slots: 1,
        // llama-server's `auto`: on wherever the backend has it (always on the CPU).
        flash: true,
        swa_full: false,
        k_type: kv,
        v_type: kv,
    }
}

/// The largest context up to `max` (itself, else a multiple of 256) for which `fits` holds.
fn most(max: u32, fits: impl Fn(u64) -> bool) -> u32 {
    if fits(u64::from(max)) {
        max
    } else {
        largest_context(u64::from(max), fits) as u32
    }
}

/// The most layers on the GPU at `start`, or `None` when the rest does not fit in RAM.
fn place(m: &ModelFacts, b: &Budgets, start: &Start) -> Option<Placed> {
    let parts = |n, moe| estimate::estimate(&m.shape, m.weights(), n, moe, start);
    let (gpu_layers, cpu_moe) = match b.vram {
        None => (0, 0),
        Some(budget) => {
            place_layers(m.layers(), m.is_moe(), None, budget, |n, moe| parts(n, moe).0.total())
        }
    };
    let (gpu, cpu) = parts(gpu_layers, cpu_moe);
    (cpu.total() <= b.ram).then_some(Placed { gpu_layers, cpu_moe, gpu, cpu })
}

fn judge(m: &ModelFacts, b: &Budgets, asked: u32, kv: (u64, u64)) -> Judged {
    let native = m.native_context.max(MIN_CONTEXT);
    let all = m.layers() + 1;
    let gpu_context = b.vram.map_or(0, |budget| {
        most(native, |c| {
            let (gpu, cpu) = estimate::estimate(&m.shape, m.weights(), all, 0, &start(c, kv));
            gpu.total() <= budget && cpu.total() <= b.ram
        })
    });
    let context = most(asked, |c| place(m, b, &start(c, kv)).is_some());
    if context < MIN_CONTEXT.min(native) {
        return Judged { badge: FitBadge::TooBig, context: 0, gpu_context, placed: None };
    }
    let placed = place(m, b, &start(u64::from(context), kv));
    let badge = match &placed {
        None => FitBadge::TooBig,
        Some(p) if p.gpu_layers == 0 => FitBadge::Cpu,
        Some(p) if p.gpu_layers == all && p.cpu_moe == 0 => FitBadge::Gpu,
        Some(p) => FitBadge::Partial {
            layers: p.gpu_layers as u32,
            of: all as u32,
            cpu_moe: p.cpu_moe as u32,
        },
    };
    Judged { badge, context, gpu_context, placed }
}

/// The badge of the model `m` on `mach` at `ask`, with what it rests on.
pub fn fit(m: &ModelFacts, mach: &FitMachine, ask: &FitAsk) -> FitReport {
    let native = m.native_context.max(MIN_CONTEXT);
    let asked = ask.context.clamp(MIN_CONTEXT.min(native), native);
    // A quantized cache stores each head's row in blocks: heads of a part block cannot take it.
    let takes =
        |(_, d): (u64, u64)| m.shape.head_k.is_multiple_of(d) && m.shape.head_v.is_multiple_of(d);
    let (kv_name, kv) = match kv_type_size(&ask.kv_type).filter(|t| takes(*t)) {
        Some(t) => (ask.kv_type.as_str(), t),
        None => ("f16", (2, 1)),
    };
    let now = judge(m, &mach.budgets(false), asked, kv);
    let if_llm_stopped = mach.llm_holds.and_then(|_| {
        let then = judge(m, &mach.budgets(true), asked, kv);
        (then.rank(asked) > now.rank(asked)).then_some(then.badge)
    });

    let mut why = match (&now.badge, &now.placed) {
        (FitBadge::Gpu, Some(p)) => format!(
            "every layer on the GPU at {} tokens: {} VRAM + {} RAM",
            now.context,
            bytes(p.gpu.total()),
            bytes(p.cpu.total())
        ),
        (FitBadge::Partial { layers, of, cpu_moe: 0 }, Some(p)) => format!(
            "{layers} of {of} layers on the GPU at {} tokens: {} VRAM + {} RAM",
            now.context,
            bytes(p.gpu.total()),
            bytes(p.cpu.total())
        ),
        (FitBadge::Partial { cpu_moe, .. }, Some(p)) => format!(
            "every layer on the GPU with the experts of the first {cpu_moe} blocks in RAM at {} \
             tokens: {} VRAM + {} RAM",
            now.context,
            bytes(p.gpu.total()),
            bytes(p.cpu.total())
        ),
        (FitBadge::Cpu, Some(p)) => format!(
            "{}in RAM at {} tokens: {}",
            if mach.gpus_free.is_empty() {
                ""
            } else {
                "not one layer fits the GPU's free memory; "
            },
            now.context,
            bytes(p.cpu.total())
        ),
        _ => {
            let least = estimate::estimate(
                &m.shape,
                m.weights(),
                0,
                0,
                &start(u64::from(MIN_CONTEXT.min(native)), kv),
            )
            .1
            .total();
            let vram: u64 = mach.gpus_free.iter().sum();
            format!(
                "needs about {} at {} tokens; {} RAM available{}",
                bytes(least),
                MIN_CONTEXT.min(native),
                bytes(mach.ram_available),
                if vram > 0 { format!(", {} VRAM free", bytes(vram)) } else { String::new() }
            )
        }
    };
    if now.context > 0 && now.context < asked {
        why.push_str(&format!(" (only {} of the {asked} tokens asked for fit)", now.context));
    }
    if kv_name != ask.kv_type {
        why.push_str(&format!(
            "; an f16 KV cache: this model's attention heads cannot take {:?}",
            ask.kv_type
        ));
    }
    if let Some(b) = if_llm_stopped {
        why.push_str(&format!("; {} if the running LLM server were stopped", describe(b)));
    }
    let memory = now.placed.as_ref().map_or_else(Vec::new, |p| {
        let device = |device: &str, d: &Parts| DeviceMemory {
            device: device.into(),
            model_bytes: d.weights,
            kv_bytes: d.kv,
            compute_bytes: d.compute,
        };
        let cpu = device("CPU", &p.cpu);
        if p.gpu_layers > 0 {
            vec![device("GPU", &p.gpu), cpu]
        } else {
            vec![cpu]
        }
    });
    FitReport {
        badge: now.badge,
        asked_context: asked,
        context: now.context,
        gpu_context: now.gpu_context,
        memory,
        if_llm_stopped,
        why,
    }
}

/// A badge in a few words, as the window labels it.
pub fn describe(b: FitBadge) -> String {
    match b {
        FitBadge::Gpu => "GPU".into(),
        FitBadge::Partial { layers, of, cpu_moe: 0 } => format!("Partial: {layers} of {of} layers"),
        FitBadge::Partial { cpu_moe, .. } => format!("Partial: experts of {cpu_moe} blocks in RAM"),
        FitBadge::Cpu => "CPU".into(),
        FitBadge::TooBig => "Too big".into(),
        FitBadge::Unreadable => "Cannot read".into(),
    }
}

/// Which of one model's quantisations is the best fit ([`BEST_FIT_RULE`]): `entries` are each
/// file's bytes (all its shards) with its report; `None` when none qualifies.
pub fn best_fit(entries: &[(u64, &FitReport)], has_gpu: bool) -> Option<usize> {
    let wanted = if has_gpu { FitBadge::Gpu } else { FitBadge::Cpu };
    entries
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| r.badge == wanted && r.context >= r.asked_context)
        .max_by_key(|(i, (size, _))| (*size, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    // The auto-configuration's own test models: an 8B-like model at about Q4_K_M (32 blocks of
    // 140 MiB, 500 MiB outside them, 8 KV heads × 128: f16 KV is 128 KiB a token, trained for
    // 32k) and a 30B-A3B-like mixture of experts (48 blocks of 360 MiB, 340 of them experts).
    use crate::llama::autoconfig::tests::{llama8b as dense, moe30b as moe};
    use crate::llama::estimate::Swa;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// The dense model with every other layer attending a window of 1024 tokens (Gemma 2).
    fn sliding() -> ModelFacts {
        let mut m = dense();
        m.shape.swa = Some(Swa { window: 1024, layers: (0..32).map(|i| i % 2 == 0).collect() });
        m
    }

    /// The same model at another quantisation: its weights times `factor`.
    fn quant(m: &ModelFacts, factor: f64) -> ModelFacts {
        let scale = |b: u64| (b as f64 * factor) as u64;
        ModelFacts {
            per_layer: m.per_layer.iter().map(|&b| scale(b)).collect(),
            experts: m.experts.iter().map(|&b| scale(b)).collect(),
            other: scale(m.other),
            embd: scale(m.embd),
            ..m.clone()
        }
    }

    fn machine(gpus: &[u64], ram: u64) -> FitMachine {
        FitMachine { ram_available: ram, gpus_free: gpus.to_vec(), llm_holds: None }
    }

    /// Whether a badge is the one a row wants.
    type Want = fn(FitBadge) -> bool;

    fn ask(context: u32, kv: &str) -> FitAsk {
        FitAsk { context, kv_type: kv.into() }
    }

    /// A projector loaded beside the model takes from the GPU with the most free VRAM, else
    /// from RAM; a model that just fitted no longer does.
    #[test]
    fn what_a_projector_leaves() {
        let m = machine(&[4 * GIB, 6 * GIB], 32 * GIB);
        assert_eq!(m.less(GIB), machine(&[4 * GIB, 5 * GIB], 32 * GIB));
        assert_eq!(machine(&[], 8 * GIB).less(GIB), machine(&[], 7 * GIB));
        assert_eq!(machine(&[], GIB).less(2 * GIB), machine(&[], 0));
        let at8k = ask(8192, "f16");
        let need = fit(&dense(), &machine(&[24 * GIB], 32 * GIB), &at8k).memory[0].total();
        let just = machine(&[need + vram_margin(need) + 64 * MIB], 32 * GIB);
        assert_eq!(fit(&dense(), &just, &at8k).badge, FitBadge::Gpu);
        assert_ne!(fit(&dense(), &just.less(GIB), &at8k).badge, FitBadge::Gpu);
    }

    #[test]
    fn badge_table_over_machines() {
        let at8k = ask(8192, "f16");
        #[rustfmt::skip]
        let table: [(&str, FitMachine, Want); 7] = [
            ("no GPU, 32 GiB", machine(&[], 32 * GIB), |b| b == FitBadge::Cpu),
            ("a 24 GiB GPU", machine(&[24 * GIB], 32 * GIB), |b| b == FitBadge::Gpu),
            ("a 4 GiB GPU", machine(&[4 * GIB], 32 * GIB),
                |b| matches!(b, FitBadge::Partial { layers: 1..=32, of: 33, cpu_moe: 0 })),
            // Two small GPUs hold what one of them cannot.
            ("a 5 GiB GPU", machine(&[5 * GIB], 32 * GIB),
                |b| matches!(b, FitBadge::Partial { layers: 1..=32, of: 33, cpu_moe: 0 })),
            ("two 5 GiB GPUs", machine(&[5 * GIB, 5 * GIB], 32 * GIB), |b| b == FitBadge::Gpu),
            ("3 GiB of RAM, no GPU", machine(&[], 3 * GIB), |b| b == FitBadge::TooBig),
            // On the GPU the weights need no RAM.
            ("3 GiB of RAM, a 24 GiB GPU", machine(&[24 * GIB], 3 * GIB), |b| b == FitBadge::Gpu),
        ];
        for (name, mach, want) in table {
            let r = fit(&dense(), &mach, &at8k);
            assert!(want(r.badge), "{name}: {r:?}");
            assert_eq!(r.asked_context, 8192, "{name}");
            if r.badge == FitBadge::TooBig {
                assert_eq!((r.context, r.memory.len()), (0, 0), "{name}: {r:?}");
                assert!(r.why.contains("needs about"), "{name}: {}", r.why);
                continue;
            }
            assert_eq!(r.context, 8192, "{name}: {r:?}");
            // The memory shown is the placement's: a GPU row exactly when layers are there.
            let on_gpu = r.badge != FitBadge::Cpu;
            assert_eq!(r.memory.len(), 1 + usize::from(on_gpu), "{name}: {r:?}");
            assert_eq!(r.memory[0].device, if on_gpu { "GPU" } else { "CPU" });
            // KV at 8k in f16: 1 GiB, wherever the layers are.
            assert_eq!(r.memory.iter().map(|d| d.kv_bytes).sum::<u64>(), GIB, "{name}");
            if on_gpu {
                let gpus: u64 = mach.gpus_free.iter().sum();
                assert!(r.memory[0].total() < gpus - vram_margin(gpus), "{name}: {r:?}");
            }
        }
        // The largest context fully on the GPU: the trained one on the big GPU, none on the
        // small one (not even the minimum), 0 without a GPU.
        let gpu_ctx = |gpus: &[u64]| fit(&dense(), &machine(gpus, 32 * GIB), &at8k).gpu_context;
        assert_eq!(gpu_ctx(&[24 * GIB]), 32768);
        assert_eq!(gpu_ctx(&[4 * GIB]), 0);
        assert_eq!(gpu_ctx(&[]), 0);
        let two = gpu_ctx(&[5 * GIB, 5 * GIB]);
        assert!((8192..32768).contains(&two) && two.is_multiple_of(256), "{two}");
    }

    #[test]
    fn the_context_and_kv_type_move_the_badge() {
        let gpu8 = machine(&[8 * GIB], 32 * GIB);
        let m = dense();
        let r = |context, kv| fit(&m, &gpu8, &ask(context, kv));
        assert_eq!(r(8192, "f16").badge, FitBadge::Gpu);
        let long = r(32768, "f16");
        assert!(matches!(long.badge, FitBadge::Partial { layers: 1..=32, .. }), "{long:?}");
        // The largest context fully on the GPU is the same whatever the slider says, and it
        // lies between the two.
        let top = long.gpu_context;
        assert_eq!(top, r(8192, "f16").gpu_context);
        assert!(top > 8192 && top < 32768, "{top}");
        assert_eq!(r(top, "f16").badge, FitBadge::Gpu);
        assert!(matches!(r(top + 256, "f16").badge, FitBadge::Partial { .. }));
        // A smaller cache brings the long context back onto the GPU.
        assert_eq!(r(32768, "q4_0").badge, FitBadge::Gpu, "{:?}", r(32768, "q4_0"));
        // More context never gets a better badge.
        let mut last = u32::MAX;
        for c in (1..=32).map(|k| k * 1024) {
            let layers = match r(c, "f16").badge {
                FitBadge::Gpu => 33,
                FitBadge::Partial { layers, .. } => layers,
                b => panic!("{c}: {b:?}"),
            };
            assert!(layers <= last, "{c}: {layers} > {last}");
            last = layers;
        }
        // Asked beyond what the model was trained for: judged at the trained context.
        assert_eq!(r(65536, "f16").asked_context, 32768);
    }

    #[test]
    fn a_context_that_does_not_fit_gets_the_most_that_does() {
        // 6.5 GiB available, 1 GiB kept: the weights (4.9 GiB) and 8k of context (1 GiB) do not
        // fit, less does.
        let mach = machine(&[], 13 * GIB / 2);
        let r = fit(&dense(), &mach, &ask(8192, "f16"));
        assert_eq!(r.badge, FitBadge::Cpu);
        assert!(r.context < 8192 && r.context >= 256 && r.context.is_multiple_of(256), "{r:?}");
        assert!(r.why.contains(&format!("only {} of the 8192 tokens", r.context)), "{}", r.why);
        // The next step up would not fit.
        let more = fit(&dense(), &mach, &ask(r.context + 256, "f16"));
        assert_eq!(more.context, r.context);
    }

    #[test]
    fn moe_and_sliding_window_shapes() {
        // A mixture of experts whose dense part fits: every layer on the GPU, the experts of
        // the first blocks in RAM.
        let r = fit(&moe(), &machine(&[8 * GIB], 64 * GIB), &ask(8192, "f16"));
        let FitBadge::Partial { layers: 49, of: 49, cpu_moe } = r.badge else { panic!("{r:?}") };
        assert!(cpu_moe > 0 && cpu_moe < 48, "{r:?}");
        assert!(r.why.contains(&format!("experts of the first {cpu_moe} blocks")), "{}", r.why);
        assert!(r.memory[1].model_bytes >= u64::from(cpu_moe) * 340 * MIB, "{r:?}");
        // A sliding window keeps half the layers' cache small: more context fits on the GPU.
        let gpu8 = machine(&[8 * GIB], 32 * GIB);
        let (d, s) =
            (fit(&dense(), &gpu8, &ask(32768, "f16")), fit(&sliding(), &gpu8, &ask(32768, "f16")));
        assert!(s.gpu_context > d.gpu_context, "{} vs {}", s.gpu_context, d.gpu_context);
        assert!(s.memory.iter().map(|d| d.kv_bytes).sum::<u64>() < 3 * GIB, "{s:?}");
    }

    #[test]
    fn a_kv_type_the_heads_cannot_take_is_judged_as_f16_and_said() {
        let mut m = dense();
        (m.shape.head_k, m.shape.head_v) = (80, 80);
        let gpu = machine(&[24 * GIB], 32 * GIB);
        let q8 = fit(&m, &gpu, &ask(8192, "q8_0"));
        assert_eq!(q8.memory, fit(&m, &gpu, &ask(8192, "f16")).memory);
        assert!(q8.why.contains("cannot take \"q8_0\""), "{}", q8.why);
        let plain = fit(&dense(), &gpu, &ask(8192, "q8_0"));
        assert!(!plain.why.contains("cannot take"), "{}", plain.why);
        // q8_0: 34 bytes a block of 32 values, against f16's 64.
        assert_eq!(plain.memory[0].kv_bytes, GIB * 34 / 64, "{plain:?}");
    }

    #[test]
    fn what_stopping_the_running_llm_would_give_back() {
        // A 12 GiB GPU with 9 GiB held by the running server.
        let mach = FitMachine { llm_holds: Some((9 * GIB, GIB)), ..machine(&[3 * GIB], 32 * GIB) };
        let r = fit(&dense(), &mach, &ask(8192, "f16"));
        assert!(matches!(r.badge, FitBadge::Partial { .. }), "{r:?}");
        assert_eq!(r.if_llm_stopped, Some(FitBadge::Gpu));
        assert!(r.why.contains("GPU if the running LLM server were stopped"), "{}", r.why);
        // Nothing to gain: not said.
        let roomy = FitMachine { llm_holds: Some((GIB, GIB)), ..machine(&[20 * GIB], 32 * GIB) };
        let r = fit(&dense(), &roomy, &ask(8192, "f16"));
        assert_eq!((r.badge, r.if_llm_stopped), (FitBadge::Gpu, None));
    }

    #[test]
    fn best_fit_is_the_largest_file_fully_on_the_gpu_at_the_context() {
        let names = ["Q2_K", "Q4_K_M", "Q6_K", "Q8_0", "F16"];
        let files: Vec<ModelFacts> =
            [0.55, 1.0, 1.45, 1.9, 3.5].iter().map(|&f| quant(&dense(), f)).collect();
        let size = |m: &ModelFacts| m.per_layer.iter().sum::<u64>() + m.other;
        let best = |mach: &FitMachine, a: &FitAsk| -> Option<&str> {
            let reports: Vec<FitReport> = files.iter().map(|m| fit(m, mach, a)).collect();
            let entries: Vec<(u64, &FitReport)> =
                files.iter().map(size).zip(reports.iter()).collect();
            best_fit(&entries, !mach.gpus_free.is_empty()).map(|i| names[i])
        };
        let gpu8 = machine(&[8 * GIB], 32 * GIB);
        #[rustfmt::skip]
        let table = [
            (&gpu8, ask(8192, "f16"), Some("Q4_K_M")),
            // The slider: a long context leaves room for a smaller file only.
            (&gpu8, ask(32768, "q8_0"), Some("Q2_K")),
            (&machine(&[14 * GIB], 32 * GIB), ask(8192, "f16"), Some("Q8_0")),
            (&machine(&[40 * GIB], 64 * GIB), ask(8192, "f16"), Some("F16")),
            // No GPU: the largest that fits in RAM.
            (&machine(&[], 16 * GIB), ask(8192, "f16"), Some("Q8_0")),
            // Nothing fully on the GPU: no best fit, though some would run partly there.
            (&machine(&[2 * GIB], 32 * GIB), ask(8192, "f16"), None),
            (&machine(&[], 2 * GIB), ask(8192, "f16"), None),
        ];
        for (mach, a, want) in table {
            assert_eq!(best(mach, &a), want, "{mach:?} {a:?}");
        }
        assert!(BEST_FIT_RULE.contains("every layer on the GPU at the chosen context"));
    }
}
