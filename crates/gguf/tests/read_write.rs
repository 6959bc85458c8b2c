//! The reader against files the writer makes, and against hostile variations of them.

use gguf::fixtures::{tiny_llama, TinyLlama};
use gguf::{read_header, Error, GgmlType, Limits, TensorData, Value, Writer};
use std::io::Read;

/// Counts the bytes a reader hands out, to prove the header reader stops at the header.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

fn parse(bytes: &[u8]) -> gguf::Result<gguf::Header> {
    read_header(bytes, Limits::default())
}

#[test]
fn tiny_llama_round_trips_with_typed_accessors() {
    let w = tiny_llama(TinyLlama::default());
    let bytes = w.to_bytes();
    let h = parse(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.architecture(), Some("llama"));
    assert_eq!(h.name(), Some("tiny-llama-test"));
    assert_eq!(h.block_count(), Some(2));
    assert_eq!(h.context_length(), Some(512));
    assert_eq!(h.embedding_length(), Some(64));
    assert_eq!(h.feed_forward_length(), Some(128));
    assert_eq!(h.head_count_per_layer(), Some(vec![4, 4]));
    assert_eq!(h.head_count_kv_per_layer(), Some(vec![4, 4]));
    assert_eq!(h.key_length(), Some(16), "embedding / heads when not given");
    assert_eq!(h.file_type(), Some(0));
    assert_eq!(h.expert_count(), None);
    assert_eq!(h.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().len(), 259);
    assert_eq!(h.tensors.len(), 2 + 9 * 2 + 1);

    // Sizes: the data section holds exactly the tensors' bytes (f32, 32-byte aligned sizes).
    let total = h.tensor_bytes().unwrap();
    assert_eq!(h.data_offset % 32, 0);
    assert_eq!(bytes.len() as u64, h.data_offset + total);
    let (per_block, other) = h.bytes_per_block().unwrap();
    let block = 4 * (2 * 64 + 4 * 64 * 64 + 3 * 64 * 128);
    assert_eq!(per_block, vec![block, block]);
    assert_eq!(other, 4 * (64 * 259 * 2 + 64));
    assert!(bytes.len() < 600_000, "tiny model is {} bytes", bytes.len());
    // Each tensor's data is where its offset says.
    let norm = h.tensors.iter().find(|t| t.name == "blk.0.attn_norm.weight").unwrap();
    let at = (h.data_offset + norm.offset) as usize;
    assert_eq!(&bytes[at..at + 4], &1.0f32.to_le_bytes());
}

#[test]
fn only_the_header_is_read() {
    let bytes = tiny_llama(TinyLlama::default()).to_bytes();
    let mut src = Counting { inner: &bytes[..], read: 0 };
    let h = read_header(&mut src, Limits::default()).unwrap();
    assert_eq!(src.read, h.header_bytes);
    assert!(h.header_bytes < bytes.len() as u64 / 10);
}

#[test]
fn every_value_type_and_per_layer_heads() {
    let w = Writer::new()
        .kv("general.architecture", Value::String("openelm".into()))
        .kv("openelm.block_count", Value::U64(3))
        .kv("openelm.embedding_length", Value::U64(96))
        .kv(
            "openelm.attention.head_count",
            Value::Array(vec![Value::I32(3), Value::I32(4), Value::I32(6)]),
        )
        .kv("openelm.attention.sliding_window", Value::U32(4096))
        .kv("openelm.expert_count", Value::U32(8))
        .kv("openelm.expert_used_count", Value::U32(2))
        .kv("u8", Value::U8(7))
        .kv("i8", Value::I8(-7))
        .kv("u16", Value::U16(700))
        .kv("i16", Value::I16(-700))
        .kv("i64", Value::I64(-1))
        .kv("f64", Value::F64(2.5))
        .kv("bool", Value::Bool(true))
        .kv("nested", Value::Array(vec![Value::Array(vec![Value::U8(1)]), Value::Array(vec![])]))
        .kv("empty", Value::Array(vec![]))
        .kv("general.alignment", Value::U32(64))
        .tensor(TensorData {
            name: "q".into(),
            dims: vec![256, 2],
            ggml_type: GgmlType::Q4_K,
            data: vec![0; 288],
        });
    let h = parse(&w.to_bytes()).unwrap();
    assert_eq!(h.head_count_per_layer(), Some(vec![3, 4, 6]));
    assert_eq!(h.key_length(), Some(32), "first non-zero head count: 96 / 3");
    assert_eq!(h.sliding_window(), Some(4096));
    assert_eq!((h.expert_count(), h.expert_used_count()), (Some(8), Some(2)));
    assert_eq!(h.get("i64").unwrap().as_u64(), None, "negative is not a count");
    assert_eq!(h.get("f64").unwrap().as_f64(), Some(2.5));
    assert_eq!(h.get("bool"), Some(&Value::Bool(true)));
    assert_eq!(h.alignment, 64);
    assert_eq!(h.data_offset % 64, 0);
    assert_eq!(h.tensors[0].byte_size(), Some(288));
    for (k, v) in &w.metadata {
        assert_eq!(h.get(k), Some(v), "{k}");
    }
}

/// A header of one string key whose declared length is `len`.
fn with_string_len(len: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(b"abc");
    b
}

#[test]
fn hostile_headers_are_errors_not_panics_or_huge_allocations() {
    let good = tiny_llama(TinyLlama::default()).to_bytes();
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("not gguf", b"PK\x03\x04rest of a zip".to_vec()),
        ("version 1", [&b"GGUF"[..], &1u32.to_le_bytes()].concat()),
        ("big-endian", [&b"GGUF"[..], &3u32.to_be_bytes()].concat()),
        ("huge string", with_string_len(u64::MAX)),
        ("string past the end", with_string_len(1 << 20)),
    ];
    let mut huge_count = good[..8].to_vec();
    huge_count.extend_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("huge tensor count", huge_count));
    let mut huge_array = Writer::new().kv("a", Value::Array(vec![Value::U8(1)])).header_bytes().0;
    let n = huge_array.len();
    huge_array[n - 9..n - 1].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    cases.push(("huge array", huge_array));
    let mut deep = Value::U8(0);
    for _ in 0..10 {
        deep = Value::Array(vec![deep]);
    }
    cases.push(("deep nesting", Writer::new().kv("d", deep).to_bytes()));
    cases.push(("bad alignment", Writer::new().kv("general.alignment", Value::U32(3)).to_bytes()));
    cases.push((
        "too many dims",
        Writer::new()
            .tensor(TensorData {
                name: "t".into(),
                dims: vec![1; 9],
                ggml_type: GgmlType::F32,
                data: vec![],
            })
            .header_bytes()
            .0,
    ));
    cases.push((
        "overflowing dims",
        Writer::new()
            .tensor(TensorData {
                name: "t".into(),
                dims: vec![u64::MAX, 3],
                ggml_type: GgmlType::F32,
                data: vec![],
            })
            .header_bytes()
            .0,
    ));
    let mut bad_type = Writer::new().kv("k", Value::U8(1)).header_bytes().0;
    let at = 4 + 4 + 8 + 8 + 8 + 1;
    bad_type[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    cases.push(("unknown value type", bad_type));

    for (name, bytes) in cases {
        match parse(&bytes) {
            Ok(h) => panic!("{name}: parsed as {} tensors", h.tensors.len()),
            Err(e) => assert!(e.is_invalid_file(), "{name}: {e}"),
        }
    }
    assert!(matches!(parse(b"GGUF\x01\0\0\0"), Err(Error::UnsupportedVersion(1))));
}

/// Deterministic fuzzing: every truncation of a real header, and thousands of random byte
/// changes, must give a header or an error, never a panic.
#[test]
fn mutated_headers_never_panic() {
    let (header, _) = tiny_llama(TinyLlama { n_layer: 1, ..Default::default() }).header_bytes();
    for len in 0..header.len() {
        assert!(parse(&header[..len]).is_err(), "truncated at {len} parsed");
    }
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let limits = Limits { max_header_bytes: 1 << 20, ..Limits::default() };
    for _ in 0..3000 {
        let mut b = header.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % b.len() as u64) as usize;
            b[at] = next() as u8;
        }
        let _ = read_header(&b[..], limits);
    }
}

/// A file the way `std::fs` would see it: header read, then checked against its length.
fn check(bytes: &[u8]) -> gguf::Result<gguf::Header> {
    let h = parse(bytes)?;
    h.check_layout(bytes.len() as u64)?;
    Ok(h)
}

fn tensor(name: &str, dims: &[u64], ty: GgmlType, offset: u64) -> gguf::TensorInfo {
    gguf::TensorInfo { name: name.into(), dims: dims.to_vec(), ggml_type: ty, offset }
}

fn header_with(tensors: Vec<gguf::TensorInfo>) -> gguf::Header {
    gguf::Header {
        version: 3,
        metadata: vec![],
        tensors,
        alignment: 32,
        data_offset: 64,
        header_bytes: 50,
    }
}

/// Cut at every 4 KiB, in the header and in the weights: never loadable, and the error says
/// where the file ends and where it should.
#[test]
fn a_cut_model_is_refused_at_every_4k_and_the_whole_one_passes() {
    let bytes = tiny_llama(TinyLlama::default()).to_bytes();
    let h = check(&bytes).expect("the intact model");
    let mut in_header = 0;
    for cut in (0..bytes.len()).step_by(4096).skip(1) {
        match check(&bytes[..cut]) {
            Err(Error::Truncated(_)) => in_header += 1,
            Err(e @ Error::TooShort { .. }) => {
                let text = e.to_string();
                assert!(cut as u64 >= h.header_bytes, "cut {cut}: {text}");
                assert!(text.contains(&format!("is {cut} bytes")), "{text}");
                assert!(text.contains(&format!("end at byte {}", bytes.len())), "{text}");
            }
            other => panic!("cut at {cut} of {}: {other:?}", bytes.len()),
        }
    }
    assert!(in_header > 0 && bytes.len() / 4096 > in_header + 50, "both parts were cut");
}

#[test]
fn layout_table() {
    let f32s = |n: u64| 4 * n;
    let good = tiny_llama(TinyLlama { n_layer: 1, ..Default::default() });
    let bytes = good.to_bytes();
    let h = parse(&bytes).unwrap();
    let last = h.tensors.last().unwrap();
    let unpadded_end = h.data_offset + last.offset + last.byte_size().unwrap();

    let unknown = gguf::fixtures::unknown_tensor_type().to_bytes();

    type Case = (&'static str, gguf::Result<gguf::Header>, &'static str);
    let cases: Vec<Case> = vec![
        ("whole file", check(&bytes), ""),
        (
            "last tensor's padding left off",
            {
                let h = parse(&bytes).unwrap();
                h.check_layout(unpadded_end).map(|_| h)
            },
            "",
        ),
        (
            "one byte past the padding",
            {
                let mut b = bytes.clone();
                b.push(0);
                check(&b)
            },
            "1 bytes follow that no tensor describes",
        ),
        ("one byte short", check(&bytes[..bytes.len() - 1]), "cut short"),
        ("unknown ggml type", check(&unknown), "tensor strange.weight has ggml type 9999"),
        (
            "a removed type (Q4_0_4_4)",
            header_with(vec![tensor("t", &[32], GgmlType(31), 0)])
                .check_layout(1 << 20)
                .map(|_| h.clone()),
            "ggml type 31",
        ),
        (
            "row not whole blocks",
            header_with(vec![tensor("q", &[100], GgmlType::Q4_K, 0)])
                .check_layout(1 << 20)
                .map(|_| h.clone()),
            "not a whole number of Q4_K blocks",
        ),
        (
            "second tensor overlaps the first",
            header_with(vec![
                tensor("a", &[16], GgmlType::F32, 0),
                tensor("b", &[16], GgmlType::F32, 32),
            ])
            .check_layout(64 + 128)
            .map(|_| h.clone()),
            "starts at offset 32 of the data section, where 64",
        ),
        (
            "gap between tensors",
            header_with(vec![
                tensor("a", &[8], GgmlType::F32, 0),
                tensor("b", &[8], GgmlType::F32, 64),
            ])
            .check_layout(64 + 96)
            .map(|_| h.clone()),
            "where 32 was expected",
        ),
        (
            "size beyond any file",
            header_with(vec![tensor("huge", &[1 << 40, 1 << 22], GgmlType::F32, 0)])
                .check_layout(u64::MAX)
                .map(|_| h.clone()),
            "run past any file size",
        ),
        ("no tensors, header only", header_with(vec![]).check_layout(50).map(|_| h.clone()), ""),
        ("no tensors, padded header", header_with(vec![]).check_layout(64).map(|_| h.clone()), ""),
        ("no tensors, more", header_with(vec![]).check_layout(65).map(|_| h.clone()), "follow"),
        (
            "packed as llama.cpp packs",
            header_with(vec![
                tensor("a", &[8], GgmlType::F32, 0),
                tensor("b", &[256], GgmlType::Q4_K, 32),
                tensor("c", &[3], GgmlType::F32, 32 + 160),
            ])
            .check_layout(64 + 192 + f32s(3))
            .map(|_| h.clone()),
            "",
        ),
    ];
    for (name, got, want) in cases {
        match (got, want) {
            (Ok(_), "") => {}
            (Ok(_), want) => panic!("{name}: accepted, wanted an error with {want:?}"),
            (Err(e), "") => panic!("{name}: refused: {e}"),
            (Err(e), want) => {
                assert!(e.is_invalid_file(), "{name}: {e}");
                assert!(e.to_string().contains(want), "{name}: {e} (wanted {want:?})");
            }
        }
    }
}

/// The zero-weight models of each architecture: a sparse file exactly as long as its tensors,
/// whole by the loader's layout rules, with the keys the estimate reads.
#[test]
fn zero_models_are_whole_sparse_files() {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    let dir = std::env::temp_dir().join(format!("gguf-zero-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = ZeroModel {
        arch: ZeroArch::Llama,
        n_vocab: 1000,
        n_embd: 64,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_ff: 128,
        n_ctx: 2048,
    };
    for arch in [
        ZeroArch::Llama,
        ZeroArch::Qwen3Moe { experts: 8, used: 2, ff_exp: 32 },
        ZeroArch::Gemma2 { window: 256 },
        ZeroArch::Gemma3 { window: 256 },
    ] {
        let w = zero_model(ZeroModel { arch, ..base });
        let path = dir.join("m.gguf");
        w.write_sparse(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), w.file_len(), "{arch:?}");
        let h = gguf::read_checked_from_path(&path).unwrap();
        assert_eq!(h.block_count(), Some(3), "{arch:?}");
        assert_eq!(h.get("tokenizer.ggml.tokens").and_then(|v| v.array_len()), Some(1000));
        match arch {
            ZeroArch::Qwen3Moe { .. } => assert_eq!(h.expert_used_count(), Some(2)),
            ZeroArch::Gemma2 { .. } | ZeroArch::Gemma3 { .. } => {
                assert_eq!(h.sliding_window(), Some(256))
            }
            ZeroArch::Llama => assert!(h.tensors.iter().any(|t| t.name == "output.weight")),
        }
    }
    // A writer with data cannot be written sparse.
    let tiny = gguf::fixtures::tiny_llama(Default::default());
    assert!(tiny.write_sparse(&dir.join("t.gguf")).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn expert_tensors_are_told_from_dense_ones_as_llama_cpp_does() {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    let info = |name: &str| gguf::TensorInfo {
        name: name.into(),
        dims: vec![1],
        ggml_type: GgmlType::F32,
        offset: 0,
    };
    #[rustfmt::skip]
    let table = [
        ("blk.0.ffn_up_exps.weight", true),
        ("blk.12.ffn_down_exps.weight", true),
        ("blk.3.ffn_gate_exps.weight", true),
        ("blk.3.ffn_gate_up_exps.weight", true),
        ("blk.3.ffn_up_chexps.weight", true),
        ("blk.3.ffn_down_exps.bias", true),
        ("blk.3.ffn_gate_inp.weight", false), // the router stays with the layer
        ("blk.3.ffn_up_shexp.weight", false), // shared experts too
        ("blk.3.ffn_up.weight", false),
        ("blk.3.attn_q.weight", false),
        ("token_embd.weight", false),
        ("ffn_up_exps.weight", false),
    ];
    for (name, expert) in table {
        assert_eq!(info(name).is_expert(), expert, "{name}");
    }
    let model = |arch| ZeroModel {
        arch,
        n_vocab: 300,
        n_embd: 64,
        n_layer: 3,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        n_ff: 128,
        n_ctx: 512,
    };
    let header = |arch| {
        let (bytes, _) = zero_model(model(arch)).header_bytes();
        parse(&bytes).unwrap()
    };
    // Three f16 expert matrices of 64 × 32 × 8 per block.
    let moe = header(ZeroArch::Qwen3Moe { experts: 8, used: 2, ff_exp: 32 });
    assert_eq!(moe.expert_bytes_per_block().unwrap(), vec![3 * 64 * 32 * 8 * 2; 3]);
    let (per, _) = moe.bytes_per_block().unwrap();
    assert!(per[0] > 3 * 64 * 32 * 8 * 2, "the block holds attention and the router too");
    assert_eq!(header(ZeroArch::Llama).expert_bytes_per_block().unwrap(), vec![0; 3]);
    // The token embedding (300 × 64 f16), and whether the output layer is a copy of it: a
    // llama has its own output.weight, Gemma 2 reuses the embedding.
    assert_eq!(header(ZeroArch::Llama).embedding_bytes(), (300 * 64 * 2, false));
    let gemma = header(ZeroArch::Gemma2 { window: 128 });
    assert_eq!(gemma.embedding_bytes(), (300 * 64 * 2, true));
}

/// A remote reader asks for as many bytes as `read_header_prefix` says the header spans at
/// least, plus a little: the bound must never pass the header's end (or more than the header
/// would be fetched), and must grow fast enough that a header with a large vocabulary takes a
/// few requests, not one per block.
#[test]
fn a_prefix_bounds_the_header_from_below_and_few_rounds_read_it() {
    use gguf::fixtures::{zero_model, ZeroArch, ZeroModel};
    use gguf::{read_header_prefix, Prefix};
    const AHEAD: usize = 64 << 10;
    let big_vocab = ZeroModel::big_vocabulary(150_000);
    let gemma = ZeroModel { arch: ZeroArch::Gemma3 { window: 512 }, n_vocab: 262_144, ..big_vocab };
    let cases = [
        ("tiny", tiny_llama(TinyLlama::default()).to_bytes(), 2),
        ("150k vocabulary", zero_model(big_vocab).header_bytes().0, 10),
        ("262k vocabulary", zero_model(gemma).header_bytes().0, 10),
    ];
    for (name, bytes, most_rounds) in cases {
        let end = parse(&bytes).unwrap().header_bytes as usize;
        // At prefixes all through the header: more than the prefix, never past the end.
        for p in (0..end).step_by((end / 100).max(1)) {
            match read_header_prefix(&bytes[..p], Limits::default()) {
                Err(Prefix::More(n)) => {
                    let n = n as usize;
                    assert!(n > p && n <= end, "{name}: at {p} of {end} the bound is {n}");
                }
                other => panic!("{name}: at {p} of {end}: {other:?}"),
            }
        }
        // The rounds a remote reader takes: each asks up to the bound and 64 KiB more.
        let (mut have, mut rounds) = (0usize, 0);
        let header = loop {
            rounds += 1;
            match read_header_prefix(&bytes[..have], Limits::default()) {
                Ok(h) => break h,
                Err(Prefix::More(n)) => have = (n as usize + AHEAD).min(bytes.len()),
                Err(Prefix::Invalid(e)) => panic!("{name}: {e}"),
            }
        };
        assert_eq!(header.header_bytes as usize, end);
        assert!(have <= end + AHEAD, "{name}: read {have} for a header of {end}");
        assert!(rounds <= most_rounds, "{name}: {rounds} rounds for {end} bytes");
        eprintln!("{name}: {end} header bytes in {rounds} rounds, {} read past it", have - end);
    }
    // Not GGUF, or a count over the limits: said at once, not asked for more.
    assert!(matches!(
        read_header_prefix(b"<html>not a model", Limits::default()),
        Err(Prefix::Invalid(Error::NotGguf(_)))
    ));
}
