//! Small real models for tests: a llama-architecture GGUF that llama-server can load.

use crate::{GgmlType, TensorData, Value, Writer};

/// A well-formed GGUF whose second tensor, `strange.weight`, has ggml type 9999, which no
/// llama.cpp build loads.
pub fn unknown_tensor_type() -> Writer {
    Writer::new()
        .kv("general.architecture", Value::String("llama".into()))
        .tensor(TensorData::f32("ok.weight", &[8], &[0.5; 8]))
        .tensor(TensorData {
            name: "strange.weight".into(),
            dims: vec![8],
            ggml_type: GgmlType(9999),
            data: vec![0; 32],
        })
}

/// Shard `no` (0-based, as `split.no` counts) of `count` of a split model, the way llama.cpp's
/// gguf-split writes the shards after the first: the split keys and a share of the tensors,
/// `values` f32 weights.
pub fn split_shard(no: u16, count: u16, values: usize) -> Writer {
    Writer::new()
        .kv("split.no", Value::U16(no))
        .kv("split.count", Value::U16(count))
        .kv("split.tensors.count", Value::I32(23))
        .tensor(TensorData::f32(
            &format!("blk.{no}.extra.weight"),
            &[values as u64],
            &vec![0.25; values],
        ))
}

/// A vision projector's file as its header starts (`clip`, the architecture llama.cpp's
/// projectors name), with `values` f32 weights.
pub fn tiny_projector(values: usize) -> Writer {
    Writer::new()
        .kv("general.architecture", Value::String("clip".into()))
        .kv("clip.has_vision_encoder", Value::Bool(true))
        .tensor(TensorData::f32("mm.0.weight", &[values as u64], &vec![0.5; values]))
}

/// Shape of [`tiny_llama`].
#[derive(Debug, Clone, Copy)]
pub struct TinyLlama {
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_ff: u64,
    pub n_ctx: u64,
    pub seed: u64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        Self { n_embd: 64, n_layer: 2, n_head: 4, n_ff: 128, n_ctx: 512, seed: 42 }
    }
}

/// xorshift64*: deterministic weights without a dependency.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }

    /// Normal(0, std) by Box-Muller.
    fn normal(&mut self, std: f32) -> f32 {
        let (u1, u2) = (self.next_f32(), self.next_f32());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos() * std
    }
}

/// `<unk>`, `<s>`, `</s>` and the 256 byte tokens `<0xNN>`.
const BYTE_TOKENS: u64 = 259;

/// The tokenizer keys of a byte-level vocabulary of `n_vocab` tokens: the byte tokens, then plain
/// ones (`tok259`, …) up to `n_vocab`.
fn byte_vocab(w: Writer, n_vocab: u64) -> Writer {
    let n_vocab = n_vocab.max(BYTE_TOKENS);
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend((BYTE_TOKENS..n_vocab).map(|i| format!("tok{i}")));
    let token_type: Vec<Value> = (0..n_vocab)
        .map(|i| {
            Value::I32(match i {
                0 => 2,
                1 | 2 => 3,
                i if i < BYTE_TOKENS => 6,
                _ => 1,
            })
        })
        .collect();
    w.kv("tokenizer.ggml.model", Value::String("llama".into()))
        .kv("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect()))
        .kv("tokenizer.ggml.scores", Value::Array((0..n_vocab).map(|_| Value::F32(0.0)).collect()))
        .kv("tokenizer.ggml.token_type", Value::Array(token_type))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", Value::U32(0))
}

/// A llama model with a byte-level vocabulary (`<unk>`, `<s>`, `</s>` and the 256 `<0xNN>`
/// tokens) and f32 weights drawn from N(0, 0.02). About 470 KB at the default shape; it
/// generates gibberish, which is all a test of the plumbing needs.
pub fn tiny_llama(shape: TinyLlama) -> Writer {
    let TinyLlama { n_embd, n_layer, n_head, n_ff, n_ctx, seed } = shape;
    let n_vocab = BYTE_TOKENS;

    let mut rng = Rng(seed.max(1));
    let mut weights = |name: String, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| rng.normal(0.02)).collect();
        TensorData::f32(&name, dims, &values)
    };
    let ones = |name: String, n: u64| TensorData::f32(&name, &[n], &vec![1.0; n as usize]);

    let mut w = Writer::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String("tiny-llama-test".into()))
        .kv("general.file_type", Value::U32(0))
        .kv("llama.context_length", Value::U32(n_ctx as u32))
        .kv("llama.embedding_length", Value::U32(n_embd as u32))
        .kv("llama.block_count", Value::U32(n_layer as u32))
        .kv("llama.feed_forward_length", Value::U32(n_ff as u32))
        .kv("llama.attention.head_count", Value::U32(n_head as u32))
        .kv("llama.attention.head_count_kv", Value::U32(n_head as u32))
        .kv("llama.rope.dimension_count", Value::U32((n_embd / n_head) as u32))
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    w = byte_vocab(w, n_vocab);

    // Weight matrices are stored [in, out] in GGUF's innermost-first order.
    w = w.tensor(weights("token_embd.weight".into(), &[n_embd, n_vocab]));
    for i in 0..n_layer {
        w = w
            .tensor(ones(format!("blk.{i}.attn_norm.weight"), n_embd))
            .tensor(weights(format!("blk.{i}.attn_q.weight"), &[n_embd, n_embd]))
            .tensor(weights(format!("blk.{i}.attn_k.weight"), &[n_embd, n_embd]))
            .tensor(weights(format!("blk.{i}.attn_v.weight"), &[n_embd, n_embd]))
            .tensor(weights(format!("blk.{i}.attn_output.weight"), &[n_embd, n_embd]))
            .tensor(ones(format!("blk.{i}.ffn_norm.weight"), n_embd))
            .tensor(weights(format!("blk.{i}.ffn_gate.weight"), &[n_embd, n_ff]))
            .tensor(weights(format!("blk.{i}.ffn_up.weight"), &[n_embd, n_ff]))
            .tensor(weights(format!("blk.{i}.ffn_down.weight"), &[n_ff, n_embd]));
    }
    w.tensor(ones("output_norm.weight".into(), n_embd))
        .tensor(weights("output.weight".into(), &[n_embd, n_vocab]))
}

/// The three files of [`tiny_flux2_klein`].
pub struct TinyFlux2 {
    /// `--diffusion-model`: a Flux.2 [klein] DiT with one double and one single block, hidden
    /// size 128 (one head of 128).
    pub diffusion_model: Writer,
    /// `--llm`: a Qwen3 text encoder with 28 layers (the conditioner reads layers 9, 18 and 27)
    /// of hidden size 64 and Qwen's full vocabulary (its tokenizer is built into sd-cli).
    pub llm: Writer,
    /// `--taesd`: a tiny autoencoder for Flux.2's 32-channel latents, decoder and encoder
    /// (sd-cli loads only the decoder; sd-server, which can also encode, loads both).
    pub taesd: Writer,
}

impl TinyFlux2 {
    /// Writes the three files into `dir` (`dit.gguf`, `qwen3.gguf`, `taef2.gguf`); answers each
    /// one's component role (as the app names it), path and size.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<Vec<(String, String, u64)>> {
        [
            ("diffusion_model", "dit.gguf", &self.diffusion_model),
            ("llm", "qwen3.gguf", &self.llm),
            ("taesd", "taef2.gguf", &self.taesd),
        ]
        .into_iter()
        .map(|(role, file, w)| {
            let path = dir.join(file);
            let bytes = w.to_bytes();
            std::fs::write(&path, &bytes)?;
            Ok((role.to_owned(), path.display().to_string(), bytes.len() as u64))
        })
        .collect()
    }
}

/// A Flux.2 [klein]-shaped image model with random weights that the real sd-cli (0.4.7)
/// accepts and runs: its version detection and its reading of the sizes from tensor shapes
/// (depth, hidden size, heads; the text encoder's layers, width and vocabulary) let a model this
/// small pass. The tensor names and shapes were found by giving sd-cli a nearly empty file and
/// following its "not in model file" / "wrong shape" errors. About 92 MB of f32 in all, 80 MB
/// of it the text encoder's embedding table; the images are noise.
pub fn tiny_flux2_klein(seed: u64) -> TinyFlux2 {
    let mut rng = Rng(seed.max(1));
    let mut tensor = |name: &str, dims: &[u64]| {
        let n: u64 = dims.iter().product();
        // Norm scales start at one; everything else is small noise.
        let one = dims.len() == 1 && (name.ends_with(".scale") || name.contains("norm"));
        let values: Vec<f32> = (0..n).map(|_| if one { 1.0 } else { rng.normal(0.02) }).collect();
        TensorData::f32(name, dims, &values)
    };
    let file = |name: &str| {
        Writer::new()
            .kv("general.architecture", Value::String("flux2-test".into()))
            .kv("general.name", Value::String(name.into()))
    };

    let mut dit = file("tiny-flux2-klein-dit");
    for (name, dims) in FLUX2_DIT {
        dit = dit.tensor(tensor(name, dims));
    }

    let (hidden, layers, vocab) = (64u64, 28u32, 151_936u64);
    let mut llm = file("tiny-qwen3-text-encoder")
        .tensor(tensor("model.embed_tokens.weight", &[hidden, vocab]))
        .tensor(tensor("model.norm.weight", &[hidden]));
    for i in 0..layers {
        for (name, dims) in [
            ("input_layernorm.weight", &[hidden][..]),
            ("post_attention_layernorm.weight", &[hidden]),
            ("mlp.gate_proj.weight", &[hidden, hidden]),
            ("mlp.up_proj.weight", &[hidden, hidden]),
            ("mlp.down_proj.weight", &[hidden, hidden]),
            // 16 heads (sd-cli's Qwen3 2B rule for 28 layers) and 8 key/value heads of 128.
            ("self_attn.q_proj.weight", &[hidden, 2048]),
            ("self_attn.k_proj.weight", &[hidden, 1024]),
            ("self_attn.v_proj.weight", &[hidden, 1024]),
            ("self_attn.o_proj.weight", &[2048, hidden]),
            ("self_attn.q_norm.weight", &[128]),
            ("self_attn.k_norm.weight", &[128]),
        ] {
            llm = llm.tensor(tensor(&format!("model.layers.{i}.{name}"), dims));
        }
    }

    // TAESD's decoder: convolutions at 0, 6, 11, 16 and 18, blocks of three convolutions
    // elsewhere, the first three with a channel-mixing "pool".
    let mut tae = file("tiny-taef2")
        .tensor(tensor("decoder.layers.0.weight", &[3, 3, 32, 64]))
        .tensor(tensor("decoder.layers.0.bias", &[64]));
    for block in [2, 3, 4, 7, 8, 9, 12, 13, 14, 17] {
        for conv in [0, 2, 4] {
            let p = format!("decoder.layers.{block}.conv.{conv}");
            tae = tae
                .tensor(tensor(&format!("{p}.weight"), &[3, 3, 64, 64]))
                .tensor(tensor(&format!("{p}.bias"), &[64]));
        }
        if block <= 4 {
            let p = format!("decoder.layers.{block}.pool");
            tae = tae
                .tensor(tensor(&format!("{p}.0.weight"), &[1, 1, 64, 256]))
                .tensor(tensor(&format!("{p}.1.weight"), &[256]))
                .tensor(tensor(&format!("{p}.1.bias"), &[256]))
                .tensor(tensor(&format!("{p}.3.weight"), &[1, 1, 256, 64]));
        }
    }
    for layer in [6, 11, 16] {
        tae = tae.tensor(tensor(&format!("decoder.layers.{layer}.weight"), &[3, 3, 64, 64]));
    }
    tae = tae
        .tensor(tensor("decoder.layers.18.weight", &[3, 3, 64, 3]))
        .tensor(tensor("decoder.layers.18.bias", &[3]));
    // TAESD's encoder: a convolution in (3 → 64), a block, then three times a strided
    // convolution without bias and three blocks (the last three with the "pool"), a
    // convolution out (64 → 32).
    tae = tae
        .tensor(tensor("encoder.layers.0.weight", &[3, 3, 3, 64]))
        .tensor(tensor("encoder.layers.0.bias", &[64]));
    for block in [1, 3, 4, 5, 7, 8, 9, 11, 12, 13] {
        for conv in [0, 2, 4] {
            let p = format!("encoder.layers.{block}.conv.{conv}");
            tae = tae
                .tensor(tensor(&format!("{p}.weight"), &[3, 3, 64, 64]))
                .tensor(tensor(&format!("{p}.bias"), &[64]));
        }
        if block >= 11 {
            let p = format!("encoder.layers.{block}.pool");
            tae = tae
                .tensor(tensor(&format!("{p}.0.weight"), &[1, 1, 64, 256]))
                .tensor(tensor(&format!("{p}.1.weight"), &[256]))
                .tensor(tensor(&format!("{p}.1.bias"), &[256]))
                .tensor(tensor(&format!("{p}.3.weight"), &[1, 1, 256, 64]));
        }
    }
    for layer in [2, 6, 10] {
        tae = tae.tensor(tensor(&format!("encoder.layers.{layer}.weight"), &[3, 3, 64, 64]));
    }
    tae = tae
        .tensor(tensor("encoder.layers.14.weight", &[3, 3, 64, 32]))
        .tensor(tensor("encoder.layers.14.bias", &[32]));
    TinyFlux2 { diffusion_model: dit, llm, taesd: tae }
}

/// The DiT's tensors (names as in the file; sd-cli adds `model.diffusion_model.`).
const FLUX2_DIT: &[(&str, &[u64])] = &[
    ("img_in.weight", &[128, 128]),
    ("txt_in.weight", &[192, 128]),
    ("time_in.in_layer.weight", &[256, 128]),
    ("time_in.out_layer.weight", &[128, 128]),
    ("double_stream_modulation_img.lin.weight", &[128, 768]),
    ("double_stream_modulation_txt.lin.weight", &[128, 768]),
    ("single_stream_modulation.lin.weight", &[128, 384]),
    ("double_blocks.0.img_attn.norm.key_norm.scale", &[128]),
    ("double_blocks.0.img_attn.norm.query_norm.scale", &[128]),
    ("double_blocks.0.img_attn.proj.weight", &[128, 128]),
    ("double_blocks.0.img_attn.qkv.weight", &[128, 384]),
    ("double_blocks.0.img_mlp.0.weight", &[128, 768]),
    ("double_blocks.0.img_mlp.2.weight", &[384, 128]),
    ("double_blocks.0.txt_attn.norm.key_norm.scale", &[128]),
    ("double_blocks.0.txt_attn.norm.query_norm.scale", &[128]),
    ("double_blocks.0.txt_attn.proj.weight", &[128, 128]),
    ("double_blocks.0.txt_attn.qkv.weight", &[128, 384]),
    ("double_blocks.0.txt_mlp.0.weight", &[128, 768]),
    ("double_blocks.0.txt_mlp.2.weight", &[384, 128]),
    ("single_blocks.0.linear1.weight", &[128, 1152]),
    ("single_blocks.0.linear2.weight", &[512, 128]),
    ("single_blocks.0.norm.key_norm.scale", &[128]),
    ("single_blocks.0.norm.query_norm.scale", &[128]),
    ("final_layer.adaLN_modulation.1.weight", &[128, 256]),
    ("final_layer.linear.weight", &[128, 128]),
];

/// The architecture of a [`zero_model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroArch {
    Llama,
    /// Qwen3's mixture of experts: `experts` FFNs of width `ff_exp`, `used` per token.
    Qwen3Moe {
        experts: u64,
        used: u64,
        ff_exp: u64,
    },
    /// Gemma 2: every other layer attends a sliding window of `window` tokens.
    Gemma2 {
        window: u64,
    },
    /// Gemma 3: five of every six layers attend a sliding window.
    Gemma3 {
        window: u64,
    },
}

/// The shape of a [`zero_model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroModel {
    pub arch: ZeroArch,
    pub n_vocab: u64,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub head_dim: u64,
    pub n_ff: u64,
    pub n_ctx: u64,
}

impl ZeroModel {
    /// A small llama whose header is mostly its vocabulary of `n_vocab` tokens, as a real
    /// model's is (150k tokens: a 3.6 MB header), for reading headers remotely.
    pub fn big_vocabulary(n_vocab: u64) -> Self {
        Self {
            arch: ZeroArch::Llama,
            n_vocab,
            n_embd: 64,
            n_layer: 4,
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_ff: 128,
            n_ctx: 4096,
        }
    }
}

/// A model of a real llama.cpp architecture with all-zero weights (f16 matrices, f32 norms) and a
/// byte-level vocabulary padded to `n_vocab`: llama-server loads and runs it, so its buffers can be
/// measured at any size without generating gigabytes. Every tensor is header-only; write it with
/// [`Writer::write_sparse`].
pub fn zero_model(m: ZeroModel) -> Writer {
    let ZeroModel {
        arch,
        n_vocab,
        n_embd: e,
        n_layer,
        n_head: h,
        n_head_kv: hkv,
        head_dim: d,
        n_ff: f,
        n_ctx,
    } = m;
    let name = match arch {
        ZeroArch::Llama => "llama",
        ZeroArch::Qwen3Moe { .. } => "qwen3moe",
        ZeroArch::Gemma2 { .. } => "gemma2",
        ZeroArch::Gemma3 { .. } => "gemma3",
    };
    let n_vocab = n_vocab.max(BYTE_TOKENS);
    let u = |v: u64| Value::U32(v as u32);
    let key = |k: &str| format!("{name}.{k}");
    let mut w = Writer::new()
        .kv("general.architecture", Value::String(name.into()))
        .kv("general.name", Value::String(format!("zero-{name}-test")))
        .kv("general.file_type", Value::U32(1))
        .kv(&key("context_length"), u(n_ctx))
        .kv(&key("embedding_length"), u(e))
        .kv(&key("block_count"), u(n_layer))
        .kv(&key("attention.head_count"), u(h))
        .kv(&key("attention.head_count_kv"), u(hkv))
        .kv(&key("attention.key_length"), u(d))
        .kv(&key("attention.value_length"), u(d))
        .kv(&key("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    w = match arch {
        ZeroArch::Qwen3Moe { experts, used, ff_exp } => w
            .kv(&key("feed_forward_length"), u(ff_exp * 4))
            .kv(&key("expert_feed_forward_length"), u(ff_exp))
            .kv(&key("expert_count"), u(experts))
            .kv(&key("expert_used_count"), u(used))
            .kv(&key("rope.freq_base"), Value::F32(1e6)),
        ZeroArch::Gemma2 { window } => w
            .kv(&key("feed_forward_length"), u(f))
            .kv(&key("attention.sliding_window"), u(window))
            .kv(&key("attn_logit_softcapping"), Value::F32(50.0))
            .kv(&key("final_logit_softcapping"), Value::F32(30.0)),
        ZeroArch::Gemma3 { window } => w
            .kv(&key("feed_forward_length"), u(f))
            .kv(&key("attention.sliding_window"), u(window))
            .kv(&key("rope.freq_base"), Value::F32(1e6)),
        ZeroArch::Llama => {
            w.kv(&key("feed_forward_length"), u(f)).kv(&key("rope.dimension_count"), u(d))
        }
    };
    w = byte_vocab(w, n_vocab);

    let m16 = |name: String, dims: &[u64]| TensorData::header_only(&name, dims, GgmlType::F16);
    let v32 = |name: String, n: u64| TensorData::header_only(&name, &[n], GgmlType::F32);
    w = w.tensor(m16("token_embd.weight".into(), &[e, n_vocab]));
    w = w.tensor(v32("output_norm.weight".into(), e));
    if matches!(arch, ZeroArch::Llama | ZeroArch::Qwen3Moe { .. }) {
        w = w.tensor(m16("output.weight".into(), &[e, n_vocab]));
    }
    for i in 0..n_layer {
        let b = |t: &str| format!("blk.{i}.{t}");
        w = w
            .tensor(v32(b("attn_norm.weight"), e))
            .tensor(m16(b("attn_q.weight"), &[e, h * d]))
            .tensor(m16(b("attn_k.weight"), &[e, hkv * d]))
            .tensor(m16(b("attn_v.weight"), &[e, hkv * d]))
            .tensor(m16(b("attn_output.weight"), &[h * d, e]));
        if matches!(arch, ZeroArch::Qwen3Moe { .. } | ZeroArch::Gemma3 { .. }) {
            w = w.tensor(v32(b("attn_q_norm.weight"), d)).tensor(v32(b("attn_k_norm.weight"), d));
        }
        if matches!(arch, ZeroArch::Gemma2 { .. } | ZeroArch::Gemma3 { .. }) {
            w = w.tensor(v32(b("post_attention_norm.weight"), e));
        }
        w = w.tensor(v32(b("ffn_norm.weight"), e));
        w = match arch {
            ZeroArch::Qwen3Moe { experts, ff_exp, .. } => w
                .tensor(TensorData::header_only(
                    &b("ffn_gate_inp.weight"),
                    &[e, experts],
                    GgmlType::F32,
                ))
                .tensor(m16(b("ffn_gate_exps.weight"), &[e, ff_exp, experts]))
                .tensor(m16(b("ffn_up_exps.weight"), &[e, ff_exp, experts]))
                .tensor(m16(b("ffn_down_exps.weight"), &[ff_exp, e, experts])),
            _ => w
                .tensor(m16(b("ffn_gate.weight"), &[e, f]))
                .tensor(m16(b("ffn_up.weight"), &[e, f]))
                .tensor(m16(b("ffn_down.weight"), &[f, e])),
        };
        if matches!(arch, ZeroArch::Gemma2 { .. } | ZeroArch::Gemma3 { .. }) {
            w = w.tensor(v32(b("post_ffw_norm.weight"), e));
        }
    }
    w
}
