//! Where the app keeps its files, and the rule that nothing from outside leaves that place.
//!
//! ```text
//! <root>/models/llm        single-file LLMs and their <id>.json metadata; shards in <id>/
//! <root>/models/diffusion  diffusion models and shared components
//! <root>/binaries          llama-server and sd-cli builds, validation cache
//! <root>/logs              rotated server logs
//! <root>/config            settings
//! <root>/downloads         <name>.part files and their resume sidecars
//! ```

use crate::{Result, RuntimeError};
use ipc::StorageRootSource;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// The folder name under the platform's app-data folder.
pub const APP_DIR_NAME: &str = "genai-control-panel";

/// The environment variable that overrides the storage root.
pub const ENV_HOME: &str = "GENAI_HOME";

/// The chosen storage root and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageRoot {
    pub path: PathBuf,
    pub source: StorageRootSource,
}

impl StorageRoot {
    pub fn new(path: impl Into<PathBuf>, source: StorageRootSource) -> Self {
        Self { path: path.into(), source }
    }

    /// `GENAI_HOME` if set, else the platform's per-user app-data folder.
    pub fn from_env() -> Result<Self> {
        let cwd = std::env::current_dir().ok();
        Self::choose(|k| std::env::var_os(k), std::env::consts::OS, cwd.as_deref())
    }

    /// The rule behind [`StorageRoot::from_env`], with the environment passed in so it can be
    /// tested for every platform on any platform.
    pub fn choose(
        env: impl Fn(&str) -> Option<OsString>,
        os: &str,
        cwd: Option<&Path>,
    ) -> Result<Self> {
        let non_empty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(home) = non_empty(ENV_HOME) {
            // A relative GENAI_HOME would move with the working directory; pin it once.
            let path = match (home.is_absolute(), cwd) {
                (true, _) => home,
                (false, Some(cwd)) => cwd.join(home),
                (false, None) => {
                    return Err(RuntimeError::NoStorageRoot(format!(
                        "{ENV_HOME}={} is relative and the working directory is unknown",
                        home.display()
                    )))
                }
            };
            return Ok(Self::new(path, StorageRootSource::Env));
        }
        let base = match os {
            "windows" => non_empty("APPDATA"),
            "macos" => non_empty("HOME").map(|h| h.join("Library/Application Support")),
            _ => non_empty("XDG_DATA_HOME")
                .filter(|p| p.is_absolute())
                .or_else(|| non_empty("HOME").map(|h| h.join(".local/share"))),
        };
        base.map(|b| Self::new(b.join(APP_DIR_NAME), StorageRootSource::AppData)).ok_or_else(|| {
            RuntimeError::NoStorageRoot("neither GENAI_HOME nor a home folder is set".to_owned())
        })
    }
}

/// The storage root with its folders created.
#[derive(Debug, Clone)]
pub struct StorageLayout {
    root: PathBuf,
    source: StorageRootSource,
}

impl StorageLayout {
    pub const SUBDIRS: &'static [&'static str] =
        &["models/llm", "models/diffusion", "binaries", "logs", "config", "downloads"];

    /// Creates the root and its folders (what exists is kept).
    pub fn create(root: StorageRoot) -> Result<Self> {
        for sub in Self::SUBDIRS {
            let dir = root.path.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|source| RuntimeError::StorageUnusable { path: dir.clone(), source })?;
        }
        // Canonical, so containment checks compare like with like even through symlinks.
        let path = root
            .path
            .canonicalize()
            .map_err(|source| RuntimeError::StorageUnusable { path: root.path.clone(), source })?;
        Ok(Self { root: path, source: root.source })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn source(&self) -> StorageRootSource {
        self.source
    }

    pub fn llm_models(&self) -> PathBuf {
        self.root.join("models/llm")
    }

    pub fn diffusion_models(&self) -> PathBuf {
        self.root.join("models/diffusion")
    }

    pub fn binaries(&self) -> PathBuf {
        self.root.join("binaries")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    pub fn downloads(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// Joins a relative path from outside (a model file name, an archive entry, an HF path) to
    /// `base`, which must lie inside the root, refusing anything that could land elsewhere.
    pub fn join_inside(&self, base: &Path, untrusted: &str) -> Result<PathBuf> {
        if !base.starts_with(&self.root) {
            return Err(RuntimeError::PathOutsideRoot { given: base.display().to_string() });
        }
        Ok(base.join(relative_inside(untrusted)?))
    }
}

/// Writes JSON to `path` through a temporary file and a rename, so a crash leaves the old file
/// or the new one, never half of one.
pub async fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let (json, tmp) = (encode_json(path, value)?, tmp_beside(path));
    tokio::fs::write(&tmp, &json).await.map_err(|e| RuntimeError::io("writing", &tmp, e))?;
    tokio::fs::rename(&tmp, path).await.map_err(|e| RuntimeError::io("renaming", &tmp, e))
}

fn encode_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| RuntimeError::Internal(format!("encoding {}: {e}", path.display())))
}

/// The temporary file an atomic write goes through: beside `path`, named for this process.
pub(crate) fn tmp_beside(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(tmp)
}

/// Reads a file in one of the app's own stored formats (`{"format": N, ...}`; a file without
/// `format` counts as 0). `Ok(None)` when there is no file. A damaged file, or one written by a
/// newer version of the app, is an error and is left as it is for that version to read.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    current: u32,
) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => decode_versioned(path, &bytes, current).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("reading", path, e)),
    }
}

/// [`read_versioned`] of bytes already read from `path`.
pub fn decode_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    current: u32,
) -> Result<T> {
    let damaged = |e: serde_json::Error| {
        RuntimeError::InvalidInput(format!(
            "{} cannot be read ({e}); it was left as it is",
            path.display()
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(damaged)?;
    let format = value.get("format").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if format > u64::from(current) {
        return Err(RuntimeError::NewerFormat {
            path: path.to_owned(),
            found: format,
            reads: current,
        });
    }
    serde_json::from_value(value).map_err(damaged)
}

/// The format number of the file at `path` when it is newer than `current` (a file this
/// version must not write over); `None` when there is no such file or it is not newer.
pub fn newer_format(path: &Path, current: u32) -> Option<u64> {
    let value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    value.get("format").and_then(serde_json::Value::as_u64).filter(|f| *f > u64::from(current))
}

/// [`write_json_atomic`] for small files written from synchronous code.
pub fn write_json_atomic_sync<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let (json, tmp) = (encode_json(path, value)?, tmp_beside(path));
    std::fs::write(&tmp, &json).map_err(|e| RuntimeError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| RuntimeError::io("renaming", &tmp, e))
}

/// Checks that `untrusted` is a plain relative path: no root, no drive, no `..`, no empty or
/// NUL-containing name, and no backslash (a separator on Windows, a trap everywhere else).
pub fn relative_inside(untrusted: &str) -> Result<PathBuf> {
    let refuse = || RuntimeError::PathOutsideRoot { given: untrusted.to_owned() };
    if untrusted.is_empty() || untrusted.contains(['\0', '\\']) || untrusted.contains(':') {
        return Err(refuse());
    }
    let mut out = PathBuf::new();
    for c in Path::new(untrusted).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refuse())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(refuse());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).map(OsString::from)
    }

    #[test]
    fn genai_home_wins_and_relative_is_pinned_to_cwd() {
        let r = StorageRoot::choose(
            env(&[("GENAI_HOME", "data"), ("HOME", "/home/u")]),
            "linux",
            Some(Path::new("/work")),
        )
        .unwrap();
        assert_eq!(r, StorageRoot::new("/work/data", StorageRootSource::Env));
    }

    #[test]
    fn platform_folders() {
        let cases = [
            ("linux", vec![("HOME", "/home/u")], "/home/u/.local/share/genai-control-panel"),
            (
                "linux",
                vec![("HOME", "/home/u"), ("XDG_DATA_HOME", "/xdg")],
                "/xdg/genai-control-panel",
            ),
            // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
            (
                "linux",
                vec![("HOME", "/home/u"), ("XDG_DATA_HOME", "rel")],
                "/home/u/.local/share/genai-control-panel",
            ),
            (
                "macos",
                vec![("HOME", "/Users/u")],
                "/Users/u/Library/Application Support/genai-control-panel",
            ),
            (
                "linux",
                vec![("HOME", "/home/u"), ("GENAI_HOME", "")],
                "/home/u/.local/share/genai-control-panel",
            ),
        ];
        for (os, vars, want) in cases {
            let r = StorageRoot::choose(env(&vars), os, None).unwrap();
            assert_eq!(r.path, PathBuf::from(want), "{os} {vars:?}");
            assert_eq!(r.source, StorageRootSource::AppData);
        }
    }

    #[test]
    fn no_home_is_a_clear_error() {
        let e = StorageRoot::choose(env(&[]), "linux", None).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::FileSystem);
        assert!(e.to_ipc().remedy.contains("GENAI_HOME"));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\..\\b",
            "C:evil",
            "a\0b",
            "./..",
        ] {
            let e = relative_inside(bad).unwrap_err();
            assert_eq!(e.code(), ipc::ErrorCode::PathOutsideRoot, "{bad:?}");
        }
        assert_eq!(relative_inside("a/./b.gguf").unwrap(), PathBuf::from("a/b.gguf"));
    }

    #[test]
    fn layout_is_created_and_joins_stay_inside() {
        let tmp = std::env::temp_dir().join(format!("genai-storage-test-{}", std::process::id()));
        let layout = StorageLayout::create(StorageRoot::new(&tmp, StorageRootSource::Env)).unwrap();
        for sub in StorageLayout::SUBDIRS {
            assert!(layout.root().join(sub).is_dir(), "{sub} missing");
        }
        let p = layout.join_inside(&layout.llm_models(), "tiny.gguf").unwrap();
        assert_eq!(p, layout.root().join("models/llm/tiny.gguf"));
        assert!(layout.join_inside(Path::new("/etc"), "passwd").is_err());
        assert!(layout.join_inside(&layout.llm_models(), "../../x").is_err());
        // A root that cannot be a folder is a clear error that says how to choose another.
        let file = tmp.join("a-file");
        std::fs::write(&file, b"x").unwrap();
        let e = StorageLayout::create(StorageRoot::new(file.join("home"), StorageRootSource::Env))
            .unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::FileSystem);
        assert!(e.to_string().contains("a-file"), "{e}");
        assert!(e.to_ipc().remedy.contains("GENAI_HOME"));
        // Creating again over an existing tree is fine.
        StorageLayout::create(StorageRoot::new(&tmp, StorageRootSource::Env)).unwrap();
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
