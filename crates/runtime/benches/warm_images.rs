//! Five images in a row with the real stable-diffusion.cpp builds and the tiny Flux.2 [klein]
//! model, the same arguments and seeds each way:
//!   1. one sd-cli run per image (the app's per-image path, `diffusion::job::run`);
//!   2. the app's warm backend (`diffusion::sd_server::Backend`: one sd-server, five requests);
//!   3. a bare sd-server driven by `curl` with the same job bodies, polled at the same pace.
//!
//! Prints the total time of each, the ratio of 2 to 1, the load and sampling time of each image
//! (from the programs' own "taking" lines), and the app's overhead over 3.
//!
//! GENAI_TEST_SD_SERVER=$(scripts/build-sd-server) cargo bench -p runtime --bench warm_images

use runtime::diffusion::args::{Offload, SdImage, SdModel};
use runtime::diffusion::job;
use runtime::diffusion::progress::Tracker;
use runtime::diffusion::sd_server::{build_server_args, img_gen_body, Backend, ServerSpec, POLL};
use runtime::process::LoadDeadline;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const IMAGES: usize = 5;
const STEPS: u32 = 4;
const SIZE: u32 = 128;

/// Seconds in "… taking 1.23s (…)" / "… completed in 1.23s".
fn taking(line: &str) -> Option<f64> {
    let (_, after) = line.split_once(" taking ").or_else(|| line.split_once(" completed in "))?;
    let first = after.split_whitespace().next()?;
    first.strip_suffix("ms").map_or_else(
        || first.trim_end_matches('s').parse().ok(),
        |ms| ms.parse::<f64>().ok().map(|v| v / 1000.0),
    )
}

/// Seconds one image's lines name: loading the weights, encoding the prompt, sampling, and
/// the whole image (sd.cpp's own "generate_image completed in").
fn times(lines: &[String]) -> [f64; 4] {
    let sum = |what: &str| -> f64 {
        lines.iter().filter(|l| l.contains(what)).filter_map(|l| taking(l)).fold(0.0, |a, b| a + b)
    };
    [
        sum("loading tensors completed"),
        sum("get_learned_condition completed"),
        sum("sampling completed"),
        sum("generate_image completed"),
    ]
}

fn image(model: &SdModel, seed: i64, out: &Path) -> SdImage {
    SdImage {
        model: model.clone(),
        prompt: "a lighthouse at dawn".into(),
        negative_prompt: None,
        width: SIZE,
        height: SIZE,
        steps: STEPS,
        cfg_scale: 1.0,
        seed,
        sampler: Some("euler".into()),
        threads: Some(2),
        offload: Offload::default(),
        output: out.display().to_string(),
    }
}

fn curl(args: &[&str]) -> String {
    let out =
        std::process::Command::new("curl").args(["-s", "--max-time", "10"]).args(args).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

fn main() {
    let server = PathBuf::from(
        std::env::var_os("GENAI_TEST_SD_SERVER")
            .expect("GENAI_TEST_SD_SERVER must name an sd-server (scripts/build-sd-server)"),
    );
    let cli = server.with_file_name("sd-cli");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("genai-bench-warm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&dir).unwrap();
    let model =
        SdModel::Components(files.into_iter().map(|(role, path, _)| (role, path)).collect());
    let seeds: Vec<i64> = (0..IMAGES as i64).map(|i| 100 + i).collect();

    rt.block_on(async {
        // 1. One sd-cli per image.
        let t = Instant::now();
        let mut per_cli = Vec::new();
        for &seed in &seeds {
            let mut lines = Vec::new();
            let (_tx, rx) = watch::channel(false);
            job::run(&cli, &image(&model, seed, &dir.join("x.png")), 1, &dir.join("tmp"), rx, |_| {}, |l| {
                lines.push(l.to_owned())
            })
            .await
            .unwrap();
            per_cli.push(times(&lines));
        }
        let cli_total = t.elapsed();

        // 2. The app's warm backend.
        let lora = dir.join("loras").display().to_string();
        let spec = |port| ServerSpec {
            model: model.clone(),
            offload: Offload::default(),
            threads: Some(2),
            port,
            lora_dir: lora.clone(),
        };
        let deadline = LoadDeadline { quiet: Duration::from_secs(120), max: Duration::from_secs(600) };
        let t = Instant::now();
        let mut load_lines = Vec::new();
        let mut backend = Backend::start(
            &server,
            spec(runtime::net::free_port().unwrap()),
            deadline,
            |l| load_lines.push(l.to_owned()),
            std::future::pending(),
        )
        .await
        .unwrap();
        let mut per_warm = Vec::new();
        for &seed in &seeds {
            let mut lines = Vec::new();
            let (_tx, rx) = watch::channel(false);
            let i = image(&model, seed, Path::new(""));
            backend
                .generate(&i, 1, rx, &mut Tracker::new(STEPS, 1), |_| {}, |l| lines.push(l.to_owned()))
                .await
                .unwrap();
            per_warm.push(times(&lines));
        }
        let warm_total = t.elapsed();
        let warm_load = times(&load_lines)[0];
        backend.release(Duration::from_secs(10)).await.unwrap();

        // 3. A bare sd-server and curl, the same bodies, polled at the same pace.
        let port = runtime::net::free_port().unwrap();
        let args = build_server_args(&spec(port));
        let t = Instant::now();
        let mut child = std::process::Command::new(&server)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        while !curl(&[&format!("{base}/sdcpp/v1/capabilities")]).contains("supported_modes") {
            std::thread::sleep(Duration::from_millis(100));
        }
        for &seed in &seeds {
            let body = img_gen_body(&image(&model, seed, Path::new("")), 1).to_string();
            let answer = curl(&["-X", "POST", "-H", "Content-Type: application/json", "-d", &body, &format!("{base}/sdcpp/v1/img_gen")]);
            let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
            let url = format!("{base}/sdcpp/v1/jobs/{}", v["id"].as_str().unwrap());
            loop {
                std::thread::sleep(POLL);
                if curl(&[&url]).contains("\"status\":\"completed\"") {
                    break;
                }
            }
        }
        let bare_total = t.elapsed();
        let _ = child.kill();
        let _ = child.wait();

        println!("{IMAGES} images of {SIZE}×{SIZE}, {STEPS} steps, tiny Flux.2 [klein] (CPU), seeds {seeds:?}");
        println!("{:<34} {:>9}", "", "total");
        println!("{:<34} {:>8.2}s", "one sd-cli per image", cli_total.as_secs_f64());
        println!("{:<34} {:>8.2}s   ratio to sd-cli {:.2}", "warm backend (the app)", warm_total.as_secs_f64(),
            warm_total.as_secs_f64() / cli_total.as_secs_f64());
        println!("{:<34} {:>8.2}s   the app's overhead over it {:+.1} %", "bare sd-server + curl", bare_total.as_secs_f64(),
            (warm_total.as_secs_f64() / bare_total.as_secs_f64() - 1.0) * 100.0);
        println!();
        println!("per image, seconds from the programs' own lines: load weights / encode prompt / sample / whole image");
        println!("{:<6} {:>34}   {:>34}", "image", "one sd-cli per image", "warm backend");
        let row = |t: [f64; 4]| format!("{:>6.2} / {:>6.2} / {:>6.2} / {:>6.2}", t[0], t[1], t[2], t[3]);
        for i in 0..IMAGES {
            let mut w = per_warm[i];
            if i == 0 {
                w[0] += warm_load;
            }
            println!("{:<6} {:>34}   {:>34}", i + 1, row(per_cli[i]), row(w));
        }
        println!("(the warm backend loads the weights once, when it starts, before image 1)");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
