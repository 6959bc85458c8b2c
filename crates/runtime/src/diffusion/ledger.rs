//! The image side of the memory ledger: what sd-cli really allocated, read from its own buffer
//! lines (`-v`), kept per model, offload flags and size, and what the next job of that model is
//! sized by.
//!
//! sd.cpp prints, per runner (text encoder, diffusion model, VAE or TAESD):
//! `qwen3 params backend buffer size =  80.45 MB(RAM) (310 tensors)` once the weights are
//! loaded, and `flux compute buffer size: 9.00 MB(RAM)` when it first computes (MB are MiB).
//! Each runner frees its compute buffer before the next runs (the encoder after the prompt, the
//! diffusion model after sampling, the VAE after decoding), so the peak is the weights plus the
//! largest compute buffer, per device.
//!
//! A size not measured yet is sized from the nearest measured one of the same model and flags:
//! the weights and the encoder's buffer stay, the diffusion model's and the VAE's buffers scale
//! with the pixels (they grow with the latent and the image).

use super::args::Offload;
use ipc::orchestrator::Footprint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One buffer a runner holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buffer {
    /// sd.cpp's name of the runner: `qwen3`, `t5`, `clip`, `flux`, `unet`, `vae`, `taesd`, …
    pub runner: String,
    pub bytes: u64,
    /// On the GPU (`VRAM`), else in RAM.
    pub vram: bool,
}

/// What one run allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub width: u32,
    pub height: u32,
    pub params: Vec<Buffer>,
    pub compute: Vec<Buffer>,
}

/// What a runner does, which says how its compute buffer grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Encoder,
    Diffusion,
    Decoder,
}

fn role_of(runner: &str) -> Role {
    let r = runner.to_ascii_lowercase();
    if r.contains("vae") || r.contains("taesd") || r.starts_with("tae") {
        Role::Decoder
    } else if r.starts_with("qwen_image") || r.contains("unet") || r.contains("mmdit") {
        Role::Diffusion
    } else if ["clip", "t5", "qwen", "llm", "gemma", "mistral", "llama", "cond", "te"]
        .iter()
        .any(|p| r.starts_with(p))
    {
        Role::Encoder
    } else {
        Role::Diffusion
    }
}

impl Allocation {
    /// Weights plus the largest compute buffer, per device (buffers only: the process's own
    /// memory is not in any line).
    pub fn footprint(&self) -> Footprint {
        let params =
            |vram| self.params.iter().filter(|b| b.vram == vram).map(|b| b.bytes).sum::<u64>();
        let compute = |vram| {
            self.compute.iter().filter(|b| b.vram == vram).map(|b| b.bytes).max().unwrap_or(0)
        };
        Footprint {
            ram_bytes: params(false) + compute(false),
            vram_bytes: params(true) + compute(true),
        }
    }

    /// The same model at `width` × `height`: the diffusion and decoder buffers scaled by the
    /// pixels, the rest as measured.
    pub fn scaled_to(&self, width: u32, height: u32) -> Allocation {
        let from = u64::from(self.width) * u64::from(self.height);
        let to = u64::from(width) * u64::from(height);
        let compute = self
            .compute
            .iter()
            .map(|b| match role_of(&b.runner) {
                Role::Encoder => b.clone(),
                _ if from == 0 => b.clone(),
                _ => Buffer {
                    bytes: (b.bytes as u128 * to as u128 / from as u128) as u64,
                    ..b.clone()
                },
            })
            .collect();
        Allocation { width, height, params: self.params.clone(), compute }
    }
}

/// Collects the buffer lines of one sd-cli run.
#[derive(Debug, Default)]
pub struct BufferLines {
    params: Vec<Buffer>,
    compute: Vec<Buffer>,
}

impl BufferLines {
    /// Whether `line` was a buffer line (it is kept).
    pub fn feed(&mut self, line: &str) -> bool {
        match parse_line(line) {
            Some((true, b)) => self.params.push(b),
            Some((false, b)) => {
                // A runner that computes again (one compute per image of a batch) reallocates
                // the same buffer: keep its largest.
                match self.compute.iter_mut().find(|c| c.runner == b.runner && c.vram == b.vram) {
                    Some(c) => c.bytes = c.bytes.max(b.bytes),
                    None => self.compute.push(b),
                }
            }
            None => return false,
        }
        true
    }

    /// Whether the weights' lines were seen (a run that loaded the model; a warm backend's
    /// later images show only their compute buffers).
    pub fn has_weights(&self) -> bool {
        !self.params.is_empty()
    }

    /// The run's allocation, when sd-cli said anything about it.
    pub fn allocation(&self, width: u32, height: u32) -> Option<Allocation> {
        if self.params.is_empty() && self.compute.is_empty() {
            return None;
        }
        // Weights are loaded once per run; a batch repeats nothing.
        let mut params: Vec<Buffer> = Vec::new();
        for b in &self.params {
            if !params.iter().any(|p| p.runner == b.runner && p.vram == b.vram) {
                params.push(b.clone());
            }
        }
        Some(Allocation { width, height, params, compute: self.compute.clone() })
    }
}

/// `(is params, buffer)` of a buffer line.
fn parse_line(line: &str) -> Option<(bool, Buffer)> {
    let (before, after, params) =
        if let Some((b, a)) = line.split_once(" params backend buffer size =") {
            (b, a, true)
        } else if let Some((b, a)) = line.split_once(" compute buffer size:") {
            (b, a, false)
        } else {
            return None;
        };
    let runner = before.split_whitespace().last()?.to_owned();
    let after = after.trim_start();
    let mb_at = after.find("MB")?;
    let mib: f64 = after[..mb_at].trim().parse().ok()?;
    let device = after[mb_at + 2..].trim_start().strip_prefix('(')?.split(')').next()?;
    let vram = match device {
        "RAM" => false,
        "VRAM" => true,
        _ => return None,
    };
    if !mib.is_finite() || mib < 0.0 {
        return None;
    }
    Some((params, Buffer { runner, bytes: (mib * 1048576.0).round() as u64, vram }))
}

/// Allocations kept per model and offload flags, a few sizes each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// `model id` + `|` + the flags' key → allocations, oldest first.
    entries: BTreeMap<String, Vec<Allocation>>,
}

/// Sizes kept per model and flags.
pub const SIZES_KEPT: usize = 12;

fn key(model_id: &str, offload: Offload, gpu: bool) -> String {
    let flag = |on: bool, c: char| if on { c } else { '-' };
    format!(
        "{model_id}|{}{}{}{}{}",
        flag(gpu, 'g'),
        flag(offload.clip_on_cpu, 'c'),
        flag(offload.vae_on_cpu, 'v'),
        flag(offload.offload_to_cpu, 'o'),
        flag(offload.diffusion_fa, 'f')
    )
}

impl Ledger {
    pub fn record(&mut self, model_id: &str, offload: Offload, gpu: bool, a: Allocation) {
        let list = self.entries.entry(key(model_id, offload, gpu)).or_default();
        list.retain(|x| (x.width, x.height) != (a.width, a.height));
        list.push(a);
        if list.len() > SIZES_KEPT {
            list.remove(0);
        }
    }

    /// What a job of `width` × `height` will allocate, from the same size measured before or
    /// scaled from the nearest one (in pixels); `None` before any run of this model and flags.
    /// The flag says whether this very size was measured.
    pub fn predict(
        &self,
        model_id: &str,
        offload: Offload,
        gpu: bool,
        width: u32,
        height: u32,
    ) -> Option<(Allocation, bool)> {
        let list = self.entries.get(&key(model_id, offload, gpu))?;
        if let Some(a) = list.iter().find(|a| (a.width, a.height) == (width, height)) {
            return Some((a.clone(), true));
        }
        let px = |w: u32, h: u32| i128::from(w) * i128::from(h);
        let near = list.iter().min_by_key(|a| (px(a.width, a.height) - px(width, height)).abs())?;
        Some((near.scaled_to(width, height), false))
    }

    /// Drops what is kept of a model (it was deleted or replaced).
    pub fn forget(&mut self, model_id: &str) {
        let prefix = format!("{model_id}|");
        self.entries.retain(|k, _| !k.starts_with(&prefix));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// sd-cli 0.4.7's lines for the tiny Flux.2 [klein] model at 64², 128² and 256² (recorded
    /// with `-v`, CPU build).
    fn run(size: u32) -> Allocation {
        let (flux, taesd) = match size {
            64 => ("5.82", "7.51"),
            128 => ("6.42", "30.03"),
            _ => ("9.00", "120.13"),
        };
        let lines = [
            "[DEBUG] ggml_extend.hpp:2580 - qwen3 params backend buffer size =  80.45 MB(RAM) (310 tensors)".to_owned(),
            "[DEBUG] ggml_extend.hpp:2580 - flux params backend buffer size =   3.91 MB(RAM) (25 tensors)".into(),
            "[DEBUG] ggml_extend.hpp:2580 - taesd params backend buffer size =   2.56 MB(RAM) (79 tensors)".into(),
            "[INFO ] stable-diffusion.cpp:858  - total params memory size = 86.92MB (VRAM 0.00MB, RAM 86.92MB): text_encoders 80.45MB(RAM), diffusion_model 3.91MB(RAM), vae 2.56MB(RAM), controlnet 0.00MB(VRAM), pmid 0.00MB(RAM)".into(),
            "[DEBUG] ggml_extend.hpp:1921 - qwen3 compute buffer size: 31.50 MB(RAM)".into(),
            format!("[DEBUG] ggml_extend.hpp:1921 - flux compute buffer size: {flux} MB(RAM)"),
            format!("[DEBUG] ggml_extend.hpp:1921 - taesd compute buffer size: {taesd} MB(RAM)"),
            "  |==================================================| 2/2 - 1.52it/s".into(),
        ];
        let mut b = BufferLines::default();
        let kept: Vec<bool> = lines.iter().map(|l| b.feed(l)).collect();
        assert_eq!(kept, [true, true, true, false, true, true, true, false]);
        b.allocation(size, size).unwrap()
    }

    fn mib(bytes: u64) -> f64 {
        bytes as f64 / MIB as f64
    }

    #[test]
    fn buffer_lines_parse_into_weights_plus_the_largest_compute_buffer() {
        let a = run(64);
        assert_eq!(a.params.len(), 3);
        let qwen3 = (80.45f64 * 1048576.0).round() as u64;
        assert_eq!(a.params[0], Buffer { runner: "qwen3".into(), bytes: qwen3, vram: false });
        let f = a.footprint();
        // 86.92 MiB of weights + the encoder's 31.50 (the largest at 64²).
        assert!((mib(f.ram_bytes) - (80.45 + 3.91 + 2.56 + 31.50)).abs() < 0.01, "{f:?}");
        assert_eq!(f.vram_bytes, 0);
        // At 256² the TAESD decode is the largest.
        let f = run(256).footprint();
        assert!((mib(f.ram_bytes) - (86.92 + 120.13)).abs() < 0.01, "{f:?}");

        // A GPU run: params and compute per device.
        let mut b = BufferLines::default();
        for l in [
            "flux params backend buffer size =  6000.00 MB(VRAM) (800 tensors)",
            "t5 params backend buffer size =  4500.00 MB(RAM) (200 tensors)",
            "t5 compute buffer size: 20.00 MB(RAM)",
            "flux compute buffer size: 1200.00 MB(VRAM)",
            "flux compute buffer size: 1100.00 MB(VRAM)",
            "vae compute buffer size: 1600.00 MB(VRAM)",
            "vae compute buffer size: nonsense MB(VRAM)",
            "clip compute buffer size: 3.00 MB(DISK)",
        ] {
            b.feed(l);
        }
        let f = b.allocation(1024, 1024).unwrap().footprint();
        assert_eq!((f.ram_bytes, f.vram_bytes), ((4500 + 20) * MIB, (6000 + 1600) * MIB));
        assert!(BufferLines::default().allocation(1, 1).is_none());
    }

    /// The real sd-cli's whole `-v` output at 64² (the transcript `progress.rs` also reads) gives
    /// the same allocation as its lines above.
    #[test]
    fn the_recorded_transcript_gives_the_same_allocation() {
        const RECORDED: &[u8] =
            include_bytes!("../../tests/fixtures/sd-cli-0.4.7-flux2-tiny.stdout");
        let mut b = BufferLines::default();
        let mut split = crate::process::LineSplitter::default();
        let mut feed = |l: String| {
            b.feed(&super::super::progress::strip_ansi(&l));
        };
        split.push(RECORDED, &mut feed);
        split.finish(&mut feed);
        assert_eq!(b.allocation(64, 64).unwrap(), run(64));
    }

    #[test]
    fn a_size_not_measured_is_scaled_from_the_nearest_by_role() {
        let roles = [
            ("qwen3", Role::Encoder),
            ("t5", Role::Encoder),
            ("clip", Role::Encoder),
            ("flux", Role::Diffusion),
            ("unet", Role::Diffusion),
            ("qwen_image", Role::Diffusion),
            ("wan", Role::Diffusion),
            ("vae", Role::Decoder),
            ("taesd", Role::Decoder),
        ];
        for (name, role) in roles {
            assert_eq!(role_of(name), role, "{name}");
        }
        let mut l = Ledger::default();
        let off = Offload::default();
        assert!(l.predict("flux2", off, false, 128, 128).is_none());
        l.record("flux2", off, false, run(128));
        // Measured sizes are exact; others scale the TAESD and diffusion buffers by the pixels.
        for size in [64, 256] {
            let (p, exact) = l.predict("flux2", off, false, size, size).unwrap();
            assert!(!exact);
            let (got, want) = (p.footprint().ram_bytes, run(size).footprint().ram_bytes);
            let err = (got as f64 - want as f64) / want as f64;
            assert!(err.abs() < 0.04, "{size}: {} vs {} MiB", mib(got), mib(want));
        }
        let (p, exact) = l.predict("flux2", off, false, 128, 128).unwrap();
        assert!(exact && p == run(128));
        // Other flags or another model: nothing known.
        let cpu_clip = Offload { clip_on_cpu: true, ..off };
        assert!(l.predict("flux2", cpu_clip, false, 128, 128).is_none());
        assert!(l.predict("flux2", off, true, 128, 128).is_none());
        assert!(l.predict("sdxl", off, false, 128, 128).is_none());
        // The nearest size wins; a size measured again replaces the old figure.
        l.record("flux2", off, false, run(256));
        let (p, _) = l.predict("flux2", off, false, 230, 230).unwrap();
        assert_eq!((p.width, p.compute[2].bytes), (230, run(256).compute[2].bytes * 52900 / 65536));
        l.record("flux2", off, false, run(256));
        assert_eq!(l.entries.values().next().unwrap().len(), 2);
        for s in 0..20 {
            l.record("flux2", off, false, Allocation { width: 300 + s, height: 300, ..run(64) });
        }
        assert_eq!(l.entries.values().next().unwrap().len(), SIZES_KEPT);
        l.forget("flux2");
        assert!(l.predict("flux2", off, false, 128, 128).is_none());
    }
}
