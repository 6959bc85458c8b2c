//! Fuzz target for the GGUF reader and the layout check, run inside `cargo test` for a fixed
//! number of generated cases (proptest, no fork, no saved failures). Each case takes one of the
//! table's files (a whole model, a model with an unknown tensor type, a cut one, a padded one)
//! and changes bytes and 64-bit words (mostly in the header), cuts it, or grows it. Whatever
//! comes out, reading and checking never panic, and a file the check accepts really holds every
//! tensor's data, of a known type, inside its length.

use gguf::fixtures::{tiny_llama, TinyLlama};
use gguf::{read_header, Limits};
use proptest::collection::vec;
use proptest::prelude::*;
use std::sync::OnceLock;

/// The seeds and the length of each one's header.
fn seeds() -> &'static [(Vec<u8>, usize)] {
    static SEEDS: OnceLock<Vec<(Vec<u8>, usize)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let whole = tiny_llama(TinyLlama { n_layer: 1, ..Default::default() }).to_bytes();
        let unknown = gguf::fixtures::unknown_tensor_type().to_bytes();
        let cut = whole[..whole.len() - 4096].to_vec();
        let mut padded = whole.clone();
        padded.extend([0u8; 40]);
        [whole, unknown, cut, padded]
            .into_iter()
            .map(|b| {
                let h = read_header(&b[..], Limits::default()).unwrap();
                let len = h.header_bytes as usize;
                (b, len)
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Edit {
    Byte { at: u32, in_header: bool, value: u8 },
    Word { at: u32, value: u64 },
    Cut { at: u32 },
    Grow { by: u16 },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<u32>(), prop::bool::weighted(0.8), any::<u8>())
            .prop_map(|(at, in_header, value)| Edit::Byte { at, in_header, value }),
        2 => (any::<u32>(), prop_oneof![Just(0u64), Just(u64::MAX), 0u64..1 << 20, any::<u64>()])
            .prop_map(|(at, value)| Edit::Word { at, value }),
        1 => any::<u32>().prop_map(|at| Edit::Cut { at }),
        1 => (1u16..5000).prop_map(|by| Edit::Grow { by }),
    ]
}

fn apply(bytes: &mut Vec<u8>, header_len: usize, e: &Edit) {
    if bytes.is_empty() {
        return;
    }
    match *e {
        Edit::Byte { at, in_header, value } => {
            let span = if in_header { header_len.min(bytes.len()) } else { bytes.len() };
            let i = at as usize % span.max(1);
            bytes[i] = value;
        }
        Edit::Word { at, value } => {
            let i = at as usize % header_len.min(bytes.len()).max(1);
            let end = (i + 8).min(bytes.len());
            bytes[i..end].copy_from_slice(&value.to_le_bytes()[..end - i]);
        }
        Edit::Cut { at } => bytes.truncate(at as usize % bytes.len()),
        Edit::Grow { by } => bytes.extend(std::iter::repeat_n(0u8, by as usize)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn reading_and_checking_never_panic_and_accept_only_whole_files(
        seed in 0..4usize,
        edits in vec(edit(), 0..6),
    ) {
        let (original, header_len) = &seeds()[seed];
        let mut b = original.clone();
        for e in &edits {
            apply(&mut b, *header_len, e);
        }
        let limits = Limits { max_header_bytes: 1 << 20, ..Limits::default() };
        let len = b.len() as u64;
        if let Ok(h) = read_header(&b[..], limits) {
            if h.check_layout(len).is_ok() {
                for t in &h.tensors {
                    prop_assert!(t.ggml_type.name().is_some(), "{} accepted with type {}", t.name, t.ggml_type.0);
                    let size = t.byte_size().expect("a size for an accepted tensor");
                    prop_assert!(h.data_offset + t.offset + size <= len, "{} ends past the file", t.name);
                }
            }
        }
    }
}

#[test]
fn the_seeds_are_what_they_claim() {
    let verdicts: Vec<bool> = seeds()
        .iter()
        .map(|(b, _)| {
            read_header(&b[..], Limits::default())
                .and_then(|h| h.check_layout(b.len() as u64))
                .is_ok()
        })
        .collect();
    assert_eq!(verdicts, [true, false, false, false], "whole, unknown type, cut, padded");
}
