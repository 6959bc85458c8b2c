//! The image side of the memory ledger against the real sd-cli (`GENAI_TEST_SD_CLI`, built by
//! `scripts/build-sd-cli`) on the tiny Flux.2 [klein] model `crates/gguf` writes, at three sizes:
//! what sd-cli allocated (its own buffer lines: weights + the largest compute buffer), the
//! first-run estimate (`diffusion/estimate.rs`, before any run of the model), and the ledger's
//! figure for the size scaled from the nearest other size measured (what the next job of a new
//! size is sized by). The process's own memory (`PROCESS_BASE`) is in neither column.
//!
//! GENAI_TEST_SD_CLI=$(scripts/build-sd-cli) cargo bench -p runtime --bench image_memory

use runtime::diffusion::args::{Offload, SdImage, SdModel};
use runtime::diffusion::estimate::{image_footprint, Weights, PROCESS_BASE};
use runtime::diffusion::ledger::{Allocation, BufferLines, Ledger};
use std::path::PathBuf;

const SIZES: [u32; 3] = [64, 128, 256];

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn pct(est: u64, measured: u64) -> String {
    let e = (est as f64 - measured as f64) / measured as f64 * 100.0;
    format!("{}{:.1} %", if e < 0.0 { "−" } else { "+" }, e.abs())
}

fn main() {
    let Some(sd) = std::env::var_os("GENAI_TEST_SD_CLI").map(PathBuf::from) else {
        eprintln!("GENAI_TEST_SD_CLI must name an sd-cli (scripts/build-sd-cli)");
        std::process::exit(2);
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    rt.unwrap().block_on(async {
        let dir = std::env::temp_dir().join(format!("genai-bench-img-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&dir).unwrap();
        let weights = Weights::from_files(files.iter().map(|(r, _, n)| (r.as_str(), *n)));
        let mut measured: Vec<Allocation> = Vec::new();
        for size in SIZES {
            let image = SdImage {
                model: SdModel::Components(
                    files.iter().map(|(r, p, _)| (r.clone(), p.clone())).collect(),
                ),
                prompt: "a lighthouse".into(),
                negative_prompt: None,
                width: size,
                height: size,
                steps: 2,
                cfg_scale: 1.0,
                seed: 42,
                sampler: Some("euler".into()),
                threads: None,
                offload: Offload::default(),
                output: String::new(),
            };
            let (_tx, cancel) = tokio::sync::watch::channel(false);
            let mut buffers = BufferLines::default();
            runtime::diffusion::job::run(&sd, &image, 1, &dir, cancel, |_| {}, |l| {
                buffers.feed(&runtime::diffusion::progress::strip_ansi(l));
            })
            .await
            .unwrap();
            measured.push(buffers.allocation(size, size).expect("sd-cli printed no buffer lines"));
        }

        println!("| size | first-run estimate | allocated (sd-cli's lines) | error | ledger, from the nearest other size | error |");
        println!("|---|---|---|---|---|---|");
        let mut worst_ledger = 0f64;
        for (i, size) in SIZES.into_iter().enumerate() {
            let got = measured[i].footprint().ram_bytes;
            let first = image_footprint(weights, Offload::default(), size, size, false).ram_bytes
                - PROCESS_BASE;
            let mut ledger = Ledger::default();
            for (j, a) in measured.iter().enumerate() {
                if j != i {
                    ledger.record("flux2-tiny", Offload::default(), false, a.clone());
                }
            }
            let (scaled, _) =
                ledger.predict("flux2-tiny", Offload::default(), false, size, size).unwrap();
            let from = scaled.footprint().ram_bytes;
            worst_ledger = worst_ledger.max(((from as f64 - got as f64) / got as f64).abs());
            println!(
                "| {size}×{size} | {:.2} MiB | {:.2} MiB | {} | {:.2} MiB | {} |",
                mib(first),
                mib(got),
                pct(first, got),
                mib(from),
                pct(from, got)
            );
        }
        println!("largest ledger error: {:.1} %", worst_ledger * 100.0);
        let _ = std::fs::remove_dir_all(&dir);
    });
}
