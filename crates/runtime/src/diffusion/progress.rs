//! Reading sd-cli's progress from its output.
//!
//! sd-cli redraws its bars with carriage returns and colour codes
//! (`\r|====>     | 5/20 - 1.23s/it\x1b[K`); tensor loading uses the same bar with a byte rate
//! (`MB/s`). Lines come here already split on `\r` and `\n` ([`crate::process::lines`]); this
//! strips the colour codes, recognises the stage markers and both kinds of bar, and turns them
//! into a stage, a step, a percentage over the whole job (each stage counts for its share) and an
//! ETA from the measured seconds per step.

/// Where an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Loading,
    Diffusion,
    Decoding,
    Done,
}

/// Shares of one image's time, in percent: loading, sampling, decoding. Sampling dominates on
/// every model measured upstream; decoding is a few seconds per megapixel.
const SHARE: (f32, f32, f32) = (10.0, 80.0, 10.0);

/// ESC `[` … a final letter: colour and erase-line codes.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// A bar `| cur/total - rate unit`, with the unit telling a sampling step (`s/it`, `it/s`)
/// from a byte count (`B/s` … `GB/s`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bar {
    Steps { cur: u32, total: u32, secs_per_step: Option<f32> },
    Bytes { cur: u32, total: u32 },
}

fn parse_bar(line: &str) -> Option<Bar> {
    let after = &line[line.rfind('|')? + 1..];
    let (counts, rate) = after.split_once(" - ").unwrap_or((after, ""));
    let (cur, total) = counts.trim().split_once('/')?;
    let (cur, total) = (cur.trim().parse().ok()?, total.trim().parse().ok()?);
    let rate = rate.trim();
    let num = |s: &str| s.trim().parse::<f32>().ok();
    Some(if let Some(v) = rate.strip_suffix("s/it") {
        Bar::Steps { cur, total, secs_per_step: num(v) }
    } else if let Some(v) = rate.strip_suffix("it/s") {
        Bar::Steps { cur, total, secs_per_step: num(v).filter(|x| *x > 0.0).map(|x| 1.0 / x) }
    } else if rate.ends_with("B/s") {
        Bar::Bytes { cur, total }
    } else {
        Bar::Steps { cur, total, secs_per_step: None }
    })
}

/// k of "generating image: k/N".
fn image_number(lower: &str) -> Option<u32> {
    let after = &lower[lower.find("generating image:")? + "generating image:".len()..];
    after.trim_start().split('/').next()?.trim().parse().ok()
}

/// Progress of one job of `images` images of `steps` steps each.
#[derive(Debug, Clone)]
pub struct Tracker {
    steps: u32,
    images: u32,
    image: u32,
    stage: Stage,
    step: u32,
    load: f32,
    secs_per_step: Option<f32>,
    /// A bar seen before the sampling marker is a loading bar.
    sampling_started: bool,
}

/// What the window shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    pub stage: Stage,
    pub step: u32,
    pub steps: u32,
    /// 0-based image of the batch.
    pub image: u32,
    pub images: u32,
    /// 0..=100 over the whole job.
    pub percent: f32,
    pub eta_secs: Option<f32>,
}

impl Tracker {
    pub fn new(steps: u32, images: u32) -> Self {
        Self {
            steps: steps.max(1),
            images: images.max(1),
            image: 0,
            stage: Stage::Loading,
            step: 0,
            load: 0.0,
            secs_per_step: None,
            sampling_started: false,
        }
    }

    /// The next image of the batch begins (a new sd-cli run).
    pub fn next_image(&mut self) {
        self.image = (self.image + 1).min(self.images - 1);
        self.stage = Stage::Loading;
        self.step = 0;
        self.load = 0.0;
        self.sampling_started = false;
    }

    /// Takes one line; answers whether anything the window shows changed.
    pub fn feed(&mut self, raw: &str) -> bool {
        let line = strip_ansi(raw);
        let lower = line.to_ascii_lowercase();
        let before = self.snapshot();
        if lower.contains("loading tensors from") || lower.contains("loading model from") {
            self.stage = Stage::Loading;
        } else if lower.contains("generating image:") {
            // "generating image: 2/3 - seed 8": sd-server samples a batch in one run, image
            // after image (sd-cli runs once per image and says 1/1).
            if let Some(k) = image_number(&lower) {
                let k = k.clamp(1, self.images) - 1;
                if k > self.image {
                    self.image = k;
                    self.step = 0;
                }
            }
            self.stage = Stage::Diffusion;
            self.sampling_started = true;
            self.load = 1.0;
        } else if lower.contains("sampling using") || lower.contains("get_learned_condition") {
            // sd-cli 0.4.7 names the sampler, then encodes the prompt (seconds with an LLM
            // text encoder), then starts the image: the weights are in, sampling is not yet.
            if !self.sampling_started {
                self.load = 1.0;
            }
        } else if lower.contains("decoding") && lower.contains("latent") {
            self.stage = Stage::Decoding;
            self.step = self.steps;
        } else if lower.contains("decode_first_stage completed") || lower.contains("save result") {
            self.stage = Stage::Done;
        } else if let Some(bar) = parse_bar(&line) {
            match bar {
                Bar::Bytes { cur, total } if total > 0 && !self.sampling_started => {
                    self.load = cur as f32 / total as f32;
                }
                Bar::Steps { cur, total, secs_per_step } if self.sampling_started => {
                    self.stage = Stage::Diffusion;
                    self.step = cur.min(total);
                    self.steps = total.max(1);
                    if secs_per_step.is_some() {
                        self.secs_per_step = secs_per_step;
                    }
                }
                Bar::Steps { cur, total, .. } if total > 0 => {
                    self.load = cur as f32 / total as f32;
                }
                _ => {}
            }
        }
        self.snapshot() != before
    }

    pub fn snapshot(&self) -> Snapshot {
        let (l, d, v) = SHARE;
        let within = match self.stage {
            Stage::Loading => l * self.load.clamp(0.0, 1.0),
            Stage::Diffusion => l + d * self.step as f32 / self.steps as f32,
            Stage::Decoding => l + d,
            Stage::Done => l + d + v,
        };
        let percent = ((self.image as f32 * 100.0 + within) / self.images as f32).clamp(0.0, 100.0);
        // Steps left in this image and in the images after it; loading and decoding are not
        // timed yet, so the ETA only appears once sampling shows its pace.
        let eta_secs = self.secs_per_step.map(|s| {
            let left_here = self.steps.saturating_sub(self.step) as f32;
            let later = (self.images - 1 - self.image) as f32 * self.steps as f32;
            (left_here + later) * s
        });
        Snapshot {
            stage: self.stage,
            step: self.step,
            steps: self.steps,
            image: self.image,
            images: self.images,
            percent,
            eta_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output shaped like older sd-cli builds (the sampler named after the image starts, the
    /// pace in s/it); the real 0.4.7 output is the recording below.
    const RUN: &str = "[INFO ] stable-diffusion.cpp:255  - loading model from '/m/sd.gguf'\n\
        [INFO ] model.cpp:1007 - loading tensors from /m/sd.gguf\n\
        \r  |=====>                                            | 120/1130 - 512.00MB/s\x1b[K\
        \r  |==================================================| 1130/1130 - 530.12MB/s\x1b[K\n\
        [INFO ] stable-diffusion.cpp:2100 - generating image: 1/1 - seed 42\n\
        [INFO ] stable-diffusion.cpp:1200 - sampling using Euler A method\n\
        \r  |==========>                                       | 1/4 - 2.50s/it\x1b[K\
        \r  |=========================>                        | 2/4 - 2.00s/it\x1b[K\
        \r  |==================================================| 4/4 - 1.50it/s\x1b[K\n\
        [INFO ] stable-diffusion.cpp:2300 - decoding 1 latents\n\
        [INFO ] stable-diffusion.cpp:2310 - decode_first_stage completed, taking 1.20s\n";

    fn lines(s: &str) -> Vec<String> {
        s.split(['\r', '\n']).filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    }

    #[test]
    fn stages_steps_percent_and_eta() {
        let mut t = Tracker::new(4, 1);
        let mut seen = Vec::new();
        for l in lines(RUN) {
            if t.feed(&l) {
                seen.push(t.snapshot());
            }
        }
        let stages: Vec<Stage> = seen.iter().map(|s| s.stage).collect();
        assert!(
            stages.windows(2).all(|w| w[0] as u8 <= w[1] as u8),
            "stages only move on: {stages:?}"
        );
        assert!(seen
            .iter()
            .any(|s| s.stage == Stage::Loading && s.percent > 0.0 && s.percent < 10.0));
        let d2 = seen.iter().find(|s| s.stage == Stage::Diffusion && s.step == 2).unwrap();
        assert_eq!(d2.percent, 50.0, "10 % loading + half of the 80 % sampling share");
        assert_eq!(d2.eta_secs, Some(4.0), "2 steps left at 2.0 s/it");
        let last = t.snapshot();
        assert_eq!(last.stage, Stage::Done);
        assert_eq!(last.percent, 100.0);
        assert!(seen.windows(2).all(|w| w[0].percent <= w[1].percent), "never goes back");
    }

    /// sd-cli 0.4.7's stdout, byte for byte, making a 64×64 image in 3 steps from the tiny
    /// Flux.2 model (recorded by `tests/real_sd_cli.rs` with `GENAI_RECORD_SD_OUTPUT`): loading
    /// bars counting tensors, the sampler named before the prompt is encoded, `it/s` step bars
    /// redrawn with `\r` and ended with `\x1b[K`, the decode.
    const RECORDED: &[u8] = include_bytes!("../../tests/fixtures/sd-cli-0.4.7-flux2-tiny.stdout");

    #[test]
    fn the_recorded_real_output() {
        let mut split = crate::process::LineSplitter::default();
        let mut lines = Vec::new();
        split.push(RECORDED, |l| lines.push(l));
        split.finish(|l| lines.push(l));
        assert!(lines.iter().all(|l| !l.contains('\r')), "split on carriage returns");
        let mut t = Tracker::new(3, 1);
        let mut seen = Vec::new();
        for l in &lines {
            t.feed(l);
            seen.push((l.clone(), t.snapshot()));
        }
        // Loading climbs with the tensor bars (25, 335, 414 of 414) within its 10 % share...
        let loading: Vec<f32> = seen
            .iter()
            .filter(|(_, s)| s.stage == Stage::Loading)
            .map(|(_, s)| s.percent)
            .collect();
        assert!(loading.iter().any(|p| *p > 0.0 && *p < 10.0), "{loading:?}");
        // ...and is full while the prompt is encoded, before the first step.
        let encoding = seen.iter().find(|(l, _)| l.contains("sampling using")).unwrap();
        assert_eq!((encoding.1.stage, encoding.1.percent), (Stage::Loading, 10.0));
        let start = seen.iter().find(|(l, _)| l.contains("generating image")).unwrap();
        assert_eq!((start.1.stage, start.1.step), (Stage::Diffusion, 0));
        for step in 1..=3u32 {
            let s = seen.iter().find(|(_, s)| s.step == step && s.stage == Stage::Diffusion);
            let s = s.unwrap_or_else(|| panic!("step {step} in {seen:?}")).1;
            assert!((s.percent - (10.0 + 80.0 * step as f32 / 3.0)).abs() < 0.01, "{s:?}");
            assert!(s.eta_secs.is_some(), "the pace gives an ETA");
        }
        assert!(seen.iter().any(|(_, s)| s.stage == Stage::Decoding));
        assert_eq!(t.snapshot().stage, Stage::Done);
        assert_eq!(t.snapshot().percent, 100.0);
        assert!(seen.windows(2).all(|w| w[0].1.percent <= w[1].1.percent), "never goes back");
    }

    #[test]
    fn batches_count_each_image() {
        let mut t = Tracker::new(4, 2);
        for l in lines(RUN) {
            t.feed(&l);
        }
        assert_eq!(t.snapshot().percent, 50.0);
        t.next_image();
        assert_eq!(t.snapshot().percent, 50.0);
        assert_eq!(t.snapshot().image, 1);
    }

    /// sd-server makes a batch in one run: each image says which it is, all are sampled, then
    /// all are decoded.
    #[test]
    fn a_batch_in_one_run_moves_image_by_image() {
        let run = "[INFO ] sampling using Euler method\n\
            [INFO ] generating image: 1/2 - seed 42\n\
            \r  |=====>    | 2/4 - 2.00s/it\x1b[K\r  |==========| 4/4 - 2.00s/it\x1b[K\n\
            [INFO ] sampling completed, taking 8.00s\n\
            [INFO ] generating image: 2/2 - seed 43\n\
            \r  |=====>    | 2/4 - 2.00s/it\x1b[K\n";
        let mut t = Tracker::new(4, 2);
        let mut seen = Vec::new();
        for l in lines(run) {
            t.feed(&l);
            seen.push(t.snapshot());
        }
        let s = t.snapshot();
        assert_eq!((s.image, s.step, s.stage), (1, 2, Stage::Diffusion));
        assert!((s.percent - (100.0 + 10.0 + 40.0) / 2.0).abs() < 0.01, "{s:?}");
        assert_eq!(s.eta_secs, Some(4.0), "two steps left of the last image");
        assert!(seen.windows(2).all(|w| w[0].percent <= w[1].percent), "never goes back: {seen:?}");
        t.feed("[INFO ] decoding 2 latents");
        t.feed("[INFO ] decode_first_stage completed, taking 1.00s");
        assert_eq!(t.snapshot().percent, 100.0);
    }

    #[test]
    fn colour_codes_and_rates() {
        assert_eq!(strip_ansi("\x1b[32m|==>| 3/20 - 1.00s/it\x1b[K"), "|==>| 3/20 - 1.00s/it");
        assert_eq!(
            parse_bar("  |====>   | 3/20 - 4.00it/s"),
            Some(Bar::Steps { cur: 3, total: 20, secs_per_step: Some(0.25) })
        );
        assert_eq!(parse_bar("|##| 10/100 - 12.5GB/s"), Some(Bar::Bytes { cur: 10, total: 100 }));
        assert_eq!(parse_bar("no bar here"), None);
        // A step bar before the sampling marker is loading, not sampling.
        let mut t = Tracker::new(20, 1);
        t.feed("|==>| 5/10 - 1.00s/it");
        assert_eq!((t.snapshot().stage, t.snapshot().step), (Stage::Loading, 0));
        assert_eq!(t.snapshot().percent, 5.0);
    }
}
