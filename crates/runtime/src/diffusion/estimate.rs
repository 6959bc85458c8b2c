//! What an image job takes before it has ever run (the first-run estimate): weights by component
//! and where the offload flags put them, plus the largest working buffer, which grows with the
//! image's pixels. After a job, what sd-cli really allocated ([`super::ledger`]) replaces this
//! for the same model. The constants are here and only here.
//!
//! sd.cpp frees each runner's compute buffer before the next runs (encoder, then the diffusion
//! model, then the VAE), so the working memory is the largest of them, not their sum. On a GPU
//! build, with `w × h` output pixels:
//! - VRAM = diffusion weights + text encoders (unless `--clip-on-cpu`) + VAE (unless
//!   `--vae-on-cpu`) + the largest of sampling ([`SAMPLING_BYTES_PER_PIXEL`] × pixels) and the
//!   decode ([`VAE_DECODE_BYTES_PER_PIXEL`], or [`TAESD_DECODE_BYTES_PER_PIXEL`] with a tiny
//!   decoder) unless the VAE is on the CPU.
//! - With `--offload-to-cpu` the weights live in RAM and only the largest component is on the
//!   GPU at a time.
//! - RAM = what the flags keep on the CPU (and its decode buffer) + [`PROCESS_BASE`].
//!
//! Weights count as on disk: sd.cpp's weight buffers came to 0.97× the files of the test model
//! (the rest is headers and the tokenizer). Without a GPU everything is RAM. Images of a batch
//! run one after another, so the count does not multiply anything.

use super::args::Offload;
use ipc::orchestrator::Footprint;

/// Sampling activations per output pixel: 512 MiB at 512², 2 GiB at 1024² (not measured here:
/// the test model's diffusion buffer is a few MiB).
pub const SAMPLING_BYTES_PER_PIXEL: u64 = 2048;
/// A full VAE's decode without tiling per output pixel: 1 GiB at 512² (not measured here).
pub const VAE_DECODE_BYTES_PER_PIXEL: u64 = 4096;
/// A tiny decoder's (TAESD) decode per output pixel: sd-cli 0.4.7 allocated 1922 bytes per
/// pixel at 64², 128² and 256² for the test model's TAESD.
pub const TAESD_DECODE_BYTES_PER_PIXEL: u64 = 2048;
/// sd-cli itself beyond its buffers: 51–98 MiB measured (peak RSS minus the buffers).
pub const PROCESS_BASE: u64 = 128 << 20;

/// Weights of a model by role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weights {
    pub diffusion: u64,
    pub encoders: u64,
    pub vae: u64,
    /// The decoder is a tiny one (TAESD), whose buffers are half a VAE's.
    pub tiny_decoder: bool,
}

impl Weights {
    /// From `(role, bytes)` of each file: "model"/"diffusion_model" is the diffusion model,
    /// "vae" (or "taesd") the decoder, anything else a text encoder. A single-file model counts as diffusion
    /// weights (its encoders and VAE cannot be told apart without reading it).
    pub fn from_files<'a>(files: impl IntoIterator<Item = (&'a str, u64)>) -> Self {
        let mut w = Self::default();
        for (role, bytes) in files {
            match role {
                "model" | "diffusion_model" => w.diffusion += bytes,
                "vae" => w.vae += bytes,
                "taesd" => {
                    w.vae += bytes;
                    w.tiny_decoder = true;
                }
                _ => w.encoders += bytes,
            }
        }
        w
    }
}

pub fn image_footprint(
    w: Weights,
    offload: Offload,
    width: u32,
    height: u32,
    gpu: bool,
) -> Footprint {
    let pixels = u64::from(width) * u64::from(height);
    let sampling = SAMPLING_BYTES_PER_PIXEL * pixels;
    let per_pixel =
        if w.tiny_decoder { TAESD_DECODE_BYTES_PER_PIXEL } else { VAE_DECODE_BYTES_PER_PIXEL };
    let decode = per_pixel * pixels;
    let (d, e, v) = (w.diffusion, w.encoders, w.vae);
    if !gpu {
        return Footprint {
            ram_bytes: d + e + v + sampling.max(decode) + PROCESS_BASE,
            vram_bytes: 0,
        };
    }
    let mut ram = PROCESS_BASE;
    let mut vram = if offload.vae_on_cpu {
        ram += decode;
        sampling
    } else {
        sampling.max(decode)
    };
    if offload.offload_to_cpu {
        ram += d + e + v;
        vram += d.max(e).max(v);
    } else {
        vram += d;
        for (bytes, on_cpu) in [(e, offload.clip_on_cpu), (v, offload.vae_on_cpu)] {
            if on_cpu {
                ram += bytes;
            } else {
                vram += bytes;
            }
        }
    }
    Footprint { ram_bytes: ram, vram_bytes: vram }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn footprints_follow_the_flags_and_the_size() {
        let sd15 = Weights::from_files([("model", 2 * GIB)]);
        assert_eq!(sd15, Weights { diffusion: 2 * GIB, ..Default::default() });
        let cpu = image_footprint(sd15, Offload::default(), 512, 512, false);
        let px = 512 * 512;
        assert_eq!(cpu.vram_bytes, 0);
        // The decode is the largest working buffer; sampling's is freed before it.
        assert_eq!(cpu.ram_bytes, 2 * GIB + 4096 * px + PROCESS_BASE);
        // On a GPU it all moves there but the process base.
        let gpu = image_footprint(sd15, Offload::default(), 512, 512, true);
        assert_eq!(gpu.vram_bytes, 2 * GIB + 4096 * px);
        assert_eq!(gpu.ram_bytes, PROCESS_BASE);
        // Four times the pixels, four times the working memory.
        let big = image_footprint(sd15, Offload::default(), 1024, 1024, true);
        assert_eq!(big.vram_bytes - 2 * GIB, 4 * (gpu.vram_bytes - 2 * GIB));

        let flux = Weights::from_files([
            ("diffusion_model", 6 * GIB),
            ("t5xxl", 5 * GIB),
            ("clip_l", 200 * MIB),
            ("vae", 160 * MIB),
        ]);
        let clip_cpu = Offload { clip_on_cpu: true, ..Default::default() };
        let f = image_footprint(flux, clip_cpu, 1024, 1024, true);
        assert_eq!(f.ram_bytes, PROCESS_BASE + 5 * GIB + 200 * MIB);
        // The VAE on the CPU: its weights and decode there, sampling's buffer stays.
        let both = Offload { clip_on_cpu: true, vae_on_cpu: true, ..Default::default() };
        let g = image_footprint(flux, both, 1024, 1024, true);
        assert_eq!(f.vram_bytes - g.vram_bytes, 160 * MIB + (4096 - 2048) * 1024 * 1024);
        assert_eq!(g.ram_bytes - f.ram_bytes, 160 * MIB + 4096 * 1024 * 1024);
        // Offloading to the CPU keeps only the largest component on the GPU.
        let off = Offload { offload_to_cpu: true, ..Default::default() };
        let o = image_footprint(flux, off, 1024, 1024, true);
        assert_eq!(o.vram_bytes, 6 * GIB + 4096 * 1024 * 1024);
        assert!(o.ram_bytes > 11 * GIB);
        // A tiny decoder decodes in half a VAE's memory.
        let klein = Weights::from_files([("diffusion_model", GIB), ("taesd", 5 * MIB)]);
        assert!(klein.tiny_decoder);
        let k = image_footprint(klein, Offload::default(), 1024, 1024, false);
        assert_eq!(k.ram_bytes, GIB + 5 * MIB + 2048 * 1024 * 1024 + PROCESS_BASE);
    }
}
