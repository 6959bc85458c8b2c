//! The sd-cli command line for one image (a pure function, table-tested, and checked against
//! the real sd-cli's argument parser by `tests/real_sd_cli.rs`).

use crate::{Result, RuntimeError};

pub use ipc::diffusion::SAMPLERS;

/// Component roles of a multi-file model, in the order their flags are given.
pub const COMPONENT_ORDER: &[(&str, &str)] = &[
    ("diffusion_model", "--diffusion-model"),
    ("clip_l", "--clip_l"),
    ("clip_g", "--clip_g"),
    ("t5xxl", "--t5xxl"),
    ("llm", "--llm"),
    ("llm_vision", "--llm_vision"),
    ("vae", "--vae"),
    // A tiny autoencoder (TAESD) that decodes instead of the VAE: faster, a little less exact.
    ("taesd", "--taesd"),
];

/// The model files: one file, or the components of a multi-file model by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdModel {
    Single(String),
    Components(Vec<(String, String)>),
}

/// Where parts of the model run when VRAM is short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    pub clip_on_cpu: bool,
    pub vae_on_cpu: bool,
    pub offload_to_cpu: bool,
    pub diffusion_fa: bool,
}

/// One image: everything decided (the seed included).
#[derive(Debug, Clone, PartialEq)]
pub struct SdImage {
    pub model: SdModel,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    pub steps: u32,
    pub cfg_scale: f32,
    pub seed: i64,
    pub sampler: Option<String>,
    pub threads: Option<u32>,
    pub offload: Offload,
    pub output: String,
}

/// Checks the values the job API accepts (the same rules answer 400 there).
pub fn validate(i: &SdImage) -> Result<()> {
    let bad = |m: String| Err(RuntimeError::InvalidInput(m));
    if i.prompt.trim().is_empty() {
        return bad("a prompt is required".into());
    }
    for (name, v) in [("width", i.width), ("height", i.height)] {
        if !(64..=2048).contains(&v) || v % 64 != 0 {
            return bad(format!("{name} must be a multiple of 64 from 64 to 2048, not {v}"));
        }
    }
    if !(1..=150).contains(&i.steps) {
        return bad(format!("steps must be 1 to 150, not {}", i.steps));
    }
    if !(0.0..=30.0).contains(&i.cfg_scale) || !i.cfg_scale.is_finite() {
        return bad(format!("cfgScale must be 0 to 30, not {}", i.cfg_scale));
    }
    if let Some(s) = &i.sampler {
        if !SAMPLERS.contains(&s.as_str()) {
            return bad(format!("unknown sampler {s:?}; one of {}", SAMPLERS.join(", ")));
        }
    }
    if let SdModel::Components(c) = &i.model {
        if !c.iter().any(|(role, _)| role == "diffusion_model") {
            return bad("a multi-file model needs its diffusion_model component".into());
        }
    }
    Ok(())
}

/// The model's files as flags: `-m` for one file, else one flag per component in
/// [`COMPONENT_ORDER`] (sd-cli and sd-server read them alike).
pub fn model_args(model: &SdModel) -> Vec<String> {
    match model {
        SdModel::Single(p) => vec!["-m".into(), p.clone()],
        SdModel::Components(c) => COMPONENT_ORDER
            .iter()
            .filter_map(|(role, flag)| {
                c.iter()
                    .find(|(r, _)| r == role)
                    .map(|(_, path)| [(*flag).to_owned(), path.clone()])
            })
            .flatten()
            .collect(),
    }
}

/// The offload flags that are on, in a fixed order.
pub fn offload_args(o: Offload) -> Vec<&'static str> {
    [
        (o.clip_on_cpu, "--clip-on-cpu"),
        (o.vae_on_cpu, "--vae-on-cpu"),
        (o.offload_to_cpu, "--offload-to-cpu"),
        (o.diffusion_fa, "--diffusion-fa"),
    ]
    .into_iter()
    .filter_map(|(on, flag)| on.then_some(flag))
    .collect()
}

/// argv after the program name, in upstream's order (§5.4).
pub fn build_args(i: &SdImage) -> Vec<String> {
    let mut a: Vec<String> = model_args(&i.model);
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|p| (*p).to_owned()));
    push(&["-p", &i.prompt]);
    if let Some(n) = i.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
        push(&["-n", n]);
    }
    push(&["-W", &i.width.to_string(), "-H", &i.height.to_string()]);
    push(&["--steps", &i.steps.to_string(), "--cfg-scale", &format_cfg(i.cfg_scale)]);
    push(&["-s", &i.seed.to_string()]);
    if let Some(s) = &i.sampler {
        push(&["--sampling-method", s]);
    }
    if let Some(t) = i.threads {
        push(&["-t", &t.to_string()]);
    }
    push(&offload_args(i.offload));
    push(&["-o", &i.output]);
    // The buffer lines (weights and compute buffers per runner) are debug output: the measured
    // side of the image memory ledger.
    push(&["-v"]);
    a
}

fn format_cfg(x: f32) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The offload flags from live VRAM (upstream §5.5, against *free* memory): no GPU keeps CLIP
/// on the CPU; otherwise CLIP moves to the CPU under 6 GiB of headroom, the VAE under 2 GiB, and
/// the weights are offloaded when the model takes over 85 % of the GPU. Flash attention in the
/// diffusion model for models with an LLM text encoder (Flux 2).
pub fn offload_for(model_bytes: u64, gpu: Option<(u64, u64)>, has_llm: bool) -> Offload {
    const GIB: f64 = (1u64 << 30) as f64;
    let footprint = model_bytes as f64 * 1.2;
    match gpu {
        None => Offload { clip_on_cpu: true, diffusion_fa: has_llm, ..Default::default() },
        Some((total, free)) => {
            let headroom = free as f64 - footprint;
            Offload {
                clip_on_cpu: headroom < 6.0 * GIB,
                vae_on_cpu: headroom < 2.0 * GIB,
                offload_to_cpu: footprint > 0.85 * total as f64,
                diffusion_fa: has_llm,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> SdImage {
        SdImage {
            model: SdModel::Single("/m/sd15.gguf".into()),
            prompt: "a red fox".into(),
            negative_prompt: None,
            width: 512,
            height: 512,
            steps: 20,
            cfg_scale: 7.0,
            seed: 42,
            sampler: None,
            threads: None,
            offload: Offload::default(),
            output: "/tmp/o.png".into(),
        }
    }

    #[test]
    fn argv_table() {
        let cases: Vec<(SdImage, &str)> = vec![
            (image(), "-m /m/sd15.gguf -p PROMPT -W 512 -H 512 --steps 20 --cfg-scale 7 -s 42 -o /tmp/o.png -v"),
            (
                SdImage {
                    model: SdModel::Components(vec![
                        ("vae".into(), "/m/ae.gguf".into()),
                        ("llm".into(), "/m/qwen.gguf".into()),
                        ("diffusion_model".into(), "/m/flux2.gguf".into()),
                    ]),
                    negative_prompt: Some("blurry".into()),
                    width: 1024,
                    height: 768,
                    steps: 4,
                    cfg_scale: 1.5,
                    seed: -1,
                    sampler: Some("euler".into()),
                    threads: Some(8),
                    offload: Offload { clip_on_cpu: true, vae_on_cpu: true, offload_to_cpu: true, diffusion_fa: true },
                    ..image()
                },
                "--diffusion-model /m/flux2.gguf --llm /m/qwen.gguf --vae /m/ae.gguf -p PROMPT -n blurry \
                 -W 1024 -H 768 --steps 4 --cfg-scale 1.5 -s -1 --sampling-method euler -t 8 \
                 --clip-on-cpu --vae-on-cpu --offload-to-cpu --diffusion-fa -o /tmp/o.png -v",
            ),
            (SdImage { negative_prompt: Some(String::new()), cfg_scale: 3.25, ..image() },
             "-m /m/sd15.gguf -p PROMPT -W 512 -H 512 --steps 20 --cfg-scale 3.25 -s 42 -o /tmp/o.png -v"),
        ];
        for (img, want) in cases {
            // PROMPT stands for the prompt, which holds spaces and stays one argument.
            let want: Vec<String> = want
                .split_whitespace()
                .map(|w| if w == "PROMPT" { "a red fox".to_owned() } else { w.to_owned() })
                .collect();
            assert_eq!(build_args(&img), want);
        }
    }

    #[test]
    fn validation_table() {
        let ok = image();
        assert!(validate(&ok).is_ok());
        let bad = [
            SdImage { prompt: " ".into(), ..image() },
            SdImage { width: 500, ..image() },
            SdImage { height: 4096, ..image() },
            SdImage { width: 0, ..image() },
            SdImage { steps: 0, ..image() },
            SdImage { steps: 151, ..image() },
            SdImage { cfg_scale: 31.0, ..image() },
            SdImage { cfg_scale: f32::NAN, ..image() },
            SdImage { sampler: Some("magic".into()), ..image() },
            SdImage { model: SdModel::Components(vec![("vae".into(), "/v".into())]), ..image() },
        ];
        for b in bad {
            assert_eq!(validate(&b).unwrap_err().code(), ipc::ErrorCode::InvalidInput, "{b:?}");
        }
        for s in SAMPLERS {
            assert!(validate(&SdImage { sampler: Some((*s).into()), ..image() }).is_ok());
        }
    }

    #[test]
    fn offload_table() {
        const G: u64 = 1 << 30;
        let none = offload_for(2 * G, None, false);
        assert_eq!(none, Offload { clip_on_cpu: true, ..Default::default() });
        // 24 GB card, 22 free, 2 GB model: everything on the GPU.
        assert_eq!(offload_for(2 * G, Some((24 * G, 22 * G)), false), Offload::default());
        // 8 GB card, 7 free, 4 GB model: CLIP moves out, VAE stays (2.2 GiB headroom).
        assert_eq!(
            offload_for(4 * G, Some((8 * G, 7 * G)), false),
            Offload { clip_on_cpu: true, ..Default::default() }
        );
        // 8 GB card, 6 GB model: CLIP and VAE out, weights offloaded (7.2 > 6.8).
        assert_eq!(
            offload_for(6 * G, Some((8 * G, 7 * G)), true),
            Offload {
                clip_on_cpu: true,
                vae_on_cpu: true,
                offload_to_cpu: true,
                diffusion_fa: true
            }
        );
    }
}
