//! Settings fitted to the model and the machine (a pure function, table-tested).
//!
//! GPU layers come from the real per-layer tensor sizes (not file size ÷ layers) against the
//! GPU's *free* memory with a margin; the context is the largest (a multiple of 256, as llama.cpp
//! pads it) whose whole footprint fits what is left: weights, KV cache (GQA-, cache-type- and
//! sliding-window-aware) and the compute and output buffers ([`super::estimate`]), bounded by the
//! model's trained context; q8_0 KV with flash attention is chosen when f16 would not leave a
//! useful context. A mixture of experts whose dense part fits the GPU keeps every layer there and
//! the experts of its first blocks in RAM (`--n-cpu-moe`, [`place_layers`]). The context contract:
//! the preferred context when it fits, else the most that does, never above the maximum or the
//! trained context; a minimum that cannot fit fails before launch (`CONTEXT_TOO_LARGE`, naming
//! the largest that fits now). Every field the user set wins.

use super::estimate::{self, Shape, Start, Weights, CTX_PAD, DEFAULT_BATCH, DEFAULT_UBATCH};
use crate::{Result, RuntimeError};
use ipc::format::bytes;
use ipc::llm::{DeviceMemory, LlmConfig, LlmSettings, Toggle};

/// Below this the server is not worth starting.
pub const MIN_CONTEXT: u32 = 256;
/// The context auto-configuration aims for at least, before choosing a smaller KV type.
pub const GOOD_CONTEXT: u32 = 8192;
/// RAM kept for the system and the app.
pub const RAM_RESERVE: u64 = 1 << 30;
/// VRAM kept free: compute buffers, the driver, other programs.
pub fn vram_margin(free: u64) -> u64 {
    (512 << 20) + free / 20
}

/// What the GGUF header says that sizing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    pub path: String,
    /// Weight bytes of each block, in block order.
    pub per_layer: Vec<u64>,
    /// Of those, the expert tensors' bytes of each block (zeros for a dense model).
    pub experts: Vec<u64>,
    /// Weights outside the blocks (embeddings, output head).
    pub other: u64,
    /// Of those, the token embedding's, and whether the output layer is the embedding
    /// ([`gguf::Header::embedding_bytes`]).
    pub embd: u64,
    pub tied: bool,
    pub native_context: u32,
    /// What the KV cache and the compute buffers depend on.
    pub shape: Shape,
    /// `{arch}.pooling_type` (0 none, 1 mean, 2 cls, 3 last, 4 rank): set by embedding models.
    pub pooling: Option<u64>,
}

impl ModelFacts {
    pub fn from_header(path: &str, h: &gguf::Header) -> Result<Self> {
        let invalid = |detail: &str| RuntimeError::GgufInvalid {
            path: path.to_owned(),
            detail: detail.to_owned(),
        };
        let (per_layer, other) = h
            .bytes_per_block()
            .ok_or_else(|| invalid("no block count or an unknown tensor type"))?;
        let experts = h.expert_bytes_per_block().unwrap_or_else(|| vec![0; per_layer.len()]);
        let (embd, tied) = h.embedding_bytes();
        let shape = Shape::from_header(h)
            .ok_or_else(|| invalid("no embedding length or attention heads"))?;
        if shape.layers() != per_layer.len() {
            return Err(invalid("the block count does not match the tensors"));
        }
        Ok(Self {
            path: path.to_owned(),
            shape,
            per_layer,
            experts,
            other,
            embd,
            tied,
            native_context: h.context_length().unwrap_or(4096).min(u32::MAX as u64) as u32,
            pooling: h.architecture().and_then(|a| h.get_u64(&format!("{a}.pooling_type"))),
        })
    }

    pub(crate) fn layers(&self) -> usize {
        self.per_layer.len()
    }

    pub(crate) fn weights(&self) -> Weights<'_> {
        Weights {
            per_layer: &self.per_layer,
            experts: &self.experts,
            other: self.other,
            embd: self.embd,
            tied: self.tied,
        }
    }

    pub(crate) fn is_moe(&self) -> bool {
        self.experts.iter().any(|&e| e > 0)
    }
}

/// What the machine has free right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    pub physical_cores: u32,
    pub ram_available: u64,
    /// The GPU llama-server would use, with its free VRAM; `None` without a usable GPU.
    pub gpu: Option<(String, u64)>,
}

/// Bytes per element of a KV cache type, as (numerator, denominator).
pub fn kv_type_size(t: &str) -> Option<(u64, u64)> {
    Some(match t {
        "f32" => (4, 1),
        "f16" | "bf16" => (2, 1),
        "q8_0" => (34, 32),
        "q5_1" => (24, 32),
        "q5_0" => (22, 32),
        "q4_1" => (20, 32),
        "q4_0" | "iq4_nl" => (18, 32),
        _ => return None,
    })
}

struct Plan {
    gpu_layers: u32,
    cpu_moe: u32,
    context: u32,
    /// The largest context that fits with this plan's KV type and layers.
    largest: u32,
    k: String,
    v: String,
    flash: Toggle,
    vram: u64,
    ram: u64,
    estimate: Vec<DeviceMemory>,
}

/// The weights and KV cache of `m`'s last `n` layers at `s`'s settings (its context, slots, KV
/// types, flash attention and expert blocks kept in RAM), in llama.cpp's count (the output
/// layer last of all): what the devices that take those layers hold together, for any `n`.
/// [`crate::rpc::apportion`] shares a start's pooled part out with it.
pub fn offloaded<'m>(m: &'m ModelFacts, s: &LlmSettings) -> impl Fn(u32) -> (u64, u64) + 'm {
    let start = Start {
        context: u64::from(s.context_size),
        batch: s.batch.map(u64::from).unwrap_or(DEFAULT_BATCH),
        ubatch: s.ubatch.map(u64::from).unwrap_or(DEFAULT_UBATCH),
        slots: u64::from(s.parallel),
        flash: s.flash_attention != Toggle::Off,
        swa_full: s.swa_full,
        k_type: kv_type_size(&s.cache_type_k).unwrap_or((2, 1)),
        v_type: kv_type_size(&s.cache_type_v).unwrap_or((2, 1)),
    };
    let moe = s.n_cpu_moe as usize;
    move |n| {
        let (gpu, _) = estimate::estimate(&m.shape, m.weights(), n as usize, moe, &start);
        (gpu.weights, gpu.kv)
    }
}

/// The explanation's words on memory: "1.0 GiB VRAM + 2.0 GiB RAM expected", or "… RAM
/// expected" with nothing on a GPU.
pub(crate) fn expected_words(vram: u64, ram: u64) -> String {
    if vram > 0 {
        format!("{} VRAM + {} RAM expected", bytes(vram), bytes(ram))
    } else {
        format!("{} RAM expected", bytes(ram))
    }
}

/// The largest multiple of 256 in `1..=max` for which `fits` holds (it is monotone), or 0.
pub(crate) fn largest_context(max: u64, fits: impl Fn(u64) -> bool) -> u64 {
    let (mut lo, mut hi) = (0u64, max / CTX_PAD);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid * CTX_PAD) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo * CTX_PAD
}

/// GPU layers and `--n-cpu-moe` blocks for a GPU with `budget` bytes: every layer when the whole
/// model fits; for a mixture of experts whose dense part fits, every layer with the experts of
/// the fewest first blocks kept in RAM (faster than leaving whole layers on the CPU, as
/// llama.cpp's own advice goes); else the most layers that fit. `gpu_bytes(n, m)` is the GPU
/// part with `n` layers and `m` expert blocks in RAM.
pub fn place_layers(
    layers: usize,
    moe: bool,
    pinned_moe: Option<usize>,
    budget: u64,
    gpu_bytes: impl Fn(usize, usize) -> u64,
) -> (usize, usize) {
    let all = layers + 1;
    let fits = |n: usize, m: usize| gpu_bytes(n, m) <= budget;
    if let Some(m) = pinned_moe {
        return ((0..=all).rev().find(|&n| n == 0 || fits(n, m)).unwrap_or(0), m);
    }
    if fits(all, 0) {
        return (all, 0);
    }
    if moe {
        if let Some(m) = (1..=layers).find(|&m| fits(all, m)) {
            return (all, m);
        }
    }
    ((0..=all).rev().find(|&n| n == 0 || fits(n, 0)).unwrap_or(0), 0)
}

/// [`resolve`] for a model with a vision projector (`path`, its bytes): llama-server loads the
/// projector on the GPU when there is one, else in RAM, beside the model, which is fitted to
/// what the projector leaves ([`MachineFacts::less`]); the expected memory counts it.
pub fn resolve_with_projector(
    cfg: &LlmConfig,
    m: &ModelFacts,
    mach: &MachineFacts,
    port: u16,
    projector: Option<(&str, u64)>,
) -> Result<LlmSettings> {
    let Some((path, size)) = projector else { return resolve(cfg, m, mach, port) };
    let mut s = resolve(cfg, m, &mach.less(size), port)?;
    s.mmproj = Some(path.to_owned());
    let before = expected_words(s.expected_vram_bytes, s.expected_ram_bytes);
    let on = match &mach.gpu {
        Some((name, _)) => {
            s.expected_vram_bytes += size;
            name.as_str()
        }
        None => {
            s.expected_ram_bytes += size;
            "RAM"
        }
    };
    let after = expected_words(s.expected_vram_bytes, s.expected_ram_bytes);
    s.explanation = s.explanation.replacen(&before, &after, 1);
    s.explanation.push_str(&format!(", vision projector ({}) on {on}", bytes(size)));
    Ok(s)
}

impl MachineFacts {
    /// What is left once `bytes` are loaded beside the model (a vision projector): on the GPU
    /// when there is one, as llama-server places it, else in RAM. (The fit badges' twin:
    /// [`super::fit::FitMachine::less`].)
    pub fn less(&self, bytes: u64) -> MachineFacts {
        let mut left = self.clone();
        match &mut left.gpu {
            Some((_, free)) => *free = free.saturating_sub(bytes),
            None => left.ram_available = left.ram_available.saturating_sub(bytes),
        }
        left
    }
}

/// Decides every setting. `port` is already resolved (fixed or free).
pub fn resolve(
    cfg: &LlmConfig,
    m: &ModelFacts,
    mach: &MachineFacts,
    port: u16,
) -> Result<LlmSettings> {
    let layers = m.layers();
    let total_layers = layers as u32 + 1; // the blocks and the output layer, as llama.cpp counts
    let native = m.native_context.max(MIN_CONTEXT);
    let parse_type = |t: &Option<String>| -> Result<Option<String>> {
        match t {
            None => Ok(None),
            Some(t) if kv_type_size(t).is_some() => Ok(Some(t.clone())),
            Some(t) => Err(RuntimeError::InvalidInput(format!(
                "{t:?} is not a KV cache type (f16, q8_0, q4_0, …)"
            ))),
        }
    };
    let (pin_k, pin_v) = (parse_type(&cfg.cache_type_k)?, parse_type(&cfg.cache_type_v)?);
    // A quantized cache stores each head's row in blocks of 32: llama.cpp refuses the context
    // when a head is not a whole number of blocks.
    let blocks_fit =
        |t: &str, head: u64| kv_type_size(t).is_some_and(|(_, d)| head.is_multiple_of(d));
    for (t, head, which) in [(&pin_k, m.shape.head_k, "K"), (&pin_v, m.shape.head_v, "V")] {
        if let Some(t) = t.as_deref().filter(|t| !blocks_fit(t, head)) {
            return Err(RuntimeError::InvalidInput(format!(
                "a {t} {which} cache needs attention heads of a multiple of 32 values; this \
                 model's are {head}: use f16"
            )));
        }
    }
    let quant_v = pin_v.as_deref().is_some_and(|v| v != "f16" && v != "bf16");
    if quant_v && cfg.flash_attention == Some(Toggle::Off) {
        return Err(RuntimeError::InvalidInput(
            "a quantized V cache needs flash attention; turn it on or use f16".into(),
        ));
    }
    let user_flash = cfg.flash_attention.unwrap_or(if quant_v { Toggle::On } else { Toggle::Auto });

    // KV type options, preferred first.
    let mut options = vec![(
        pin_k.clone().unwrap_or_else(|| "f16".into()),
        pin_v.clone().unwrap_or_else(|| "f16".into()),
        user_flash,
    )];
    if pin_k.is_none()
        && pin_v.is_none()
        && cfg.flash_attention != Some(Toggle::Off)
        && blocks_fit("q8_0", m.shape.head_k)
        && blocks_fit("q8_0", m.shape.head_v)
    {
        options.push(("q8_0".into(), "q8_0".into(), Toggle::On));
    }

    let ram_budget = mach.ram_available.saturating_sub(RAM_RESERVE);
    let vram_budget = mach.gpu.as_ref().map(|(_, free)| free.saturating_sub(vram_margin(*free)));
    let parallel = cfg.parallel.unwrap_or(1).max(1);
    let start_of = |context: u64, k: &str, v: &str, flash: Toggle| Start {
        context,
        batch: cfg.batch.map(u64::from).unwrap_or(DEFAULT_BATCH),
        ubatch: cfg.ubatch.map(u64::from).unwrap_or(DEFAULT_UBATCH),
        slots: u64::from(parallel),
        // `auto` resolves to on wherever the backend supports it (always on the CPU).
        flash: flash != Toggle::Off,
        swa_full: cfg.swa_full.unwrap_or(false),
        k_type: kv_type_size(k).unwrap_or((2, 1)),
        v_type: kv_type_size(v).unwrap_or((2, 1)),
    };
    // (GPU, CPU) parts with `n` layers offloaded and the experts of the first `moe` blocks in
    // RAM; llama.cpp offloads the output layer and the last `n - 1` blocks.
    let parts = |n: usize, moe: usize, context: u64, k: &str, v: &str, flash: Toggle| {
        estimate::estimate(&m.shape, m.weights(), n, moe, &start_of(context, k, v, flash))
    };
    let fits = |n: usize, moe: usize, context: u64, k: &str, v: &str, flash: Toggle| {
        let (gpu, cpu) = parts(n, moe, context, k, v, flash);
        (n == 0 || vram_budget.is_some_and(|b| gpu.total() <= b)) && cpu.total() <= ram_budget
    };
    // The context contract: never more than the model was trained for, nor than the maximum.
    let max_ctx = cfg.max_context.map_or(native, |c| c.min(native)).max(MIN_CONTEXT.min(native));
    let min_ctx = cfg.min_context.unwrap_or(MIN_CONTEXT.min(native));
    if min_ctx > max_ctx {
        return Err(if min_ctx > native {
            RuntimeError::ContextTooLarge {
                min: min_ctx,
                largest: native,
                detail: format!("the model was trained for {native} tokens and cannot use more"),
            }
        } else {
            RuntimeError::InvalidInput(format!(
                "the minimum context ({min_ctx}) is above the maximum ({max_ctx})"
            ))
        });
    }
    let preferred = cfg.context_size.map(|c| c.min(max_ctx));

    let plan_for = |k: &str, v: &str, flash: Toggle| -> Plan {
        let want_ctx = u64::from(preferred.unwrap_or(GOOD_CONTEXT.min(max_ctx)));
        let pinned_moe = cfg.n_cpu_moe.map(|n| n as usize);
        let (n, moe) = match (cfg.gpu_layers, vram_budget) {
            (Some(n), _) => ((n as usize).min(layers + 1), pinned_moe.unwrap_or(0)),
            (None, None) => (0, 0),
            (None, Some(budget)) => {
                place_layers(layers, m.is_moe(), pinned_moe, budget, |n, moe| {
                    parts(n, moe, want_ctx.min(4096), k, v, flash).0.total()
                })
            }
        };
        // Layers asked for without a usable GPU run on the CPU: size them in RAM.
        let (placed, moe) = if vram_budget.is_some() { (n, moe) } else { (0, 0) };
        // The maximum itself when it fits (padded or not), else the largest multiple of 256.
        let top = u64::from(max_ctx);
        let largest = if fits(placed, moe, top, k, v, flash) {
            top
        } else {
            largest_context(top, |c| fits(placed, moe, c, k, v, flash))
        } as u32;
        let context = preferred.map_or(largest, |p| p.min(largest));
        let (gpu, cpu) = parts(placed, moe, context as u64, k, v, flash);
        let vram = if placed == 0 { 0 } else { gpu.total() };
        let mut estimate = Vec::new();
        if placed > 0 {
            estimate.push(DeviceMemory {
                device: "GPU".into(),
                model_bytes: gpu.weights,
                kv_bytes: gpu.kv,
                compute_bytes: gpu.compute,
            });
        }
        estimate.push(DeviceMemory {
            device: "CPU".into(),
            model_bytes: cpu.weights,
            kv_bytes: cpu.kv,
            compute_bytes: cpu.compute,
        });
        Plan {
            gpu_layers: n as u32,
            cpu_moe: moe as u32,
            context,
            largest,
            k: k.into(),
            v: v.into(),
            flash,
            vram,
            ram: cpu.total(),
            estimate,
        }
    };

    let mut plans: Vec<Plan> = options.iter().map(|(k, v, f)| plan_for(k, v, *f)).collect();
    // Enough context: what the user prefers, else 8k.
    let good = preferred.unwrap_or(GOOD_CONTEXT).min(max_ctx);
    let largest = plans.iter().map(|p| p.largest).max().unwrap_or(0);
    // The first option (f16, or what the user pinned) unless it leaves too little context (or
    // less than the minimum) and the smaller cache does better.
    let chosen = if plans.len() > 1
        && (plans[0].context < good || plans[0].context < min_ctx)
        && (plans[1].context > plans[0].context || plans[1].gpu_layers > plans[0].gpu_layers)
    {
        plans.swap_remove(1)
    } else {
        plans.swap_remove(0)
    };
    if largest < MIN_CONTEXT.min(native) {
        return Err(RuntimeError::InsufficientMemory(format!(
            "the model's weights ({}) leave no room for even {MIN_CONTEXT} tokens of context \
             ({} RAM available{})",
            bytes(m.per_layer.iter().sum::<u64>() + m.other),
            bytes(mach.ram_available),
            mach.gpu
                .as_ref()
                .map(|(n, f)| format!(", {} free on {n}", bytes(*f)))
                .unwrap_or_default(),
        )));
    }
    if chosen.context < min_ctx {
        return Err(RuntimeError::ContextTooLarge {
            min: min_ctx,
            largest,
            detail: format!(
                "{} RAM available{}",
                bytes(mach.ram_available),
                mach.gpu
                    .as_ref()
                    .map(|(n, f)| format!(", {} free on {n}", bytes(*f)))
                    .unwrap_or_default()
            ),
        });
    }

    let mut why = Vec::new();
    match (&mach.gpu, chosen.gpu_layers) {
        (Some((name, _)), n) if n > 0 && chosen.cpu_moe > 0 => why.push(format!(
            "{n}/{total_layers} layers on GPU ({name}) with the experts of the first {} blocks \
             in RAM (--n-cpu-moe)",
            chosen.cpu_moe
        )),
        (Some((name, _)), n) if n > 0 => {
            why.push(format!("{n}/{total_layers} layers on GPU ({name})"))
        }
        (Some(_), _) => why.push("CPU only (the model does not fit the GPU's free memory)".into()),
        (None, 0) => why.push("CPU only (no usable GPU)".into()),
        (None, n) => why.push(format!("{n} GPU layers asked for, but no usable GPU: CPU only")),
    }
    match preferred {
        Some(p) if chosen.context < p => why.push(format!(
            "{} context (you preferred {p}; this is the most that fits now)",
            chosen.context
        )),
        _ if cfg.max_context.is_some_and(|c| c < native) => {
            why.push(format!("{} context (your maximum; trained for {native})", chosen.context))
        }
        _ => why.push(format!("{} context (trained for {native})", chosen.context)),
    }
    if chosen.k == "q8_0" && pin_k.is_none() {
        why.push("q8_0 KV cache with flash attention to fit more context".into());
    }
    why.push(expected_words(chosen.vram, chosen.ram));
    let set: Vec<&str> = [
        (cfg.context_size.is_some(), "context"),
        (cfg.gpu_layers.is_some(), "GPU layers"),
        (cfg.n_cpu_moe.is_some(), "expert blocks in RAM"),
        (cfg.min_context.is_some() || cfg.max_context.is_some(), "context limits"),
        (cfg.threads.is_some(), "threads"),
        (cfg.parallel.is_some(), "parallel slots"),
        (cfg.flash_attention.is_some(), "flash attention"),
        (pin_k.is_some() || pin_v.is_some(), "KV types"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if !set.is_empty() {
        why.push(format!("yours: {}", set.join(", ")));
    }
    if cfg.llama_fit == Some(true) {
        why.push("llama.cpp fits the context and GPU layers itself (--fit on)".into());
    }

    Ok(LlmSettings {
        model_path: m.path.clone(),
        mmproj: None,
        rpc: Vec::new(),
        split: Vec::new(),
        host: cfg
            .host
            .clone()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| "127.0.0.1".into()),
        port,
        threads: cfg.threads.unwrap_or(mach.physical_cores).max(1),
        context_size: chosen.context,
        native_context: native,
        gpu_layers: chosen.gpu_layers,
        total_layers,
        n_cpu_moe: chosen.cpu_moe,
        parallel,
        flash_attention: chosen.flash,
        cache_type_k: chosen.k,
        cache_type_v: chosen.v,
        batch: cfg.batch,
        ubatch: cfg.ubatch,
        swa_full: cfg.swa_full.unwrap_or(false),
        mmap: cfg.mmap,
        mlock: cfg.mlock.unwrap_or(false),
        reasoning_format: cfg.reasoning_format.clone(),
        // Named by its id in the server's OpenAI API (`/v1/models`), not by its storage path.
        alias: cfg
            .alias
            .clone()
            .filter(|a| !a.trim().is_empty())
            .or_else(|| (!cfg.model_id.is_empty()).then(|| cfg.model_id.clone())),
        llama_fit: cfg.llama_fit.unwrap_or(false),
        cache_ram_mib: cfg.cache_ram_mib,
        jinja: cfg.jinja.unwrap_or(true),
        embeddings: cfg.embeddings.unwrap_or(false),
        // A chat model asked for embeddings pools none by default, which OpenAI's
        // /v1/embeddings cannot answer with: its tokens are averaged.
        pooling: (cfg.embeddings == Some(true) && m.pooling.is_none_or(|p| p == 0))
            .then(|| "mean".to_owned()),
        expected_vram_bytes: chosen.vram,
        expected_ram_bytes: chosen.ram,
        estimate: chosen.estimate,
        explanation: why.join(", "),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::llama::args::build_args;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// An 8B-like model: 32 blocks of 140 MiB (Q4), 500 MiB outside them, 8 KV heads × 128,
    /// trained for 32k. f16 KV = 128 KiB per token.
    pub(crate) fn llama8b() -> ModelFacts {
        ModelFacts {
            path: "/m/8b.gguf".into(),
            per_layer: vec![140 * MIB; 32],
            experts: vec![0; 32],
            other: 500 * MIB,
            embd: 0,
            tied: false,
            native_context: 32768,
            pooling: None,
            shape: Shape {
                n_embd: 4096,
                n_head: 32,
                head_k: 128,
                head_v: 128,
                n_head_kv: vec![8; 32],
                n_ff: 14336,
                n_vocab: 128256,
                moe: None,
                swa: None,
            },
        }
    }

    fn machine(gpu_free: Option<u64>, ram: u64) -> MachineFacts {
        MachineFacts {
            physical_cores: 8,
            ram_available: ram,
            gpu: gpu_free.map(|f| ("RTX".to_owned(), f)),
        }
    }

    fn run(cfg: LlmConfig, m: &ModelFacts, mach: &MachineFacts) -> LlmSettings {
        resolve(&cfg, m, mach, 8080).unwrap()
    }

    #[test]
    fn embeddings_pool_by_the_model_else_by_the_mean() {
        let mach = machine(None, 32 * GIB);
        let embed = LlmConfig { embeddings: Some(true), ..Default::default() };
        let cases = [
            (LlmConfig::default(), None, (false, None)),
            (embed.clone(), None, (true, Some("mean"))),
            (embed.clone(), Some(0), (true, Some("mean"))),
            (embed.clone(), Some(2), (true, None)),
            (LlmConfig { embeddings: Some(false), ..Default::default() }, None, (false, None)),
        ];
        for (cfg, pooling, want) in cases {
            let m = ModelFacts { pooling, ..llama8b() };
            let s = run(cfg.clone(), &m, &mach);
            assert_eq!((s.embeddings, s.pooling.as_deref()), want, "{cfg:?} {pooling:?}");
        }
    }

    /// A vision projector takes its share first: on the GPU when there is one (the model gets
    /// what is left), else in RAM; it is passed as `--mmproj` and counted in the expectation.
    #[test]
    fn a_vision_projector_is_placed_before_the_model() {
        let m = llama8b();
        let projector = Some(("/m/mmproj-F16.gguf", GIB));
        for (gpu, ram) in [(Some(6 * GIB), 32 * GIB), (Some(24 * GIB), 32 * GIB), (None, 16 * GIB)]
        {
            let mach = machine(gpu, ram);
            let plain = run(LlmConfig::default(), &m, &mach);
            let with =
                resolve_with_projector(&LlmConfig::default(), &m, &mach, 8080, projector).unwrap();
            let fewer = machine(gpu.map(|g| g - GIB), if gpu.is_some() { ram } else { ram - GIB });
            let left = run(LlmConfig::default(), &m, &fewer);
            // Fitted as the model alone would be to the memory the projector leaves...
            assert_eq!(
                (with.gpu_layers, with.context_size, with.cache_type_k.as_str()),
                (left.gpu_layers, left.context_size, left.cache_type_k.as_str()),
                "{gpu:?}"
            );
            // ...and the projector counted where it goes.
            let (vram, ram_used) = match gpu {
                Some(_) => (left.expected_vram_bytes + GIB, left.expected_ram_bytes),
                None => (left.expected_vram_bytes, left.expected_ram_bytes + GIB),
            };
            assert_eq!((with.expected_vram_bytes, with.expected_ram_bytes), (vram, ram_used));
            assert!(
                with.explanation.contains("vision projector (1.0 GiB)"),
                "{}",
                with.explanation
            );
            assert!(build_args(&with).windows(2).any(|w| w == ["--mmproj", "/m/mmproj-F16.gguf"]));
            assert_eq!(plain.mmproj, None);
        }
        // With 6 GB free the projector costs the model layers.
        let tight = machine(Some(6 * GIB), 32 * GIB);
        let plain = run(LlmConfig::default(), &m, &tight);
        let with =
            resolve_with_projector(&LlmConfig::default(), &m, &tight, 8080, projector).unwrap();
        assert!(
            (with.gpu_layers, with.context_size) < (plain.gpu_layers, plain.context_size),
            "{} vs {}",
            with.explanation,
            plain.explanation
        );
    }

    #[test]
    fn fitting_table() {
        let m = llama8b();
        // 24 GB free: everything on the GPU, the whole trained context in f16.
        let s = run(LlmConfig::default(), &m, &machine(Some(24 * GIB), 32 * GIB));
        assert_eq!((s.gpu_layers, s.total_layers), (33, 33));
        assert_eq!(s.context_size, 32768);
        assert_eq!((s.cache_type_k.as_str(), s.flash_attention), ("f16", Toggle::Auto));
        assert!(
            s.explanation.starts_with("33/33 layers on GPU (RTX), 32768 context"),
            "{}",
            s.explanation
        );
        // Weights 4.98 GiB + 32768 × 128 KiB = 4 GiB of KV + the compute buffer; the logits
        // and the inputs stay in RAM.
        let start = Start {
            context: 32768,
            batch: DEFAULT_BATCH,
            ubatch: DEFAULT_UBATCH,
            slots: 1,
            flash: true,
            swa_full: false,
            k_type: (2, 1),
            v_type: (2, 1),
        };
        let compute = estimate::compute_bytes(&m.shape, &start);
        assert_eq!(s.expected_vram_bytes, 32 * 140 * MIB + 500 * MIB + 32768 * 131072 + compute);
        assert!(compute > 32 * MIB, "the KQ mask alone is 32 MiB at 32k: {compute}");
        let gpu = &s.estimate[0];
        assert_eq!(
            (gpu.device.as_str(), gpu.kv_bytes, gpu.compute_bytes),
            ("GPU", 4 << 30, compute)
        );
        assert!(s.estimate[1].compute_bytes >= 128256 * 4, "the logits row in RAM");

        // 6.5 GB free: all layers fit, f16 leaves under 8k of context, so q8_0 + flash attention.
        let free = 6 * GIB + GIB / 2;
        let s = run(LlmConfig::default(), &m, &machine(Some(free), 32 * GIB));
        assert_eq!(s.gpu_layers, 33);
        assert_eq!((s.cache_type_k.as_str(), s.flash_attention), ("q8_0", Toggle::On));
        assert!(s.context_size >= 2048 && s.context_size < 32768, "{}", s.context_size);
        assert!(s.expected_vram_bytes <= free - vram_margin(free));
        // 6 GB: the compute buffer no longer fits beside every layer; two blocks stay in RAM
        // (31 layers: the output layer, 500 MiB here, and the last 30 blocks).
        let s = run(LlmConfig::default(), &m, &machine(Some(6 * GIB), 32 * GIB));
        assert_eq!(s.gpu_layers, 31);
        assert!(s.expected_vram_bytes <= 6 * GIB - vram_margin(6 * GIB));

        // 3 GB free: a partial offload, counted from the real layer sizes.
        let s = run(LlmConfig::default(), &m, &machine(Some(3 * GIB), 32 * GIB));
        assert!(s.gpu_layers > 5 && s.gpu_layers < 32, "{}", s.gpu_layers);
        assert!(s.expected_vram_bytes <= 3 * GIB - vram_margin(3 * GIB));

        // No GPU: CPU, context from RAM.
        let s = run(LlmConfig::default(), &m, &machine(None, 16 * GIB));
        assert_eq!(s.gpu_layers, 0);
        assert!(s.explanation.starts_with("CPU only (no usable GPU)"));
        assert_eq!(s.context_size, 32768, "16 GiB holds the weights and 4 GiB of KV");
        let s = run(LlmConfig::default(), &m, &machine(None, 7 * GIB));
        assert!(s.context_size < 32768 && s.context_size >= 256);
        assert_eq!(s.context_size % 256, 0);

        // Too little of everything: a clear error, not a server that dies loading.
        let e = resolve(&LlmConfig::default(), &m, &machine(None, 3 * GIB), 1).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::InsufficientMemory);
    }

    #[test]
    fn user_fields_win() {
        let m = llama8b();
        let cfg = LlmConfig {
            context_size: Some(2048),
            gpu_layers: Some(10),
            threads: Some(3),
            parallel: Some(2),
            cache_type_k: Some("q4_0".into()),
            cache_type_v: Some("q8_0".into()),
            host: Some("0.0.0.0".into()),
            ..Default::default()
        };
        let s = run(cfg, &m, &machine(Some(24 * GIB), 32 * GIB));
        assert_eq!((s.context_size, s.gpu_layers, s.threads, s.parallel), (2048, 10, 3, 2));
        assert_eq!((s.cache_type_k.as_str(), s.cache_type_v.as_str()), ("q4_0", "q8_0"));
        assert_eq!(s.flash_attention, Toggle::On, "a quantized V cache needs flash attention");
        assert_eq!(s.host, "0.0.0.0");
        assert!(s
            .explanation
            .contains("yours: context, GPU layers, threads, parallel slots, KV types"));
        let bad = LlmConfig {
            cache_type_v: Some("q8_0".into()),
            flash_attention: Some(Toggle::Off),
            ..Default::default()
        };
        assert!(resolve(&bad, &m, &machine(None, 32 * GIB), 1).is_err());
        // Layers asked of a machine without a usable GPU run, and are sized, in RAM.
        let cfg = LlmConfig { gpu_layers: Some(10), ..Default::default() };
        let s = run(cfg, &m, &machine(None, 32 * GIB));
        assert_eq!((s.gpu_layers, s.expected_vram_bytes), (10, 0));
        assert!(s.expected_ram_bytes > 32 * 140 * MIB, "{}", s.expected_ram_bytes);
        assert!(s.explanation.starts_with("10 GPU layers asked for, but no usable GPU"));
        let bad = LlmConfig { cache_type_k: Some("q3".into()), ..Default::default() };
        assert_eq!(
            resolve(&bad, &m, &machine(None, 32 * GIB), 1).unwrap_err().code(),
            ipc::ErrorCode::InvalidInput
        );
    }

    /// A 30B-A3B-like mixture of experts: 48 blocks of 360 MiB, 340 of them experts.
    pub(crate) fn moe30b() -> ModelFacts {
        let mut m = llama8b();
        m.per_layer = vec![360 * MIB; 48];
        m.experts = vec![340 * MIB; 48];
        m.other = 300 * MIB;
        m.shape.n_head_kv = vec![4; 48];
        m.shape.moe = Some(estimate::Moe { experts: 128, used: 8, ff_exp: 768 });
        m
    }

    #[test]
    fn layer_placement_table() {
        // 10 blocks of 10 units (6 of them experts) + 5 outside; the budget in units.
        let gpu = |n: usize, m: usize| -> u64 {
            let blocks = n.min(10);
            let moved = (10 - blocks..10).filter(|&il| il < m).count() as u64;
            blocks as u64 * 10 - moved * 6 + if n > 10 { 5 } else { 0 }
        };
        #[rustfmt::skip]
        let table = [
            // (moe, pinned, budget) → (layers, expert blocks in RAM)
            (true, None, 105, (11, 0)),   // all fits
            (true, None, 100, (11, 1)),   // one block's experts out is enough
            (true, None, 60, (11, 8)),    // 105 - 8×6 = 57
            (true, None, 45, (11, 10)),   // the dense part alone: 45
            (true, None, 44, (4, 0)),     // not even that: whole layers
            (false, None, 100, (10, 0)),  // a dense model never splits experts
            (true, Some(3), 100, (11, 3)),// the user's count wins
            (true, Some(0), 100, (10, 0)),
            (true, None, 0, (0, 0)),
        ];
        for (moe, pinned, budget, want) in table {
            assert_eq!(
                place_layers(10, moe, pinned, budget, gpu),
                want,
                "{moe} {pinned:?} {budget}"
            );
        }
    }

    #[test]
    fn a_moe_whose_dense_part_fits_keeps_every_layer_on_the_gpu_and_experts_in_ram() {
        let m = moe30b();
        let mach = machine(Some(8 * GIB), 64 * GIB);
        let s = run(LlmConfig::default(), &m, &mach);
        assert_eq!(s.gpu_layers, 49);
        assert!(s.n_cpu_moe > 20 && s.n_cpu_moe < 48, "{}", s.n_cpu_moe);
        assert!(s.expected_vram_bytes <= 8 * GIB - vram_margin(8 * GIB));
        assert!(s.explanation.contains("experts of the first"), "{}", s.explanation);
        assert!(build_args(&s).join(" ").contains(&format!("--n-cpu-moe {}", s.n_cpu_moe)));
        // The RAM side holds the moved experts.
        assert!(s.expected_ram_bytes >= u64::from(s.n_cpu_moe) * 340 * MIB);
        // One block fewer in RAM would not fit the GPU at the context sized for.
        let start = Start {
            context: 4096,
            batch: DEFAULT_BATCH,
            ubatch: DEFAULT_UBATCH,
            slots: 1,
            flash: s.flash_attention != Toggle::Off,
            swa_full: false,
            k_type: kv_type_size(&s.cache_type_k).unwrap(),
            v_type: kv_type_size(&s.cache_type_v).unwrap(),
        };
        let fewer = s.n_cpu_moe as usize - 1;
        let (gpu, _) = estimate::estimate(&m.shape, m.weights(), 49, fewer, &start);
        assert!(gpu.total() > 8 * GIB - vram_margin(8 * GIB));
        // The same bytes as a dense model: whole layers stay on the CPU instead.
        let mut dense = m.clone();
        dense.experts = vec![0; 48];
        dense.shape.moe = None;
        let d = run(LlmConfig::default(), &dense, &mach);
        assert!(d.gpu_layers < 49 && d.n_cpu_moe == 0, "{} {}", d.gpu_layers, d.n_cpu_moe);
        // A GPU that holds it all: nothing moves; no GPU: no expert split either.
        let s = run(LlmConfig::default(), &m, &machine(Some(40 * GIB), 64 * GIB));
        assert_eq!((s.gpu_layers, s.n_cpu_moe), (49, 0));
        let s = run(LlmConfig::default(), &m, &machine(None, 64 * GIB));
        assert_eq!((s.gpu_layers, s.n_cpu_moe), (0, 0));
        // The user's count wins.
        let cfg = LlmConfig { n_cpu_moe: Some(47), ..Default::default() };
        let s = run(cfg, &m, &mach);
        assert_eq!((s.gpu_layers, s.n_cpu_moe), (49, 47));
    }

    #[test]
    fn the_context_contract() {
        let m = llama8b();
        let small = machine(None, 7 * GIB);
        let auto = run(LlmConfig::default(), &m, &small);
        assert!(auto.context_size < 32768);
        // A minimum above what fits: refused before launch, naming the largest that fits.
        let cfg = LlmConfig { min_context: Some(32768), ..Default::default() };
        let e = resolve(&cfg, &m, &small, 1).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::ContextTooLarge);
        let RuntimeError::ContextTooLarge { min, largest, .. } = &e else { panic!("{e}") };
        // f16 holds 8k here (enough, so the automatic choice); a q8_0 cache holds more.
        assert_eq!((*min, auto.context_size, auto.cache_type_k.as_str()), (32768, 8192, "f16"));
        assert!(*largest > 8192 && *largest < 32768, "{largest}");
        let largest = *largest;
        assert!(e
            .to_string()
            .contains(&format!("largest that fits on this machine now is {largest}")));
        // That largest is real: as a minimum it starts, with the smaller cache; one step more does
        // not.
        let cfg = LlmConfig { min_context: Some(largest), ..Default::default() };
        let s = run(cfg, &m, &small);
        assert_eq!((s.context_size, s.cache_type_k.as_str()), (largest, "q8_0"));
        let cfg = LlmConfig { min_context: Some(largest + 256), ..Default::default() };
        assert_eq!(
            resolve(&cfg, &m, &small, 1).unwrap_err().code(),
            ipc::ErrorCode::ContextTooLarge
        );
        assert!(e.to_ipc().remedy.contains(&largest.to_string()));
        // A preferred context that does not fit: the most that does, said so.
        let cfg =
            LlmConfig { context_size: Some(32768), min_context: Some(1024), ..Default::default() };
        let s = run(cfg, &m, &small);
        assert_eq!(s.context_size, largest);
        assert!(s.explanation.contains("you preferred 32768"), "{}", s.explanation);
        // One that fits is taken as it is.
        let cfg = LlmConfig { context_size: Some(3000), ..Default::default() };
        assert_eq!(run(cfg, &m, &small).context_size, 3000);
        // A maximum bounds the automatic choice.
        let big = machine(None, 64 * GIB);
        let cfg = LlmConfig { max_context: Some(4096), ..Default::default() };
        let s = run(cfg, &m, &big);
        assert_eq!(s.context_size, 4096);
        assert!(s.explanation.contains("your maximum"), "{}", s.explanation);
        // Never more than the model was trained for.
        let cfg = LlmConfig { context_size: Some(100_000), ..Default::default() };
        assert_eq!(run(cfg, &m, &big).context_size, 32768);
        let cfg = LlmConfig { min_context: Some(65536), ..Default::default() };
        let e = resolve(&cfg, &m, &big, 1).unwrap_err();
        assert!(
            matches!(e, RuntimeError::ContextTooLarge { largest: 32768, .. }),
            "{e}: the trained context is the most there is"
        );
        let cfg =
            LlmConfig { min_context: Some(8192), max_context: Some(4096), ..Default::default() };
        assert_eq!(resolve(&cfg, &m, &big, 1).unwrap_err().code(), ipc::ErrorCode::InvalidInput);
    }

    #[test]
    fn a_quantized_cache_only_for_heads_of_whole_blocks() {
        // Heads of 16 values: llama.cpp refuses a q8_0 cache, so it is never chosen, and asked
        // for it is a clear error before launch.
        let mut m = llama8b();
        m.shape.head_k = 16;
        m.shape.head_v = 16;
        let s = run(LlmConfig::default(), &m, &machine(Some(6 * GIB), 32 * GIB));
        assert_eq!(s.cache_type_k, "f16", "{}", s.explanation);
        let cfg = LlmConfig { cache_type_k: Some("q8_0".into()), ..Default::default() };
        let e = resolve(&cfg, &m, &machine(None, 32 * GIB), 1).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::InvalidInput);
        assert!(e.to_string().contains("multiple of 32"), "{e}");
        // The 8B's 128 are four blocks.
        let s = run(LlmConfig::default(), &llama8b(), &machine(Some(6 * GIB), 32 * GIB));
        assert_eq!(s.cache_type_k, "q8_0");
    }

    #[test]
    fn gqa_and_per_layer_sizes_come_from_the_header() {
        let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
        let h = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap();
        let m = ModelFacts::from_header("/t.gguf", &h).unwrap();
        assert_eq!(m.per_layer.len(), 2);
        assert_eq!(m.native_context, 512);
        // 4 heads (no separate KV count) × 16 dims.
        assert_eq!((m.shape.n_head_kv.as_slice(), m.shape.head_k), (&[4u64, 4][..], 16));
        let s = run(LlmConfig::default(), &m, &machine(None, 8 * GIB));
        assert_eq!((s.context_size, s.gpu_layers, s.total_layers), (512, 0, 3));
    }
}
