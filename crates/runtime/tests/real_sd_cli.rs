//! The real sd-cli (built by `scripts/build-sd-cli`, path in `GENAI_TEST_SD_CLI`) accepts every
//! flag the app can emit: run with model files that do not exist, the complaint must be about
//! the model, never about an argument. Its `--help` must list exactly the app's samplers, and
//! phase 1 of the runtime checks must pass on it. `scripts/test` runs these with `--ignored`.

use ipc::runtimes::RuntimeKind;
use runtime::binaries::check::{phase1, CheckConfig};
use runtime::diffusion::args::{build_args, Offload, SdImage, SdModel, COMPONENT_ORDER, SAMPLERS};
use std::path::PathBuf;
use std::time::Duration;

fn sd_cli() -> PathBuf {
    PathBuf::from(
        std::env::var_os("GENAI_TEST_SD_CLI")
            .expect("GENAI_TEST_SD_CLI must name an sd-cli (scripts/build-sd-cli)"),
    )
}

fn everything(model: SdModel, sampler: &str) -> SdImage {
    SdImage {
        model,
        prompt: "a lighthouse at dawn, oil painting".into(),
        negative_prompt: Some("blurry, text".into()),
        width: 64,
        height: 64,
        steps: 1,
        cfg_scale: 6.5,
        seed: 1234,
        sampler: Some(sampler.into()),
        threads: Some(2),
        offload: Offload {
            clip_on_cpu: true,
            vae_on_cpu: true,
            offload_to_cpu: true,
            diffusion_fa: true,
        },
        output: std::env::temp_dir().join("genai-sd-flags.png").display().to_string(),
    }
}

async fn run(args: &[String]) -> String {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out =
        runtime::process::run(&sd_cli(), &refs, Duration::from_secs(30), |_| {}).await.unwrap();
    assert!(out.status.is_some(), "sd-cli did not finish: {}", out.text());
    out.text()
}

fn assert_model_complaint(text: &str, missing: &str) {
    let lower = text.to_ascii_lowercase();
    for bad in ["invalid parameter", "unknown argument", "invalid argument", "usage:"] {
        assert!(!lower.contains(bad), "sd-cli refused an argument ({bad}):\n{text}");
    }
    assert!(
        text.contains(missing),
        "the complaint should name the missing model {missing}:\n{text}"
    );
}

#[tokio::test]
#[ignore = "needs the real sd-cli; scripts/test builds it and runs this"]
async fn every_emitted_flag_is_accepted() {
    let single = "/nonexistent/genai/sd15.gguf";
    for sampler in SAMPLERS {
        let text = run(&build_args(&everything(SdModel::Single(single.into()), sampler))).await;
        assert_model_complaint(&text, single);
    }
    // Every component flag, in the app's order.
    let components: Vec<(String, String)> = COMPONENT_ORDER
        .iter()
        .map(|(role, _)| (role.to_string(), format!("/nonexistent/genai/{role}.gguf")))
        .collect();
    let args = build_args(&everything(SdModel::Components(components), "euler"));
    for (_, flag) in COMPONENT_ORDER {
        assert!(args.iter().any(|a| a == flag), "{flag} emitted");
    }
    let text = run(&args).await;
    assert_model_complaint(&text, "/nonexistent/genai/");
}

#[tokio::test]
#[ignore = "needs the real sd-cli; scripts/test builds it and runs this"]
async fn help_lists_the_same_samplers_and_phase1_passes() {
    let help = run(&["--help".to_owned()]).await;
    let start = help.find("--sampling-method").expect("the sampler option");
    let list = &help[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    let theirs: Vec<String> = list
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(theirs, SAMPLERS, "the app's sampler list is sd-cli's");

    let mut log = |_: ipc::event::LogLevel, _: String| {};
    let v =
        phase1(RuntimeKind::Diffusion, &sd_cli(), &CheckConfig::default(), &mut log).await.unwrap();
    assert!(v.unwrap().to_ascii_lowercase().starts_with("usage:"));
}

/// Writes the tiny Flux.2 [klein] model's three files into `dir`.
fn tiny_model(dir: &std::path::Path) -> Vec<(String, String, u64)> {
    gguf::fixtures::tiny_flux2_klein(7).write_to(dir).unwrap()
}

fn decode_png(bytes: &[u8]) -> (u32, u32) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    (info.width, info.height)
}

/// The real sd-cli makes a real 64×64 image from the tiny random model with exactly the
/// command line the app builds; its raw output (with `\r` step bars and colour codes) goes
/// through the app's line splitter and progress parser. `GENAI_RECORD_SD_OUTPUT=<file>` keeps
/// the raw stdout (how `tests/fixtures/sd-cli-0.4.7-flux2-tiny.stdout` was recorded).
#[tokio::test]
#[ignore = "needs the real sd-cli; scripts/test builds it and runs this"]
async fn a_tiny_model_makes_a_real_image_and_its_output_parses() {
    use runtime::diffusion::progress::{Stage, Tracker};
    let dir = testkit::TempDir::new("real-sd-tiny");
    let files = tiny_model(dir.path());
    let out = dir.join("out.png");
    let image = SdImage {
        model: SdModel::Components(files.iter().map(|(r, p, _)| (r.clone(), p.clone())).collect()),
        prompt: "a lighthouse".into(),
        negative_prompt: None,
        width: 64,
        height: 64,
        steps: 3,
        cfg_scale: 1.0,
        seed: 42,
        sampler: Some("euler".into()),
        threads: Some(2),
        offload: Offload::default(),
        output: out.display().to_string(),
    };
    let args = build_args(&image);
    assert!(args.windows(2).any(|w| w[0] == "--taesd"), "{args:?}");
    let o = tokio::process::Command::new(sd_cli()).args(&args).output().await.unwrap();
    let stdout = o.stdout;
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if let Some(path) = std::env::var_os("GENAI_RECORD_SD_OUTPUT") {
        std::fs::write(path, &stdout).unwrap();
    }
    assert_eq!(decode_png(&std::fs::read(&out).unwrap()), (64, 64), "a real 64×64 PNG");
    assert!(
        stdout.contains(&b'\r') && stdout.windows(3).any(|w| w == b"\x1b[K"),
        "bars redrawn with \\r and colour codes"
    );

    let mut tracker = Tracker::new(3, 1);
    let mut snaps = Vec::new();
    let mut split = runtime::process::LineSplitter::default();
    let mut feed = |line: String| {
        if tracker.feed(&line) {
            snaps.push(tracker.snapshot());
        }
    };
    split.push(&stdout, &mut feed);
    split.finish(&mut feed);
    assert!(snaps.iter().any(|s| s.stage == Stage::Loading), "{snaps:?}");
    for step in 1..=3 {
        assert!(
            snaps.iter().any(|s| s.stage == Stage::Diffusion && s.step == step && s.steps == 3),
            "step {step}: {snaps:?}"
        );
    }
    assert!(snaps.iter().any(|s| s.stage == Stage::Decoding), "{snaps:?}");
    assert!(snaps.windows(2).all(|w| w[0].percent <= w[1].percent), "{snaps:?}");
    assert!(snaps.last().unwrap().percent >= 99.0, "{snaps:?}");

    // `-v` makes it name what it allocated: the weights of its three runners and their compute
    // buffers, all in RAM on this CPU build.
    let mut buffers = runtime::diffusion::ledger::BufferLines::default();
    let mut split = runtime::process::LineSplitter::default();
    let mut feed = |line: String| {
        buffers.feed(&line);
    };
    split.push(&stdout, &mut feed);
    split.finish(&mut feed);
    let a = buffers.allocation(64, 64).expect("buffer lines");
    let runners: Vec<&str> = a.params.iter().map(|b| b.runner.as_str()).collect();
    assert_eq!(runners, ["qwen3", "flux", "taesd"], "{a:?}");
    assert_eq!(a.compute.len(), 3, "{a:?}");
    let f = a.footprint();
    let files: u64 = files.iter().map(|(_, _, n)| n).sum();
    assert!(f.vram_bytes == 0 && f.ram_bytes > files * 9 / 10, "{f:?} for {files} bytes of files");
}

/// The app's runtime on a fresh storage folder in `dir`, with a copy of the real sd-cli in a
/// folder of its own (with `server`, a script, beside it as its sd-server when given) chosen as
/// the image runtime, and the tiny Flux.2 model registered as "tiny-flux2".
async fn runtime_with_build(dir: &testkit::TempDir, server: Option<&str>) -> runtime::Runtime {
    use ipc::models::{ModelInfo, ModelKind};
    use ipc::StorageRootSource;
    use runtime::system::SystemProbe;
    use runtime::{EventBus, Runtime, StorageRoot};
    use std::os::unix::fs::PermissionsExt;

    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        std::sync::Arc::new(SystemProbe::real()),
    )
    .unwrap();
    let build = dir.join("build");
    std::fs::create_dir_all(&build).unwrap();
    std::fs::copy(sd_cli(), build.join("sd-cli")).unwrap();
    if let Some(script) = server {
        let path = build.join("sd-server");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    rt.binaries().set_custom(RuntimeKind::Diffusion, Some(&build.join("sd-cli"))).await.unwrap();
    let folder = rt.storage().diffusion_models().join("tiny-flux2");
    std::fs::create_dir_all(&folder).unwrap();
    let files = tiny_model(&folder);
    let info = ModelInfo::local_files("tiny-flux2", "Tiny Flux.2", ModelKind::Diffusion, &files);
    rt.models().register(&info).await.unwrap();
    rt
}

/// The whole path with the real sd-cli: the diffusion server, a job for the tiny model, progress
/// through the stages, a PNG of the asked size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-cli; scripts/test builds it and runs this"]
async fn the_diffusion_server_makes_an_image_with_the_real_sd_cli() {
    use base64::Engine as _;
    use ipc::diffusion::{DiffusionConfig, ImageRequest, JobStatus};
    use ipc::event::ImageStage;
    use ipc::AppEvent;

    // sd-cli alone in its folder: a build without sd-server makes each image with one sd-cli
    // run (scripts/build-sd-cli keeps an sd-server beside it, which would be used instead).
    let dir = testkit::TempDir::new("real-sd-server");
    let rt = runtime_with_build(&dir, None).await;
    // Installed only after its functional check: a real 64×64 image from the tiny Flux.2 model.
    let setup = rt.binaries().status(RuntimeKind::Diffusion).log;
    assert!(
        setup.iter().any(|l| l.message == "Phase 2: ✓ sd-cli made a 64×64 image"),
        "{:?}",
        setup.iter().map(|l| &l.message).collect::<Vec<_>>()
    );
    // The choice is kept with the check: this build makes each image with one sd-cli run.
    let installed = rt.binaries().installed(RuntimeKind::Diffusion).unwrap();
    assert_eq!(
        installed.images,
        Some(ipc::runtimes::ImagePath::PerImage { why: "this build has no sd-server".into() })
    );
    let status = rt
        .diffusion()
        .start(DiffusionConfig {
            model_id: "tiny-flux2".into(),
            port: Some(0),
            threads: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!status.warm, "no sd-server beside this sd-cli: one sd-cli run per image");
    let mut rx = rt.events().subscribe();
    let req = ImageRequest {
        prompt: "a lighthouse".into(),
        width: Some(64),
        height: Some(128),
        steps: Some(2),
        cfg_scale: Some(1.0),
        seed: Some(5),
        sampler: Some("euler".into()),
        ..Default::default()
    };
    let first_run = rt.diffusion().footprint_for(&req).unwrap();
    let id = rt.diffusion().generate(req.clone()).unwrap().id;
    let mut stages = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(120), rx.recv()).await.unwrap().unwrap() {
            AppEvent::ImageProgress { stage, .. } if stages.last() != Some(&stage) => {
                stages.push(stage)
            }
            AppEvent::ImageJobFinished { job_id, .. } if job_id == id => break,
            AppEvent::ImageJobFailed { error, .. } => panic!("{}", error.message),
            _ => {}
        }
    }
    for s in [ImageStage::Loading, ImageStage::Diffusion, ImageStage::Decoding] {
        assert!(stages.contains(&s), "{s:?} in {stages:?}");
    }
    let view = rt.diffusion().job(&id).unwrap();
    assert_eq!(view.status, JobStatus::Complete);
    let img = &view.result.unwrap().images[0];
    assert_eq!((img.seed, img.width, img.height), (5, 64, 128));
    let png = base64::engine::general_purpose::STANDARD.decode(&img.image).unwrap();
    assert_eq!(decode_png(&png), (64, 128));

    // What sd-cli allocated is kept and sizes the next job of this model: the same size as
    // measured, a larger one scaled from it, and both survive the app (a file in config/).
    let logs = rt.diffusion().logs();
    let line = logs.iter().find(|l| l.message.starts_with("sd-cli allocated")).expect("logged");
    assert!(line.message.contains("taesd") || line.message.contains("qwen3"), "{}", line.message);
    let measured = rt.diffusion().footprint_for(&req).unwrap();
    assert_ne!(measured, first_run, "the measured figure replaces the first-run estimate");
    assert_eq!(measured.vram_bytes, 0);
    let larger = ImageRequest { width: Some(256), height: Some(256), ..req.clone() };
    assert!(rt.diffusion().footprint_for(&larger).unwrap().ram_bytes > measured.ram_bytes);
    let kept = std::fs::read_to_string(rt.storage().config().join("image-memory.json")).unwrap();
    assert!(kept.contains("tiny-flux2") && kept.contains("taesd"), "{kept}");
    rt.diffusion().stop().await.unwrap();
}

/// A build whose sd-server cannot make the check image (here one that exits at once) still
/// installs: the check falls back to sd-cli, which makes the image, the record says why, and
/// the diffusion server makes its images one sd-cli run each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-cli; scripts/test builds it and runs this"]
async fn a_build_whose_sd_server_fails_its_check_makes_images_with_sd_cli() {
    use ipc::diffusion::DiffusionConfig;
    use ipc::runtimes::ImagePath;

    let dir = testkit::TempDir::new("real-sd-cli-bad-server");
    let broken = "#!/bin/sh\necho 'error: this sd-server is broken' >&2\nexit 3\n";
    let rt = runtime_with_build(&dir, Some(broken)).await;
    let installed = rt.binaries().installed(RuntimeKind::Diffusion).unwrap();
    match &installed.images {
        Some(ImagePath::PerImage { why }) => {
            assert!(why.starts_with("its sd-server failed the check"), "{why}");
            assert!(why.contains("broken"), "the server's own words: {why}");
        }
        other => panic!("{other:?}"),
    }
    let setup = rt.binaries().status(RuntimeKind::Diffusion).log;
    assert!(setup.iter().any(|l| l.message == "Phase 2: ✓ sd-cli made a 64×64 image"));

    let status = rt
        .diffusion()
        .start(DiffusionConfig {
            model_id: "tiny-flux2".into(),
            port: Some(0),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!status.warm, "images from sd-cli, not from the sd-server that failed");
    rt.diffusion().stop().await.unwrap();
}
