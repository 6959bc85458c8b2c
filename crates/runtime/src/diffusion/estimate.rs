//! What an image job takes, before it runs: weights by component and where the offload flags put
//! them, plus working memory that grows with the image's pixels. The constants are here and only
//! here; they are rough (sd.cpp's compute buffers depend on the model family) and err high.
//!
//! On a GPU build, with `w × h` output pixels:
//! - VRAM = diffusion weights + text encoders (unless `--clip-on-cpu`) + VAE (unless
//!   `--vae-on-cpu`), each × [`WEIGHT_OVERHEAD`], + [`SAMPLING_BYTES_PER_PIXEL`] × pixels
//!   \+ [`VAE_DECODE_BYTES_PER_PIXEL`] × pixels (unless the VAE is on the CPU).
//! - With `--offload-to-cpu` the weights live in RAM and only the largest component is on the
//!   GPU at a time.
//! - RAM = what the flags keep on the CPU (and its decode buffer) + [`PROCESS_BASE`].
//!
//! Without a GPU everything is RAM. Images of a batch run one after another, so the count does
//! not multiply anything.

use super::args::Offload;
use ipc::orchestrator::Footprint;

/// Weights in memory take a little more than on disk (alignment, conversions).
pub const WEIGHT_OVERHEAD: f64 = 1.1;
/// Sampling activations per output pixel: 512 MiB at 512², 2 GiB at 1024².
pub const SAMPLING_BYTES_PER_PIXEL: u64 = 2048;
/// The VAE decode without tiling per output pixel: 1 GiB at 512².
pub const VAE_DECODE_BYTES_PER_PIXEL: u64 = 4096;
/// sd-cli itself, its buffers and the PNG.
pub const PROCESS_BASE: u64 = 256 << 20;

/// Weights of a model by role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weights {
    pub diffusion: u64,
    pub encoders: u64,
    pub vae: u64,
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
                "vae" | "taesd" => w.vae += bytes,
                _ => w.encoders += bytes,
            }
        }
        w
    }
}

fn scaled(bytes: u64) -> u64 {
    (bytes as f64 * WEIGHT_OVERHEAD) as u64
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
    let decode = VAE_DECODE_BYTES_PER_PIXEL * pixels;
    let (d, e, v) = (scaled(w.diffusion), scaled(w.encoders), scaled(w.vae));
    if !gpu {
        return Footprint {
            ram_bytes: d + e + v + sampling + decode + PROCESS_BASE,
            vram_bytes: 0,
        };
    }
    let mut ram = PROCESS_BASE;
    let mut vram = sampling;
    if offload.vae_on_cpu {
        ram += decode;
    } else {
        vram += decode;
    }
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
        assert_eq!(sd15, Weights { diffusion: 2 * GIB, encoders: 0, vae: 0 });
        let cpu = image_footprint(sd15, Offload::default(), 512, 512, false);
        let px = 512 * 512;
        assert_eq!(cpu.vram_bytes, 0);
        assert_eq!(cpu.ram_bytes, scaled(2 * GIB) + 6144 * px + PROCESS_BASE);
        // On a GPU it all moves there but the process base.
        let gpu = image_footprint(sd15, Offload::default(), 512, 512, true);
        assert_eq!(gpu.vram_bytes, scaled(2 * GIB) + 6144 * px);
        assert_eq!(gpu.ram_bytes, PROCESS_BASE);
        // Four times the pixels, four times the working memory.
        let big = image_footprint(sd15, Offload::default(), 1024, 1024, true);
        assert_eq!(big.vram_bytes - scaled(2 * GIB), 4 * (gpu.vram_bytes - scaled(2 * GIB)));

        let flux = Weights::from_files([
            ("diffusion_model", 6 * GIB),
            ("t5xxl", 5 * GIB),
            ("clip_l", 200 * MIB),
            ("vae", 160 * MIB),
        ]);
        let clip_cpu = Offload { clip_on_cpu: true, ..Default::default() };
        let f = image_footprint(flux, clip_cpu, 1024, 1024, true);
        assert_eq!(f.ram_bytes, PROCESS_BASE + scaled(5 * GIB + 200 * MIB));
        let both = Offload { clip_on_cpu: true, vae_on_cpu: true, ..Default::default() };
        let g = image_footprint(flux, both, 1024, 1024, true);
        assert_eq!(f.vram_bytes - g.vram_bytes, scaled(160 * MIB) + 4096 * 1024 * 1024);
        // Offloading to the CPU keeps only the largest component on the GPU.
        let off = Offload { offload_to_cpu: true, ..Default::default() };
        let o = image_footprint(flux, off, 1024, 1024, true);
        assert_eq!(o.vram_bytes, scaled(6 * GIB) + 6144 * 1024 * 1024);
        assert!(o.ram_bytes > scaled(11 * GIB));
    }
}
