//! What llama-server will allocate, per device: weights, KV cache, and the compute and output
//! buffers (a pure function of the GGUF header and the start settings, table-tested).
//!
//! The compute buffer is the high-water mark of ggml's graph allocator over llama.cpp's
//! worst-case prompt graph (`sched_reserve`): `T = min(context, batch, ubatch)` tokens against the
//! whole KV cache. The allocator frees and reuses tensors, so the peak is not a sum over layers:
//! two `n_embd × T` tensors that are never freed (the input embeddings and the mixed-batch copy),
//! the small inputs, the KQ mask (and with flash attention off the `K × T × heads` scores), and
//! the larger of one layer's FFN and attention intermediates, or the logits of the last layer.
//! The rule was read from llama.cpp's allocator and graph code (build 11434: `ggml-alloc.c`,
//! `llama-context.cpp` `sched_reserve`, `llama-graph.cpp`) and checked against the buffer lines
//! the real server prints (the table below, and the `llm_start` benchmark).
//!
//! Also modelled: llama.cpp pads the context up to a multiple of 256; with `-np N` each slot
//! gets `context / N`; sliding-window layers (gemma2/3, gpt-oss) hold `window + T` cells unless
//! `--swa-full`; MoE layers size their FFN by the experts in use; the server reserves one logits
//! row per slot (the output buffer).
//!
//! Not in any log line and so not here: the CPU backend's work buffer (about `T × n_ff × 2`
//! bytes), the prompt cache (`--cache-ram`) and SWA checkpoints, which grow with use.

/// The context quantum: llama.cpp pads `-c` up to a multiple of this.
pub const CTX_PAD: u64 = 256;
/// llama-server's default `-b` and `-ub`.
pub const DEFAULT_BATCH: u64 = 2048;
pub const DEFAULT_UBATCH: u64 = 512;

pub fn pad_ctx(n: u64) -> u64 {
    n.div_ceil(CTX_PAD).max(1) * CTX_PAD
}

/// A mixture-of-experts FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moe {
    /// Experts in the model (`expert_count`).
    pub experts: u64,
    /// Experts each token uses (`expert_used_count`).
    pub used: u64,
    /// Width of one expert's FFN (`expert_feed_forward_length`).
    pub ff_exp: u64,
}

/// Sliding-window attention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swa {
    pub window: u64,
    /// Per block: true for a sliding-window layer.
    pub layers: Vec<bool>,
}

/// What the GGUF header says that the buffers depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub n_embd: u64,
    /// The most query heads of any layer.
    pub n_head: u64,
    pub head_k: u64,
    pub head_v: u64,
    /// KV heads per block (0: a layer without KV).
    pub n_head_kv: Vec<u64>,
    /// The dense FFN width (the widest layer's).
    pub n_ff: u64,
    pub n_vocab: u64,
    pub moe: Option<Moe>,
    pub swa: Option<Swa>,
}

impl Shape {
    pub fn from_header(h: &gguf::Header) -> Option<Self> {
        let arch = h.architecture()?.to_owned();
        let n_layer = h.block_count()? as usize;
        let n_embd = h.embedding_length()?;
        let heads = h.head_count_per_layer()?;
        let n_head = heads.iter().copied().max()?;
        let kv = h.head_count_kv_per_layer()?;
        let n_head_kv =
            (0..n_layer).map(|i| kv.get(i).or(kv.last()).copied().unwrap_or(0)).collect();
        let u = |suffix: &str| h.get_u64(&format!("{arch}.{suffix}"));
        let n_ff = match h.get(&format!("{arch}.feed_forward_length")) {
            Some(gguf::Value::Array(items)) => items.iter().filter_map(|v| v.as_u64()).max(),
            Some(v) => v.as_u64(),
            None => None,
        }
        .unwrap_or(0);
        let n_vocab = h
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.array_len())
            .or_else(|| {
                let t = h.tensors.iter().find(|t| t.name == "token_embd.weight")?;
                t.dims.get(1).copied()
            })
            .unwrap_or(0);
        let moe = match (h.expert_count(), h.expert_used_count()) {
            (Some(experts), Some(used)) if experts > 1 && used > 0 => {
                Some(Moe { experts, used, ff_exp: u("expert_feed_forward_length").unwrap_or(n_ff) })
            }
            _ => None,
        };
        let swa = h.sliding_window().filter(|&w| w > 0).and_then(|window| {
            let key = format!("{arch}.attention.sliding_window_pattern");
            let layers: Vec<bool> = match h.get(&key) {
                Some(gguf::Value::Array(items)) => {
                    items.iter().map(|v| v.as_u64().is_some_and(|x| x != 0)).collect()
                }
                other => {
                    // The architectures' own defaults (llama.cpp's `load_swa_pattern`).
                    let pattern = other.and_then(|v| v.as_u64()).or(match arch.as_str() {
                        "gemma2" | "gpt-oss" => Some(2),
                        "gemma3" => Some(6),
                        "cohere2" => Some(4),
                        _ => None,
                    })?;
                    (0..n_layer as u64)
                        .map(|il| pattern == 0 || il % pattern < pattern - 1)
                        .collect()
                }
            };
            layers.iter().any(|&s| s).then_some(Swa { window, layers })
        });
        Some(Self {
            n_embd,
            n_head,
            head_k: h.key_length()?,
            head_v: h.value_length()?,
            n_head_kv,
            n_ff,
            n_vocab,
            moe,
            swa,
        })
    }

    pub fn layers(&self) -> usize {
        self.n_head_kv.len()
    }

    fn is_swa(&self, il: usize) -> bool {
        self.swa.as_ref().is_some_and(|s| s.layers.get(il).copied().unwrap_or(false))
    }
}

/// The start settings the buffers depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// `-c`, as asked (padded here).
    pub context: u64,
    pub batch: u64,
    pub ubatch: u64,
    /// `-np`.
    pub slots: u64,
    pub flash: bool,
    pub swa_full: bool,
    /// Bytes per element of the K and V cache types, as (numerator, denominator).
    pub k_type: (u64, u64),
    pub v_type: (u64, u64),
}

impl Start {
    /// Tokens of the worst-case prompt batch.
    fn tokens(&self) -> u64 {
        pad_ctx(self.context).min(self.batch.max(1)).min(self.ubatch.max(1))
    }

    /// KV cells one slot's stream holds in a full-attention layer.
    fn cells(&self) -> u64 {
        let c = pad_ctx(self.context);
        if self.slots <= 1 {
            c
        } else {
            pad_ctx(c / self.slots)
        }
    }

    /// Cells of a sliding-window layer.
    fn swa_cells(&self, window: u64) -> u64 {
        if self.swa_full {
            self.cells()
        } else {
            self.cells().min(pad_ctx(window + self.tokens()))
        }
    }
}

/// Bytes one device holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Parts {
    pub weights: u64,
    pub kv: u64,
    /// The compute buffer, and on the host the output (logits) buffer.
    pub compute: u64,
}

impl Parts {
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.compute
    }
}

/// KV bytes of the blocks in `layers`.
pub fn kv_bytes(shape: &Shape, start: &Start, layers: std::ops::Range<usize>) -> u64 {
    let streams = start.slots.max(1);
    let (kn, kd) = start.k_type;
    let (vn, vd) = start.v_type;
    layers
        .map(|il| {
            let cells = match &shape.swa {
                Some(s) if shape.is_swa(il) => start.swa_cells(s.window),
                _ => start.cells(),
            };
            let heads = shape.n_head_kv[il];
            let k = heads * shape.head_k * kn / kd;
            let v = heads * shape.head_v * vn / vd;
            cells * streams * (k + v)
        })
        .sum()
}

/// The compute buffer of the device that runs the blocks (bytes).
pub fn compute_bytes(shape: &Shape, start: &Start) -> u64 {
    let t = start.tokens();
    let n_out = t.min(start.slots.max(1));
    let n_head_kv = shape.n_head_kv.iter().copied().max().unwrap_or(0);
    let e = shape.n_embd * t * 4;
    let q = shape.n_head * shape.head_k * t * 4;
    let kvw = n_head_kv * shape.head_k * t * 4;
    // One KQ mask per cache: the full-attention one and the sliding-window one.
    let mut caches = Vec::new();
    match &shape.swa {
        None => caches.push(start.cells()),
        Some(s) => {
            if (0..shape.layers()).any(|il| !shape.is_swa(il)) {
                caches.push(start.cells());
            }
            caches.push(start.swa_cells(s.window));
        }
    }
    let n_caches = caches.len() as u64;
    let longest = caches.iter().copied().max().unwrap_or(0);
    let mask: u64 = caches.iter().map(|c| c * t * if start.flash { 2 } else { 4 }).sum();
    let v_idx = n_caches * if start.flash { t * 8 } else { t * n_head_kv * shape.head_v * 8 };
    let small = t * 20 + n_caches * t * 8 + 4 * n_out;
    let ffn = match shape.moe {
        Some(m) => {
            let f = m.ff_exp * m.used * t * 4;
            3 * f + 3 * e + if m.used * e > 2 * f { m.used * e } else { 0 }
        }
        None => {
            let f = shape.n_ff * t * 4;
            match shape.layers() {
                0 | 1 => 0,
                2 if shape.n_ff <= 2 * shape.n_embd => 2 * f + 3 * e,
                _ => 3 * f + 3 * e,
            }
        }
    };
    let attn = if start.flash {
        3 * e + 2 * q + kvw
    } else {
        longest * t * shape.n_head * 4 + 2 * e + 2 * q + if q > e { e } else { 0 }
    };
    let logits = shape.n_vocab * n_out * 4 + 2 * shape.n_embd * n_out * 4;
    2 * e + small + (mask + v_idx + ffn.max(attn)).max(logits)
}

/// The host buffer of a fully offloaded model: the inputs, the two kept embedding tensors and the
/// embedding rows stay on the CPU (read from the source; not measured here).
fn host_inputs_bytes(shape: &Shape, start: &Start) -> u64 {
    let t = start.tokens();
    let mask = start.cells() * t * if start.flash { 2 } else { 4 };
    3 * shape.n_embd * t * 4 + mask + t * 28 + 4 * t.min(start.slots.max(1))
}

/// The logits buffer: one row per slot.
pub fn output_bytes(shape: &Shape, start: &Start) -> u64 {
    shape.n_vocab * start.slots.max(1) * 4
}

/// A model's weights as the estimate places them.
#[derive(Debug, Clone, Copy)]
pub struct Weights<'a> {
    /// Bytes of each block, in block order.
    pub per_layer: &'a [u64],
    /// Of those, the mixture-of-experts expert tensors' bytes (empty, or zeros, when dense).
    pub experts: &'a [u64],
    /// Bytes outside the blocks (embeddings, output head).
    pub other: u64,
    /// Of those, the token embedding's: llama.cpp keeps it (the input layer) on the CPU.
    pub embd: u64,
    /// The output layer is the embedding (no `output.weight`): a copy of it goes with the
    /// output layer, the embedding itself staying on the CPU.
    pub tied: bool,
}

impl Weights<'_> {
    fn experts_of(&self, il: usize) -> u64 {
        self.experts.get(il).copied().unwrap_or(0)
    }
}

/// Where each part lands with `gpu_layers` layers on the GPU, as llama.cpp's `-ngl` counts them:
/// the output layer (the last of all) and the last `gpu_layers - 1` blocks; with the expert
/// tensors of the first `cpu_moe` blocks kept in RAM (`--n-cpu-moe`).
pub fn estimate(
    shape: &Shape,
    w: Weights<'_>,
    gpu_layers: usize,
    cpu_moe: usize,
    start: &Start,
) -> (Parts, Parts) {
    let n = shape.layers().min(w.per_layer.len());
    // llama.cpp's `-ngl g` offloads the last g of the blocks and the output layer, the output
    // layer being the last of all: g - 1 blocks with it.
    let output = gpu_layers > 0;
    let blocks = gpu_layers.saturating_sub(1).min(n);
    let (cpu_r, gpu_r) = (0..n - blocks, n - blocks..n);
    // Expert tensors of GPU blocks that `--n-cpu-moe` keeps in RAM.
    let moved: Vec<u64> =
        gpu_r.clone().filter(|&il| il < cpu_moe).map(|il| w.experts_of(il)).collect();
    let moved_sum: u64 = moved.iter().sum();
    let mut gpu = Parts {
        weights: w.per_layer[gpu_r.clone()].iter().sum::<u64>() - moved_sum,
        kv: kv_bytes(shape, start, gpu_r.clone()),
        compute: 0,
    };
    let mut cpu = Parts {
        weights: w.per_layer[cpu_r.clone()].iter().sum::<u64>() + moved_sum,
        kv: kv_bytes(shape, start, cpu_r.clone()),
        compute: output_bytes(shape, start),
    };
    if output {
        // The output layer offloaded: the weights outside the blocks but the embedding (with a
        // copy of it when the output layer is the embedding); the embedding stays in RAM.
        gpu.weights += if w.tied { w.other } else { w.other.saturating_sub(w.embd) };
        cpu.weights += w.embd.min(w.other);
    } else {
        cpu.weights += w.other;
    }
    let compute = compute_bytes(shape, start);
    // Matmuls of weights held in RAM are run on the GPU for a prompt batch, so its buffer also
    // holds a copy of the widest such weights (a CPU block, or one block's experts).
    let widest = w.per_layer[cpu_r.clone()].iter().chain(&moved).copied().max().unwrap_or(0);
    if gpu_r.is_empty() {
        cpu.compute += compute;
    } else if widest == 0 {
        gpu.compute += compute;
        cpu.compute += host_inputs_bytes(shape, start);
    } else {
        // Both devices run part of every step.
        gpu.compute += compute + widest;
        cpu.compute += compute;
    }
    (gpu, cpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1048576.0;

    fn llama(vocab: u64, embd: u64, layers: usize, heads: u64, kv_heads: u64, ff: u64) -> Shape {
        Shape {
            n_embd: embd,
            n_head: heads,
            head_k: embd / heads,
            head_v: embd / heads,
            n_head_kv: vec![kv_heads; layers],
            n_ff: ff,
            n_vocab: vocab,
            moe: None,
            swa: None,
        }
    }

    fn start(context: u64, flash: bool) -> Start {
        Start {
            context,
            batch: DEFAULT_BATCH,
            ubatch: DEFAULT_UBATCH,
            slots: 1,
            flash,
            swa_full: false,
            k_type: (2, 1),
            v_type: (2, 1),
        }
    }

    /// What llama-server (build 11434, CPU) printed for models of these shapes, to 4 decimals
    /// (`~llama_context: CPU compute buffer size is … MiB` at `-lv 5`): the compute buffer, and
    /// the KV buffer lines summed.
    #[test]
    fn compute_and_kv_match_the_real_servers_buffers() {
        let tiny = llama(259, 64, 2, 4, 4, 128);
        let med = llama(259, 384, 6, 6, 6, 1024);
        let ex = llama(32000, 512, 8, 8, 4, 1408);
        let moe = Shape {
            n_embd: 256,
            head_k: 64,
            head_v: 64,
            n_head: 8,
            n_head_kv: vec![4; 4],
            n_ff: 0,
            moe: Some(Moe { experts: 16, used: 4, ff_exp: 128 }),
            ..llama(32000, 256, 4, 8, 4, 0)
        };
        let swa = |layers: usize, pattern: usize| Shape {
            head_k: 64,
            head_v: 64,
            swa: Some(Swa {
                window: 512,
                layers: (0..layers).map(|il| il % pattern < pattern - 1).collect(),
            }),
            ..llama(32000, 256, layers, 4, 2, 1024)
        };
        let (gemma2, gemma3) = (swa(4, 2), swa(6, 6));
        let np = |s: Start, slots| Start { slots, ..s };
        #[rustfmt::skip]
        let table: &[(&str, &Shape, Start, f64, f64)] = &[
            // (case, shape, start, compute MiB, KV MiB)
            ("tiny c256 fa", &tiny, start(256, true), 0.6963, 0.125),
            ("tiny c512 fa", &tiny, start(512, true), 1.6426, 0.25),
            ("tiny c512", &tiny, start(512, false), 6.0137, 0.25),
            ("tiny c4096 fa", &tiny, start(4096, true), 5.1426, 2.0),
            ("tiny c4096", &tiny, start(4096, false), 41.0137, 2.0),
            ("medium c2048 fa", &med, start(2048, true), 11.7676, 18.0),
            ("32k vocab c4096 fa", &ex, start(4096, true), 17.2676, 32.0),
            ("32k vocab c4096", &ex, start(4096, false), 79.0137, 32.0),
            ("32k vocab np4 fa", &ex, np(start(4096, true), 4), 14.2676, 32.0),
            ("qwen3moe c4096 fa", &moe, start(4096, true), 9.5176, 16.0),
            ("qwen3moe c4096", &moe, start(4096, false), 77.5137, 16.0),
            ("gemma2 c4096 fa", &gemma2, start(4096, true), 13.5254, 5.0),
            ("gemma2 c4096", &gemma2, start(4096, false), 46.0176, 5.0),
            ("gemma3 c4096 fa", &gemma3, start(4096, true), 13.5274, 4.5),
        ];
        for (case, shape, s, compute, kv) in table {
            let got_c = compute_bytes(shape, s) as f64 / MIB;
            let got_kv = kv_bytes(shape, s, 0..shape.layers()) as f64 / MIB;
            assert!(
                (got_c - compute).abs() / compute < 0.011,
                "{case}: compute {got_c:.4} vs {compute}"
            );
            assert!((got_kv - kv).abs() < 1e-9, "{case}: KV {got_kv} vs {kv}");
        }
        // The logits buffer: one row per slot.
        assert_eq!(output_bytes(&ex, &np(start(4096, true), 4)), 32000 * 4 * 4);
    }

    #[test]
    fn context_is_padded_and_split_between_slots() {
        assert_eq!((pad_ctx(1), pad_ctx(256), pad_ctx(320), pad_ctx(4096)), (256, 256, 512, 4096));
        let s = Start { context: 4096, slots: 3, ..start(0, true) };
        // 4096 / 3 = 1365 → 1536 cells per slot.
        assert_eq!(s.cells(), 1536);
        let tiny = llama(259, 64, 2, 4, 4, 128);
        assert_eq!(kv_bytes(&tiny, &s, 0..2), 1536 * 3 * 2 * (64 * 2 + 64 * 2));
        // A small context caps the batch.
        assert_eq!(start(256, true).tokens(), 256);
        assert_eq!(Start { ubatch: 1024, ..start(4096, true) }.tokens(), 1024);
    }

    #[test]
    fn the_split_puts_each_part_where_llama_cpp_does() {
        let ex = llama(32000, 512, 8, 8, 4, 1408);
        let per_layer = vec![10u64 << 20; 8];
        let other = 30u64 << 20;
        let s = start(4096, true);
        let w = Weights { per_layer: &per_layer, experts: &[], other, embd: 0, tied: false };
        let (gpu, cpu) = estimate(&ex, w, 0, 0, &s);
        assert_eq!(gpu, Parts::default());
        assert_eq!(cpu.weights, 110 << 20);
        assert_eq!(cpu.kv, kv_bytes(&ex, &s, 0..8));
        assert_eq!(cpu.compute, compute_bytes(&ex, &s) + output_bytes(&ex, &s));
        // Everything on the GPU: the output layer too, the logits stay in RAM.
        let (gpu, cpu) = estimate(&ex, w, 9, 0, &s);
        assert_eq!((gpu.weights, cpu.weights), (110 << 20, 0));
        assert_eq!((gpu.kv, cpu.kv), (kv_bytes(&ex, &s, 0..8), 0));
        assert!(cpu.compute > output_bytes(&ex, &s));
        // Four layers: the output layer (the 30 MiB outside the blocks, here) and the last
        // three blocks on the GPU, as llama.cpp hands `-ngl 4` out.
        let (gpu, cpu) = estimate(&ex, w, 4, 0, &s);
        assert_eq!((gpu.weights, cpu.weights), (60 << 20, 50 << 20));
        assert_eq!((gpu.kv, cpu.kv), (kv_bytes(&ex, &s, 5..8), kv_bytes(&ex, &s, 0..5)));
        assert_eq!(gpu.compute, compute_bytes(&ex, &s) + (10 << 20));
        // One layer: the output layer alone.
        let (gpu, cpu) = estimate(&ex, w, 1, 0, &s);
        assert_eq!((gpu.weights, gpu.kv, cpu.weights), (30 << 20, 0, 80 << 20));
        // A dense model: `--n-cpu-moe` moves nothing.
        assert_eq!(estimate(&ex, w, 9, 8, &s), estimate(&ex, w, 9, 0, &s));
        // MoE, 6 of each block's 10 MiB are experts: every layer on the GPU, the experts of the
        // first three blocks in RAM, and a copy of one block's experts in the GPU's buffer.
        let experts = vec![6u64 << 20; 8];
        let moe = Weights { experts: &experts, ..w };
        let (gpu, cpu) = estimate(&ex, moe, 9, 3, &s);
        assert_eq!((gpu.weights, cpu.weights), ((110 - 18) << 20, 18 << 20));
        assert_eq!((gpu.kv, cpu.kv), (kv_bytes(&ex, &s, 0..8), 0));
        assert_eq!(gpu.compute, compute_bytes(&ex, &s) + (6 << 20));
        assert_eq!(cpu.compute, compute_bytes(&ex, &s) + output_bytes(&ex, &s));
        // The experts of CPU blocks are in RAM anyway.
        let (gpu, cpu) = estimate(&ex, moe, 4, 8, &s);
        assert_eq!((gpu.weights, cpu.weights), ((30 - 18 + 30) << 20, (50 + 18) << 20));
        // Of the 30 MiB outside the blocks, a 16 MiB token embedding: it stays in RAM when
        // every layer is offloaded; with no output.weight the output layer is a copy of it.
        let embd = Weights { embd: 16 << 20, ..w };
        let (gpu, cpu) = estimate(&ex, embd, 9, 0, &s);
        assert_eq!((gpu.weights, cpu.weights), ((80 + 14) << 20, 16 << 20));
        let tied = Weights { tied: true, ..embd };
        let (gpu, cpu) = estimate(&ex, tied, 9, 0, &s);
        assert_eq!((gpu.weights, cpu.weights), (110 << 20, 16 << 20));
        // Nothing offloaded: all of it in RAM, once.
        let (gpu, cpu) = estimate(&ex, tied, 0, 0, &s);
        assert_eq!((gpu.weights, cpu.weights), (0, 110 << 20));
    }

    #[test]
    fn shape_from_a_generated_header() {
        let bytes = gguf::fixtures::tiny_llama(Default::default()).to_bytes();
        let h = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap();
        let s = Shape::from_header(&h).unwrap();
        assert_eq!(s, llama(259, 64, 2, 4, 4, 128));
    }

    #[test]
    fn moe_and_sliding_window_from_generated_headers() {
        use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
        let base = ZeroModel {
            arch: ZeroArch::Llama,
            n_vocab: 300,
            n_embd: 64,
            n_layer: 6,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_ff: 128,
            n_ctx: 2048,
        };
        let shape = |arch| {
            let (header, _) = zero_model(ZeroModel { arch, ..base }).header_bytes();
            Shape::from_header(&gguf::read_header(&header[..], gguf::Limits::default()).unwrap())
                .unwrap()
        };
        let moe = shape(ZeroArch::Qwen3Moe { experts: 8, used: 2, ff_exp: 32 });
        assert_eq!(moe.moe, Some(Moe { experts: 8, used: 2, ff_exp: 32 }));
        assert_eq!((moe.n_vocab, moe.head_k, moe.n_head_kv[5]), (300, 16, 2));
        let g2 = shape(ZeroArch::Gemma2 { window: 256 });
        assert_eq!(
            g2.swa,
            Some(Swa { window: 256, layers: vec![true, false, true, false, true, false] })
        );
        let g3 = shape(ZeroArch::Gemma3 { window: 128 });
        assert_eq!(g3.swa.unwrap().layers, [true, true, true, true, true, false]);
        assert_eq!(shape(ZeroArch::Llama).swa, None);
    }
}
