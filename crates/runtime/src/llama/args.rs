//! The llama-server command line, from settings that are already decided (a pure function).

use ipc::llm::LlmSettings;

/// argv after the program name, in upstream's order (§4.2) so logs compare line by line.
/// `-lv 4` is added so the load log names the buffers each device holds (the measured memory).
/// `-fit off` keeps llama.cpp's own fitting (on by default in current builds) from changing what
/// the app decided, and saves its dry-run load; with `llama_fit` it decides instead.
pub fn build_args(s: &LlmSettings) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| a.extend(parts.iter().map(|p| (*p).to_owned()));
    let jinja = if s.jinja { "--jinja" } else { "--no-jinja" };
    push(&["-m", &s.model_path, jinja, "--host", &s.host, "--port", &s.port.to_string()]);
    if let Some(p) = &s.mmproj {
        push(&["--mmproj", p]);
    }
    if !s.rpc.is_empty() {
        push(&["--rpc", &s.rpc.join(",")]);
    }
    push(&["--threads", &s.threads.to_string()]);
    if !s.llama_fit {
        push(&["-c", &s.context_size.to_string()]);
    }
    push(&["-n", "-1"]);
    if s.llama_fit {
        push(&["--fit", "on"]);
    } else {
        push(&["-ngl", &s.gpu_layers.to_string(), "-fit", "off"]);
        if s.n_cpu_moe > 0 {
            push(&["--n-cpu-moe", &s.n_cpu_moe.to_string()]);
        }
    }
    push(&["-np", &s.parallel.to_string()]);
    push(&["-fa", s.flash_attention.flag()]);
    if s.cache_type_k != "f16" {
        push(&["--cache-type-k", &s.cache_type_k]);
    }
    if s.cache_type_v != "f16" {
        push(&["--cache-type-v", &s.cache_type_v]);
    }
    if let Some(f) = &s.reasoning_format {
        push(&["--reasoning-format", f]);
    }
    if let Some(alias) = &s.alias {
        push(&["--alias", alias]);
    }
    if let Some(b) = s.batch {
        push(&["-b", &b.to_string()]);
    }
    if let Some(ub) = s.ubatch {
        push(&["-ub", &ub.to_string()]);
    }
    if s.swa_full {
        push(&["--swa-full"]);
    }
    if s.embeddings {
        push(&["--embeddings"]);
    }
    if let Some(p) = &s.pooling {
        push(&["--pooling", p]);
    }
    if let Some(mib) = s.cache_ram_mib {
        push(&["--cache-ram", &mib.to_string()]);
    }
    push(&["-lv", "4"]);
    a
}

/// Variables for what has no flag common to every llama-server build: how the model is loaded.
/// Build 11434 replaced `--no-mmap` and `--mlock` (which it refuses) by `--load-mode`, which older
/// builds (the pinned b9860, custom ones) refuse; each build reads its own variable and ignores
/// the other's.
pub fn build_env(s: &LlmSettings) -> Vec<(String, String)> {
    let no_mmap = s.mmap == Some(false);
    let mode = match (no_mmap, s.mlock) {
        (false, false) => return Vec::new(),
        (true, false) => "none",
        (true, true) => "mlock",
        (false, true) => "mmap+mlock",
    };
    let mut env = vec![("LLAMA_ARG_LOAD_MODE".to_owned(), mode.to_owned())];
    if no_mmap {
        env.push(("LLAMA_ARG_NO_MMAP".into(), "1".into()));
    }
    if s.mlock {
        env.push(("LLAMA_ARG_MLOCK".into(), "1".into()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipc::llm::Toggle;

    fn base() -> LlmSettings {
        LlmSettings {
            model_path: "/m/qwen.gguf".into(),
            mmproj: None,
            rpc: Vec::new(),
            split: Vec::new(),
            host: "127.0.0.1".into(),
            port: 8080,
            threads: 8,
            context_size: 4096,
            native_context: 32768,
            gpu_layers: 28,
            total_layers: 28,
            n_cpu_moe: 0,
            parallel: 1,
            flash_attention: Toggle::Auto,
            cache_type_k: "f16".into(),
            cache_type_v: "f16".into(),
            batch: None,
            ubatch: None,
            swa_full: false,
            mmap: None,
            mlock: false,
            reasoning_format: None,
            alias: None,
            llama_fit: false,
            cache_ram_mib: None,
            jinja: true,
            embeddings: false,
            pooling: None,
            expected_vram_bytes: 0,
            expected_ram_bytes: 0,
            estimate: vec![],
            explanation: String::new(),
        }
    }

    #[test]
    fn argv_table() {
        let plain =
            "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --threads 8 -c 4096 -n -1 \
                     -ngl 28 -fit off -np 1 -fa auto -lv 4";
        let cases: Vec<(LlmSettings, &str)> = vec![
            (base(), plain),
            (
                LlmSettings {
                    gpu_layers: 0,
                    flash_attention: Toggle::On,
                    cache_type_k: "q8_0".into(),
                    cache_type_v: "q8_0".into(),
                    ..base()
                },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --threads 8 -c 4096 -n -1 \
                 -ngl 0 -fit off -np 1 -fa on --cache-type-k q8_0 --cache-type-v q8_0 -lv 4",
            ),
            (
                LlmSettings {
                    host: "0.0.0.0".into(),
                    batch: Some(512),
                    mmap: Some(false),
                    mlock: true,
                    reasoning_format: Some("deepseek".into()),
                    alias: Some("chat".into()),
                    ..base()
                },
                "-m /m/qwen.gguf --jinja --host 0.0.0.0 --port 8080 --threads 8 -c 4096 -n -1 \
                 -ngl 28 -fit off -np 1 -fa auto --reasoning-format deepseek --alias chat -b 512 \
                 -lv 4",
            ),
            (
                LlmSettings {
                    ubatch: Some(256),
                    swa_full: true,
                    embeddings: true,
                    pooling: Some("mean".into()),
                    ..base()
                },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --threads 8 -c 4096 -n -1 \
                 -ngl 28 -fit off -np 1 -fa auto -ub 256 --swa-full --embeddings --pooling mean \
                 -lv 4",
            ),
            (
                LlmSettings { n_cpu_moe: 12, ..base() },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --threads 8 -c 4096 -n -1 \
                 -ngl 28 -fit off --n-cpu-moe 12 -np 1 -fa auto -lv 4",
            ),
            // llama.cpp's own fitting decides the layers: no expert split of the app's.
            (
                LlmSettings { llama_fit: true, n_cpu_moe: 12, ..base() },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --threads 8 -n -1 \
                 --fit on -np 1 -fa auto -lv 4",
            ),
            (
                LlmSettings { llama_fit: true, jinja: false, cache_ram_mib: Some(0), ..base() },
                "-m /m/qwen.gguf --no-jinja --host 127.0.0.1 --port 8080 --threads 8 -n -1 \
                 --fit on -np 1 -fa auto --cache-ram 0 -lv 4",
            ),
            // mmap explicitly on is llama-server's default: no flag.
            (LlmSettings { mmap: Some(true), ..base() }, plain),
            // Layers split across RPC workers too.
            (
                LlmSettings {
                    rpc: vec!["10.0.0.2:50052".into(), "10.0.0.3:50052".into()],
                    ..base()
                },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 \
                 --rpc 10.0.0.2:50052,10.0.0.3:50052 --threads 8 -c 4096 -n -1 -ngl 28 -fit off \
                 -np 1 -fa auto -lv 4",
            ),
            // A vision projector is loaded beside the model.
            (
                LlmSettings { mmproj: Some("/m/mmproj-F16.gguf".into()), ..base() },
                "-m /m/qwen.gguf --jinja --host 127.0.0.1 --port 8080 --mmproj /m/mmproj-F16.gguf \
                 --threads 8 -c 4096 -n -1 -ngl 28 -fit off -np 1 -fa auto -lv 4",
            ),
        ];
        for (s, want) in cases {
            let want: Vec<&str> = want.split_whitespace().collect();
            assert_eq!(build_args(&s), want);
        }
    }

    #[test]
    fn the_load_mode_goes_in_both_generations_variables() {
        let env = |mmap, mlock| {
            let e = build_env(&LlmSettings { mmap, mlock, ..base() });
            e.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        };
        assert_eq!(env(None, false), "");
        assert_eq!(env(Some(true), false), "");
        assert_eq!(env(Some(false), false), "LLAMA_ARG_LOAD_MODE=none LLAMA_ARG_NO_MMAP=1");
        assert_eq!(
            env(Some(false), true),
            "LLAMA_ARG_LOAD_MODE=mlock LLAMA_ARG_NO_MMAP=1 LLAMA_ARG_MLOCK=1"
        );
        assert_eq!(env(None, true), "LLAMA_ARG_LOAD_MODE=mmap+mlock LLAMA_ARG_MLOCK=1");
        // Neither flag is on the command line any more.
        let argv = build_args(&LlmSettings { mmap: Some(false), mlock: true, ..base() });
        assert!(!argv.iter().any(|a| a == "--no-mmap" || a == "--mlock"), "{argv:?}");
    }

    #[test]
    fn a_path_with_spaces_stays_one_argument() {
        let s = LlmSettings { model_path: "/home/me/My Models/a b.gguf".into(), ..base() };
        assert_eq!(build_args(&s)[1], "/home/me/My Models/a b.gguf");
    }
}
