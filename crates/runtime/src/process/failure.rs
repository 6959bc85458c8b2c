//! Why a child failed, from the last lines it printed and how it exited: a pure rule with a
//! table test, shared by llama-server (while loading and when it crashes), the sd-cli image runs
//! and the runtime check.
//!
//! The wording comes from each backend's own messages (ggml-cuda, ggml-vulkan, ggml-metal,
//! ggml-alloc, llama.cpp's loader, stable-diffusion.cpp's loader). The order matters: running out
//! of memory is often followed by a GPU error line, and a failed load by a generic "failed to load
//! model", so the more specific cause is looked for first.

use super::{ExitInfo, Tail};
use ipc::ErrorCode;

/// Which program failed: the code when no line names a cause differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// llama-server while it loads the model.
    LlamaServer,
    /// An sd-cli image run.
    SdCli,
    /// The warm image backend (sd-server), loading or making an image.
    SdServer,
    /// llama.cpp's RPC worker (ggml-rpc-server), lending this computer's devices.
    RpcServer,
}

impl Program {
    pub fn name(self) -> &'static str {
        match self {
            Self::LlamaServer => "llama-server",
            Self::SdCli => "sd-cli",
            Self::SdServer => "sd-server",
            Self::RpcServer => "ggml-rpc-server",
        }
    }
}

/// Memory ran out, in RAM or on a device, in each backend's wording.
const OUT_OF_MEMORY: &[&str] = &[
    "out of memory",                  // CUDA: "CUDA error: out of memory"; generic
    "failed to allocate",             // ggml-alloc / llama.cpp: "failed to allocate CUDA0 buffer"
    "unable to allocate",             // ggml_backend_cpu_buffer_type_alloc_buffer
    "cudamalloc failed",              // ggml-cuda
    "erroroutofdevicememory",         // Vulkan: vk::Result::eErrorOutOfDeviceMemory
    "erroroutofhostmemory",           // Vulkan
    "outofmemory",                    // Metal: kIOGPUCommandBufferCallbackErrorOutOfMemory
    "insufficient memory",            // Metal
    "std::bad_alloc",                 // C++ allocation failure
    "cannot allocate memory",         // ENOMEM from mmap
    "not enough space in the buffer", // ggml_new_object / ggml context pools
];

/// The address was taken.
const PORT_IN_USE: &[&str] = &[
    "address already in use",
    "couldn't bind",
    "failed to bind",
    "bind failed",
    // ggml-rpc-server, which then exits 0
    "failed to create server socket",
];

/// The GPU or its driver failed (not for lack of memory).
const GPU_FAILED: &[&str] = &[
    "cuda error",
    "cuda_error",
    "no cuda-capable device",
    "cuda driver version is insufficient",
    "ggml_cuda_init: failed",
    "vkcreatedevice failed",
    "vulkan error",
    "errordevicelost",
    "errorinitializationfailed",
    "ggml_vulkan: error",
    "ggml_metal_init: error",
    "mtlcreatesystemdefaultdevice",
    "metal error",
    "gpu error",
    "hip error",
    "rocblas error",
];

/// The file is damaged or cut short.
const CORRUPT_MODEL: &[&str] = &[
    "tensor data is not within the file bounds",
    "data is not within the file bounds",
    "failed to read tensor",
    "file is truncated",
    "unexpectedly reached end of file",
    "invalid magic",
    "bad magic",
    "gguf_init_from_file",
    "failed to read key",
    "failed to read tensor info",
    "invalid gguf",
    "corrupted",
];

/// The program does not know the model (an architecture or format it cannot load).
const UNSUPPORTED_MODEL: &[&str] = &[
    "unknown model architecture",
    "unsupported model architecture",
    "unknown architecture",
    "get sd version from file failed",
    "unknown model type",
    "missing tensor",
    "wrong number of tensors",
    "unknown tensor type",
    "invalid ggml type",
    "error loading model",
    "failed to load model",
    "load tensors from model loader failed",
    "new_sd_ctx_t failed",
];

/// The code for a child that failed with `tail` as its last lines and `exit` as its end.
pub fn classify_failure(tail: &[String], exit: Option<ExitInfo>, program: Program) -> ErrorCode {
    let text = tail.join("\n").to_ascii_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let signal = exit.and_then(|e| e.signal);
    if any(OUT_OF_MEMORY) {
        ErrorCode::InsufficientMemory
    } else if any(PORT_IN_USE) {
        ErrorCode::PortInUse
    } else if any(GPU_FAILED) {
        ErrorCode::GpuFailed
    } else if any(CORRUPT_MODEL) {
        ErrorCode::GgufInvalid
    } else if any(UNSUPPORTED_MODEL) {
        ErrorCode::ModelUnsupported
    } else if signal == Some(9) {
        // Nothing said why: SIGKILL from outside is most often the kernel's out-of-memory killer.
        ErrorCode::InsufficientMemory
    } else {
        match program {
            Program::LlamaServer if signal.is_none() => ErrorCode::ServerStartFailed,
            _ => ErrorCode::ServerCrashed,
        }
    }
}

/// "llama-server exited with code 1 while loading: a | b | c": how it ended and its last three
/// lines that say something: terminal colour codes removed, sd-cli's step bars
/// (`|=====>   | 3/8 - 0.15s/it`) left out.
pub fn failure_message(
    program: Program,
    exit: Option<ExitInfo>,
    during: &str,
    tail: &Tail,
) -> String {
    let how = exit.map(|e| e.describe()).unwrap_or_else(|| "ended".to_owned());
    let lines: Vec<String> = tail.lines().iter().filter_map(|l| telling(l)).collect();
    let last = lines[lines.len().saturating_sub(3)..].join(" | ");
    let last = if last.is_empty() { "no output".to_owned() } else { last };
    format!("{} {how} {during}: {last}", program.name())
}

/// A line without its terminal escape sequences, or `None` when what is left is empty or a
/// progress bar.
fn telling(line: &str) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ended by a letter.
            if chars.next() == Some('[') {
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
    let t = out.trim();
    let bar = t.starts_with('|') && t.matches('|').count() >= 2;
    (!t.is_empty() && !bar).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorCode::*;
    use Program::*;

    fn code(c: i32) -> Option<ExitInfo> {
        Some(ExitInfo { code: Some(c), signal: None })
    }
    fn sig(s: i32) -> Option<ExitInfo> {
        Some(ExitInfo { code: None, signal: Some(s) })
    }

    /// (name, last lines, exit, program, expected code)
    type Case = (&'static str, &'static [&'static str], Option<ExitInfo>, Program, ErrorCode);

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // Out of memory, in each backend's words.
            ("cuda oom", &["ggml_cuda_host_malloc: failed", "CUDA error: out of memory", "  current device: 0"], code(1), LlamaServer, InsufficientMemory),
            ("alloc buffer", &["ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000.00 MiB on device 0: cudaMalloc failed: out of memory", "llama_model_load: error loading model: unable to allocate CUDA0 buffer"], code(1), LlamaServer, InsufficientMemory),
            ("vulkan oom", &["ggml_vulkan: Device memory allocation of size 8589934592 failed.", "ggml_vulkan: vk::Device::allocateMemory: ErrorOutOfDeviceMemory"], code(1), LlamaServer, InsufficientMemory),
            ("metal oom", &["ggml_metal_graph_compute: command buffer 0 failed with status 5", "error: Insufficient Memory (00000008:kIOGPUCommandBufferCallbackErrorOutOfMemory)"], sig(6), LlamaServer, InsufficientMemory),
            ("cpu buffer", &["ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 34359738368", "llama_init_from_model: failed to initialize the context: failed to allocate buffer for kv cache"], code(1), LlamaServer, InsufficientMemory),
            ("sd gallocr", &["[ERROR] ggml_extend.hpp:1580 - flux compute buffer: ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 12884901888"], code(1), SdCli, InsufficientMemory),
            ("bad_alloc", &["terminate called after throwing an instance of 'std::bad_alloc'", "  what():  std::bad_alloc"], sig(6), SdCli, InsufficientMemory),
            ("oom killer", &["srv  load_model: loading model"], sig(9), LlamaServer, InsufficientMemory),
            // The port.
            ("port", &["start: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080", "main: exiting due to HTTP server error"], code(1), LlamaServer, PortInUse),
            ("port errno", &["error: bind failed: Address already in use"], code(1), LlamaServer, PortInUse),
            // The GPU itself.
            ("cuda error", &["CUDA error: an illegal memory access was encountered", "  in function ggml_backend_cuda_synchronize"], sig(6), LlamaServer, GpuFailed),
            ("no cuda device", &["ggml_cuda_init: failed to initialize CUDA: no CUDA-capable device is detected"], code(1), LlamaServer, GpuFailed),
            ("old driver", &["ggml_cuda_init: failed to initialize CUDA: CUDA driver version is insufficient for CUDA runtime version"], code(1), SdCli, GpuFailed),
            ("vulkan lost", &["ggml_vulkan: vk::Queue::submit: ErrorDeviceLost"], sig(6), LlamaServer, GpuFailed),
            ("vulkan init", &["vkCreateDevice failed: ErrorInitializationFailed"], code(1), SdCli, GpuFailed),
            ("metal init", &["ggml_metal_init: error: failed to create command queue"], code(1), LlamaServer, GpuFailed),
            // Damaged or cut files.
            ("cut", &["gguf_init_from_file_impl: tensor 'output.weight' data is not within the file bounds, model is corrupted or incomplete", "llama_model_load: error loading model: llama_model_loader: failed to load model from /m/tiny.gguf"], code(1), LlamaServer, GgufInvalid),
            ("magic", &["gguf_init_from_file_impl: invalid magic characters: 'GGMx', expected 'GGUF'"], code(1), LlamaServer, GgufInvalid),
            ("read tensor", &["llama_model_load: error loading model: failed to read tensor data"], code(1), LlamaServer, GgufInvalid),
            ("sd truncated", &["[ERROR] model.cpp:1200 - read tensor data failed: file is truncated"], code(1), SdCli, GgufInvalid),
            // Unknown to the program.
            ("arch", &["llama_model_load: error loading model: error loading model architecture: unknown model architecture: 'mamba9'"], code(1), LlamaServer, ModelUnsupported),
            ("missing tensor", &["llama_model_load: error loading model: missing tensor 'output_norm.weight'"], code(1), LlamaServer, ModelUnsupported),
            ("sd version", &["[ERROR] stable-diffusion.cpp:300 - get sd version from file failed: '/m/x.gguf'", "new_sd_ctx_t failed"], code(1), SdCli, ModelUnsupported),
            ("generic load", &["main: error: failed to load model '/m/x.gguf'"], code(1), LlamaServer, ModelUnsupported),
            // Signals without a reason, and nothing said at all.
            ("segfault", &["llama_context: n_ctx = 512"], sig(11), LlamaServer, ServerCrashed),
            ("abort", &["GGML_ASSERT(n_dims <= 4) failed"], sig(6), SdCli, ServerCrashed),
            ("silent llama", &[], code(1), LlamaServer, ServerStartFailed),
            ("silent sd", &[], code(1), SdCli, ServerCrashed),
            ("no exit known", &["something odd"], None, LlamaServer, ServerStartFailed),
            // Prose that mentions memory is not a failure: only the words above count.
            ("prose", &["llama_kv_cache: size = 4.00 MiB (512 cells, 8 layers), K (f16): 2.00 MiB", "load_tensors: CPU_Mapped model buffer size = 43.00 MiB"], code(2), LlamaServer, ServerStartFailed),
        ];
        for (name, tail, exit, program, want) in cases {
            let tail: Vec<String> = tail.iter().map(|s| s.to_string()).collect();
            assert_eq!(classify_failure(&tail, *exit, *program), *want, "case {name}");
        }
    }

    #[test]
    fn message_names_the_program_the_end_and_the_last_three_lines() {
        let mut tail = Tail::new(5);
        for l in ["a", "b", "c", "d"] {
            tail.push(l);
        }
        let m = failure_message(LlamaServer, code(1), "while loading", &tail);
        assert_eq!(m, "llama-server exited with code 1 while loading: b | c | d");
        let m = failure_message(SdCli, sig(9), "on image 2 of 3", &Tail::new(3));
        assert_eq!(m, "sd-cli was killed by signal 9 (SIGKILL) on image 2 of 3: no output");
        // sd-cli's step bars and colour codes are not what went wrong.
        let mut tail = Tail::new(8);
        for l in [
            "[INFO ] stable-diffusion.cpp:2100 - generating image: 1/1 - seed 42",
            "  |==========>                       | 3/8 - 0.15s/it\x1b[K",
            "\x1b[31mggml_backend_cuda_buffer_type_alloc_buffer: cudaMalloc failed: out of memory\x1b[0m",
            "  |=============>                    | 4/8 - 0.15s/it\x1b[K",
            "\x1b[K",
        ] {
            tail.push(l);
        }
        let m = failure_message(SdCli, code(1), "on image 1 of 1", &tail);
        assert_eq!(
            m,
            "sd-cli exited with code 1 on image 1 of 1: [INFO ] stable-diffusion.cpp:2100 - \
             generating image: 1/1 - seed 42 | ggml_backend_cuda_buffer_type_alloc_buffer: \
             cudaMalloc failed: out of memory"
        );
    }
}
