//! Small real models for tests: a llama-architecture GGUF that llama-server can load.

use crate::{TensorData, Value, Writer};

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

/// A llama model with a byte-level vocabulary (`<unk>`, `<s>`, `</s>` and the 256 `<0xNN>`
/// tokens) and f32 weights drawn from N(0, 0.02). About 470 KB at the default shape; it
/// generates gibberish, which is all a test of the plumbing needs.
pub fn tiny_llama(shape: TinyLlama) -> Writer {
    let TinyLlama { n_embd, n_layer, n_head, n_ff, n_ctx, seed } = shape;
    let mut tokens = vec!["<unk>".to_owned(), "<s>".to_owned(), "</s>".to_owned()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    let n_vocab = tokens.len() as u64;
    let token_type: Vec<Value> = (0..n_vocab)
        .map(|i| {
            Value::I32(match i {
                0 => 2,
                1 | 2 => 3,
                _ => 6,
            })
        })
        .collect();

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
        .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .kv("tokenizer.ggml.model", Value::String("llama".into()))
        .kv("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect()))
        .kv("tokenizer.ggml.scores", Value::Array((0..n_vocab).map(|_| Value::F32(0.0)).collect()))
        .kv("tokenizer.ggml.token_type", Value::Array(token_type))
        .kv("tokenizer.ggml.bos_token_id", Value::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Value::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", Value::U32(0));

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
