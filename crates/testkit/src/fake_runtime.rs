//! Stand-ins for llama-server and sd-cli builds, for the fault paths a real build cannot be
//! made to show (a GPU error, a GPU build that finds no GPU, a build that will not start).
//!
//! A fake is a shell script. Phase 1 (`--version` / `--help`) is answered by the script itself;
//! anything else re-runs the test executable in "fake server" mode ([`serve_if_asked`], called
//! from an ignored test named [`ENTRY_TEST`]), which prints the scenario's load log and answers
//! `/health` and `/completion` on the port it was given, like llama-server does. Every call is
//! appended to a calls file, so a test can tell whether the app ran the binary at all.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

/// The name of the ignored test that must call [`serve_if_asked`] in a test binary that uses
/// fake llama-servers.
pub const ENTRY_TEST: &str = "fake_llama_server_entry";

const ENV_ARGS: &str = "GENAI_FAKE_ARGS";
const ENV_SCENARIO: &str = "GENAI_FAKE_SCENARIO";
const ENV_CALLS: &str = "GENAI_FAKE_CALLS";

/// How a fake build behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// A CPU build that works.
    Cpu,
    /// A GPU build that finds a GPU, offloads every layer and works.
    GpuOk,
    /// A GPU build that finds a GPU and then fails on it (a CUDA error line), still answering.
    GpuError,
    /// A GPU build that finds no GPU and quietly runs on the CPU.
    NoGpu,
    /// `--version` fails (a missing shared library).
    Phase1Broken,
    /// Starts, then dies while loading the model.
    CrashOnLoad,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::GpuOk => "gpu-ok",
            Self::GpuError => "gpu-error",
            Self::NoGpu => "no-gpu",
            Self::Phase1Broken => "phase1-broken",
            Self::CrashOnLoad => "crash-on-load",
        }
    }
}

/// The text of a fake `llama-server` script. `test_exe` is `std::env::current_exe()` of the
/// test binary that holds the [`ENTRY_TEST`] test.
pub fn llama_server_script(test_exe: &Path, scenario: Scenario, calls: &Path) -> String {
    let version = if scenario == Scenario::Phase1Broken {
        "echo 'llama-server: error while loading shared libraries: libcuda.so.1: cannot open shared object file' >&2; exit 127"
    } else {
        "echo 'version: 9860 (fake)'; echo 'built with cc for x86_64-linux-gnu'; exit 0"
    };
    format!(
        "#!/bin/sh\necho \"$*\" >> '{calls}'\nif [ \"$1\" = --version ]; then {version}; fi\n\
         {ENV_CALLS}='{calls}' {ENV_SCENARIO}={scenario} {ENV_ARGS}=\"$*\" exec '{exe}' {ENTRY_TEST} --exact --ignored --nocapture --quiet\n",
        calls = calls.display(),
        scenario = scenario.name(),
        exe = test_exe.display(),
    )
}

/// The name of the ignored test that must call [`sd_cli_if_asked`] in a test binary that uses
/// generating fake sd-clis.
pub const SD_ENTRY_TEST: &str = "fake_sd_cli_entry";
const ENV_SD_ARGS: &str = "GENAI_FAKE_SD_ARGS";
const ENV_SD_STEP_MS: &str = "GENAI_FAKE_SD_STEP_MS";
const ENV_SD_FAIL: &str = "GENAI_FAKE_SD_FAIL";
/// Set in a generating fake sd-cli's environment (e.g. the app's, which its children inherit),
/// the time it stays at 0 % loading before its first bar: long enough for a screenshot.
pub const ENV_SD_LOAD_MS: &str = "GENAI_FAKE_SD_LOAD_MS";

/// A fake sd-cli that generates: it prints sd-cli's output (loading bar, a step bar per step
/// redrawn with `\r` and colour codes, decoding) taking `step_ms` per step, and writes a real
/// PNG of the asked size to `-o`. `fail` makes it die mid-sampling like a GPU out of memory.
/// `--help` prints sd-cli's usage text, so the runtime checks accept it as a custom binary.
pub fn sd_cli_generating_script(test_exe: &Path, step_ms: u64, fail: bool, calls: &Path) -> String {
    format!(
        "#!/bin/sh\necho \"$*\" >> '{calls}'\n\
         {ENV_SD_STEP_MS}={step_ms} {ENV_SD_FAIL}={fail} {ENV_SD_ARGS}=\"$*\" exec '{exe}' {SD_ENTRY_TEST} --exact --ignored --nocapture --quiet\n",
        calls = calls.display(),
        fail = u8::from(fail),
        exe = test_exe.display(),
    )
}

/// Writes a generating fake sd-cli as `dir/sd-cli` (its calls logged in `dir/calls.log`) that
/// re-runs the current test binary; answers its path.
pub fn generating_sd_cli(dir: &Path, step_ms: u64, fail: bool) -> std::path::PathBuf {
    let exe = dir.join("sd-cli");
    let test_exe = std::env::current_exe().expect("the test binary's path");
    write_script(&exe, &sd_cli_generating_script(&test_exe, step_ms, fail, &dir.join("calls.log")));
    exe
}

/// A word that makes a generating fake sd-cli fail half-way when it is in the prompt.
pub const FAIL_WORD: &str = "FAIL-HALF-WAY";

/// In fake-sd-cli mode, plays one generation and exits; otherwise returns at once.
pub fn sd_cli_if_asked() {
    let Ok(args) = std::env::var(ENV_SD_ARGS) else { return };
    let step_ms: u64 =
        std::env::var(ENV_SD_STEP_MS).ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let fail = std::env::var(ENV_SD_FAIL).as_deref() == Ok("1");
    let words: Vec<&str> = args.split_whitespace().collect();
    // A prompt with this word fails like a built-to-fail fake does (one fake, both outcomes).
    let fail = fail || words.contains(&FAIL_WORD);
    if words.iter().any(|w| *w == "--help" || *w == "-h") {
        println!(
            "usage: sd-cli [options]\n\nArguments:\n  -h, --help   show this help message and exit"
        );
        std::process::exit(0);
    }
    let value =
        |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).copied();
    let num = |flag: &str, d: u64| value(flag).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (w, h, steps) = (num("-W", 512) as u32, num("-H", 512) as u32, num("--steps", 20) as u32);
    // A build-to-fail fake runs out of memory only above the install check's 64×64, so it can be
    // installed (the check makes such an image) and then fails the jobs of a test.
    let fail = fail && (words.contains(&FAIL_WORD) || w * h > 64 * 64);
    let seed = value("-s").and_then(|v| v.parse::<i64>().ok()).unwrap_or(42);
    let out = value("-o").unwrap_or("output.png").to_owned();
    let mut o = std::io::stdout();
    let pause = |ms: u64| std::thread::sleep(std::time::Duration::from_millis(ms));
    let _ = writeln!(o, "[INFO ] stable-diffusion.cpp:212  - loading model from 'model.gguf'");
    let _ = writeln!(o, "[INFO ] model.cpp:1007 - loading tensors from model.gguf");
    let _ = o.flush();
    let load_ms = std::env::var(ENV_SD_LOAD_MS).ok().and_then(|v| v.parse().ok());
    pause(load_ms.unwrap_or(0));
    for i in [300u32, 1130] {
        let _ = write!(o, "\r  |{:=<50}| {i}/1130 - 512.00MB/s\x1b[K", "");
        let _ = o.flush();
        pause(step_ms);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "[INFO ] stable-diffusion.cpp:2100 - generating image: 1/1 - seed {seed}");
    let _ = writeln!(o, "[INFO ] stable-diffusion.cpp:1200 - sampling using Euler A method");
    for i in 1..=steps {
        pause(step_ms);
        if fail && i * 2 > steps {
            eprintln!("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 2048.00 MiB on device 0: cudaMalloc failed: out of memory");
            std::process::exit(1);
        }
        let _ =
            write!(o, "\r  |{:=<50}| {i}/{steps} - {:.2}s/it\x1b[K", "", step_ms as f32 / 1000.0);
        let _ = o.flush();
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "[INFO ] stable-diffusion.cpp:2300 - decoding 1 latents");
    pause(step_ms);
    let _ = writeln!(
        o,
        "[INFO ] stable-diffusion.cpp:2310 - decode_first_stage completed, taking 0.01s"
    );
    std::fs::write(&out, crate::png::gradient(w, h, seed as u64)).unwrap();
    let _ = writeln!(o, "[INFO ] main.cpp:900 - save result image to '{out}'");
    std::process::exit(0);
}

/// The pid of a running generating fake sd-cli whose arguments contain `needle` (its command
/// line is the test binary's, so it is told apart by its environment, which holds the sd-cli
/// arguments, e.g. the output path in a test's temp folder).
pub fn fake_sd_cli_pid(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let environ = String::from_utf8_lossy(&environ);
        (environ.contains(ENV_SD_ARGS) && environ.contains(needle) && alive(pid)).then_some(pid)
    })
}

/// The text of a fake `sd-cli` script: `working` writes a 64×64 PNG's header where `-o` says
/// (the install check's image) or prints sd-cli's usage text (after the error line current
/// builds print first); otherwise it fails like a build with a missing library.
pub fn sd_cli_script(working: bool, calls: &Path) -> String {
    let body = if working {
        "out=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\n\
         if [ -n \"$out\" ]; then printf '\\211PNG\\r\\n\\032\\n\\000\\000\\000\\rIHDR\\000\\000\\000@\\000\\000\\000@\\010\\002\\000\\000\\000' > \"$out\"; exit 0; fi\n\
         echo '[ERROR] main.cpp: the following arguments are required: prompt' >&2\n\
         echo 'usage: sd-cli [options]'\necho ''\necho 'Arguments:'\necho '  -h, --help   show this help message and exit'\nexit 0"
    } else {
        "echo 'sd-cli: error while loading shared libraries: libvulkan.so.1' >&2\nexit 127"
    };
    format!("#!/bin/sh\necho \"$*\" >> '{}'\n{body}\n", calls.display())
}

/// The pids of the fake servers started with this calls file.
pub fn server_pids(calls: &Path) -> Vec<u32> {
    std::fs::read_to_string(calls)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("server pid ")?.trim().parse().ok())
        .collect()
}

/// Whether a process is still running (a zombie waiting to be reaped counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// Writes a script and sets its run bit.
pub fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// In fake-server mode (set by a fake script), plays the scenario and never returns; otherwise
/// returns at once.
pub fn serve_if_asked() {
    let (Ok(args), Ok(scenario)) = (std::env::var(ENV_ARGS), std::env::var(ENV_SCENARIO)) else {
        return;
    };
    if let Ok(calls) = std::env::var(ENV_CALLS) {
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).create(true).open(calls) {
            let _ = writeln!(f, "server pid {}", std::process::id());
        }
    }
    let mut it = args.split_whitespace();
    let mut port = 0u16;
    while let Some(a) = it.next() {
        if a == "--port" {
            port = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        }
    }
    let mut err = std::io::stderr();
    let say = |err: &mut std::io::Stderr, s: &str| {
        let _ = writeln!(err, "{s}");
    };
    say(&mut err, "main: build = 9860 (fake)");
    match scenario.as_str() {
        "gpu-ok" | "gpu-error" => {
            say(&mut err, "ggml_cuda_init: found 1 CUDA devices:");
            say(&mut err, "  Device 0: Fake GPU 24GB, compute capability 8.9, VMM: yes");
            say(&mut err, "load_tensors: offloaded 3/3 layers to GPU");
            if scenario == "gpu-error" {
                say(&mut err, "CUDA error: out of memory");
                say(&mut err, "  current device: 0, in function ggml_cuda_op at ggml-cuda.cu:123");
            }
        }
        "no-gpu" => {
            say(&mut err, "warning: no usable GPU found, --gpu-layers option will be ignored")
        }
        "crash-on-load" => {
            say(&mut err, "llama_model_load: error loading model: tensor 'x' is corrupted");
            std::process::exit(1);
        }
        _ => say(&mut err, "common_param:   - CPU     : Fake CPU (16000 MiB, 15000 MiB free)"),
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("fake server port");
    say(&mut err, &format!("main: server is listening on http://127.0.0.1:{port}"));
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut request = String::new();
        let _ = reader.read_line(&mut request);
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        let _ = reader.read_exact(&mut body);
        let reply = if request.starts_with("GET /health") {
            r#"{"status":"ok"}"#
        } else if request.starts_with("POST /completion") {
            r#"{"content":"4","tokens_predicted":1,"stop":true}"#
        } else {
            r#"{"error":"not found"}"#
        };
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
            reply.len()
        );
    }
}
