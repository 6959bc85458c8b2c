//! Reading the header of a 4 GiB model (a sparse file: the weights are holes) must take a few
//! milliseconds and read only the header. The header is shaped like a real 8B model's: 32
//! blocks of 9 tensors and a 128k-token vocabulary with its merges. Baseline, run side by side:
//! parsing the same header from memory, so the ratio is the cost of the file system.
//!
//! cargo bench -p gguf --bench header

use gguf::{
    read_checked_from_path, read_header, read_header_from_path, GgmlType, Limits, TensorData,
    Value, Writer,
};
use std::time::{Duration, Instant};

fn realistic_header() -> Writer {
    let (n_embd, n_ff, n_layer, n_vocab) = (4096u64, 14336u64, 32u64, 128_256u64);
    let mut w = Writer::new()
        .kv("general.architecture", Value::String("llama".into()))
        .kv("general.name", Value::String("Bench 8B".into()))
        .kv("general.file_type", Value::U32(15))
        .kv("llama.block_count", Value::U32(n_layer as u32))
        .kv("llama.context_length", Value::U32(131_072))
        .kv("llama.embedding_length", Value::U32(n_embd as u32))
        .kv("llama.feed_forward_length", Value::U32(n_ff as u32))
        .kv("llama.attention.head_count", Value::U32(32))
        .kv("llama.attention.head_count_kv", Value::U32(8))
        .kv("tokenizer.ggml.model", Value::String("gpt2".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Value::Array((0..n_vocab).map(|i| Value::String(format!("tok{i:06}"))).collect()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            Value::Array((0..n_vocab).map(|_| Value::I32(1)).collect()),
        )
        .kv(
            "tokenizer.ggml.merges",
            Value::Array((0..280_000).map(|i| Value::String(format!("m{i} x{i}"))).collect()),
        );
    let t = |name: String, dims: Vec<u64>, ty: GgmlType| TensorData {
        name,
        dims,
        ggml_type: ty,
        data: vec![],
    };
    w = w.tensor(t("token_embd.weight".into(), vec![n_embd, n_vocab], GgmlType::Q4_K));
    for i in 0..n_layer {
        for (name, dims) in [
            ("attn_norm", vec![n_embd]),
            ("attn_q", vec![n_embd, n_embd]),
            ("attn_k", vec![n_embd, 1024]),
            ("attn_v", vec![n_embd, 1024]),
            ("attn_output", vec![n_embd, n_embd]),
            ("ffn_norm", vec![n_embd]),
            ("ffn_gate", vec![n_embd, n_ff]),
            ("ffn_up", vec![n_embd, n_ff]),
            ("ffn_down", vec![n_ff, n_embd]),
        ] {
            let ty = if dims.len() == 1 { GgmlType::F32 } else { GgmlType::Q4_K };
            w = w.tensor(t(format!("blk.{i}.{name}.weight"), dims, ty));
        }
    }
    w.tensor(t("output.weight".into(), vec![n_embd, n_vocab], GgmlType::Q6_K))
}

fn time(runs: u32, mut f: impl FnMut()) -> (Duration, Duration) {
    f();
    let mut best = Duration::MAX;
    let start = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    (start.elapsed() / runs, best)
}

fn main() {
    let (header, _) = realistic_header().header_bytes();
    let path = std::env::temp_dir().join(format!("gguf-bench-{}.gguf", std::process::id()));
    std::fs::write(&path, &header).unwrap();
    let h = read_header(&header[..], Limits::default()).unwrap();
    let last = h.tensors.last().unwrap();
    let size = h.data_offset + last.offset + last.byte_size().unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(size).unwrap();

    let runs = 20;
    let (file_mean, file_best) = time(runs, || {
        std::hint::black_box(read_header_from_path(&path).unwrap());
    });
    let (mem_mean, mem_best) = time(runs, || {
        std::hint::black_box(read_header(&header[..], Limits::default()).unwrap());
    });
    // The completeness check at import and verify: header + the file's length + the layout.
    let (checked_mean, checked_best) = time(runs, || {
        std::hint::black_box(read_checked_from_path(&path).unwrap());
    });
    let (layout_mean, _) = time(runs, || {
        h.check_layout(size).unwrap();
    });
    let (raw_mean, _) = time(runs, || {
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; header.len()];
        std::io::Read::read_exact(&mut f, &mut buf).unwrap();
        std::hint::black_box(buf);
    });
    println!("raw read of the header bytes: {:.2} ms", raw_mean.as_secs_f64() * 1e3);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "file: {:.2} GiB ({} tensors), header {:.1} MiB, {} metadata keys",
        size as f64 / (1u64 << 30) as f64,
        h.tensors.len(),
        h.header_bytes as f64 / (1 << 20) as f64,
        h.metadata.len()
    );
    println!(
        "read_header_from_path: mean {:.2} ms, best {:.2} ms ({runs} runs)",
        ms(file_mean),
        ms(file_best)
    );
    println!(
        "baseline, same header from memory: mean {:.2} ms, best {:.2} ms",
        ms(mem_mean),
        ms(mem_best)
    );
    println!("ratio file / memory: {:.2}", file_mean.as_secs_f64() / mem_mean.as_secs_f64());
    println!(
        "read_checked_from_path (header + length + layout): mean {:.2} ms, best {:.2} ms; \
         the layout check alone {:.1} µs; ratio checked / plain read {:.3}",
        ms(checked_mean),
        ms(checked_best),
        layout_mean.as_secs_f64() * 1e6,
        checked_mean.as_secs_f64() / file_mean.as_secs_f64()
    );
    println!(
        "budget 10 ms: {}",
        if file_mean <= Duration::from_millis(10) { "within" } else { "EXCEEDED" }
    );
    std::fs::remove_file(&path).unwrap();
}
