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
