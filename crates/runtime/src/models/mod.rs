//! The model registry: one `<id>.json` per model beside its file, written atomically.
//!
//! A file becomes a model only once it is complete, verified and (for GGUF) readable; the JSON
//! is written last, so a crash never leaves a half-registered model.

pub mod browse;
pub mod catalog;
pub mod hf;
pub mod hf_api;
pub mod in_use;
pub mod queue;
pub mod queue_file;
pub mod source;

use crate::storage::{decode_versioned, write_json_atomic, StorageLayout};
use crate::stored::model::{ModelRecord, FORMAT};
use crate::{Result, RuntimeError};
use ipc::models::{GgufSummary, ModelInfo, ModelKind, ModelList, VerifyResult};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct ModelStore {
    layout: StorageLayout,
}

impl ModelStore {
    pub fn new(layout: StorageLayout) -> Self {
        Self { layout }
    }

    pub fn dir(&self, kind: ModelKind) -> PathBuf {
        match kind {
            ModelKind::Llm => self.layout.llm_models(),
            ModelKind::Diffusion => self.layout.diffusion_models(),
        }
    }

    /// Where a file named by an outside source goes; refuses names that would leave the folder.
    pub fn file_path(&self, kind: ModelKind, file_name: &str) -> Result<PathBuf> {
        self.layout.join_inside(&self.dir(kind), file_name)
    }

    fn meta_path(&self, kind: ModelKind, id: &str) -> PathBuf {
        self.dir(kind).join(format!("{id}.json"))
    }

    /// Joins an outside file name to a folder inside the storage root, refusing escapes.
    pub fn layout_join(&self, dir: &Path, file_name: &str) -> Result<PathBuf> {
        self.layout.join_inside(dir, file_name)
    }

    /// An id for `name` that no model has yet: its slug, or the slug with `-2`, `-3`, ...
    pub fn free_id(&self, name: &str) -> String {
        self.free_id_avoiding(name, &[])
    }

    /// [`ModelStore::free_id`], also avoiding ids that downloads in flight have reserved.
    pub fn free_id_avoiding(&self, name: &str, reserved: &[&str]) -> String {
        let base = source::slug(name);
        let taken = |id: &str| {
            reserved.contains(&id)
                || [ModelKind::Llm, ModelKind::Diffusion]
                    .iter()
                    .any(|k| self.meta_path(*k, id).exists())
        };
        if !taken(&base) {
            return base;
        }
        (2..).map(|n| format!("{base}-{n}")).find(|id| !taken(id)).expect("an unused id")
    }

    pub async fn register(&self, info: &ModelInfo) -> Result<()> {
        write_json_atomic(&self.meta_path(info.kind, &info.id), &ModelRecord::of(FORMAT, info))
            .await
    }

    /// Every model, newest first. A metadata file that does not parse is skipped, not fatal; one
    /// from a newer version of the app is named in `unreadable`.
    pub async fn list(&self) -> Result<ModelList> {
        let mut models = Vec::new();
        let mut unreadable = Vec::new();
        for kind in [ModelKind::Llm, ModelKind::Diffusion] {
            let dir = self.dir(kind);
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RuntimeError::io("listing", &dir, e)),
            };
            while let Ok(Some(entry)) = rd.next_entry().await {
                let p = entry.path();
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // Not a record: a download's sidecar (`<file>.part.json`) also lives here.
                if !name.ends_with(".json") || name.ends_with(".part.json") {
                    continue;
                }
                let Ok(bytes) = tokio::fs::read(&p).await else { continue };
                match decode_versioned::<ModelRecord>(&p, &bytes, FORMAT) {
                    Ok(record) => models.push(record.get()),
                    Err(e @ RuntimeError::NewerFormat { .. }) => unreadable.push(e.to_ipc()),
                    Err(_) => {}
                }
            }
        }
        models.sort_by(|a, b| b.downloaded_at_ms.cmp(&a.downloaded_at_ms).then(a.id.cmp(&b.id)));
        let mut seen = HashSet::new();
        let total_bytes = models
            .iter()
            .flat_map(|m| m.all_files())
            .filter(|f| seen.insert(f.path.clone()))
            .map(|f| f.size_bytes)
            .sum();
        Ok(ModelList { models, total_bytes, unreadable })
    }

    pub async fn get(&self, id: &str) -> Result<ModelInfo> {
        self.list()
            .await?
            .models
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| RuntimeError::ModelNotFound(id.to_owned()))
    }

    /// Deletes the model's metadata and its files, except files another model also uses (a
    /// VAE shared by two variants), and its folder when that is left empty.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let all = self.list().await?.models;
        let info = all
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| RuntimeError::ModelNotFound(id.to_owned()))?;
        let used_elsewhere: HashSet<String> =
            all.iter().filter(|m| m.id != id).flat_map(|m| m.all_files()).map(|f| f.path).collect();
        let root = self.dir(info.kind);
        let mut folders = HashSet::new();
        for f in info.all_files() {
            let path = PathBuf::from(&f.path);
            // Only files inside our models folder are ever deleted.
            if used_elsewhere.contains(&f.path) || !path.starts_with(&root) {
                continue;
            }
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RuntimeError::io("deleting", &path, e)),
            }
            if let Some(parent) = path.parent().filter(|p| *p != root) {
                folders.insert(parent.to_path_buf());
            }
        }
        let meta = self.meta_path(info.kind, id);
        tokio::fs::remove_file(&meta).await.map_err(|e| RuntimeError::io("deleting", &meta, e))?;
        for dir in folders {
            let _ = tokio::fs::remove_dir(&dir).await; // only when empty
        }
        Ok(())
    }

    /// Checks each GGUF file's layout against its length, then hashes every file of the model
    /// and compares each with its stored SHA-256. The answer carries the primary file's hash.
    pub async fn verify(&self, id: &str) -> Result<VerifyResult> {
        let info = self.get(id).await?;
        let mut first = None;
        let mut had_checksum = false;
        for f in info.all_files() {
            let path = PathBuf::from(&f.path);
            if !path.is_file() {
                return Err(RuntimeError::io(
                    "reading",
                    &path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "the file is missing"),
                ));
            }
            // A cut or padded GGUF is found from its header before any hashing.
            let actual = tokio::task::spawn_blocking(move || {
                if is_gguf_path(&path) {
                    read_gguf(&path)?;
                }
                sha256_file(&path)
            })
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))??;
            if let Some(expected) = &f.sha256 {
                had_checksum = true;
                if *expected != actual {
                    return Err(RuntimeError::ChecksumMismatch {
                        file: f.path.clone(),
                        expected: expected.clone(),
                        actual,
                    });
                }
            }
            first.get_or_insert(actual);
        }
        Ok(VerifyResult { sha256: first.unwrap_or_default(), had_checksum })
    }
}

/// A `.gguf` file name (any case).
pub fn is_gguf_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// Reads a GGUF file's header and checks it against the file's length: whole, not padded, and
/// of tensor types llama.cpp loads ([`gguf::Header::check_layout`]). Header and length only: no
/// weight is read, so this costs milliseconds for any model size.
pub fn read_gguf(path: &Path) -> Result<gguf::Header> {
    gguf::read_checked_from_path(path).map_err(|e| match e {
        gguf::Error::Io(io) => RuntimeError::io("reading", path, io),
        e => RuntimeError::GgufInvalid { path: path.display().to_string(), detail: e.to_string() },
    })
}

/// The header of a model split in `files` (its shards in order): the first shard's, with every
/// shard's tensors; each shard checked whole and loadable ([`read_gguf`]).
pub fn read_gguf_split(files: &[PathBuf]) -> Result<gguf::Header> {
    let (first, rest) = files
        .split_first()
        .ok_or_else(|| RuntimeError::InvalidInput("a model with no files".into()))?;
    let mut h = read_gguf(first)?;
    for shard in rest {
        h.tensors.extend(read_gguf(shard)?.tensors);
    }
    Ok(h)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| RuntimeError::io("opening", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| RuntimeError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The compact GGUF facts kept with a model.
pub fn summarize(h: &gguf::Header) -> GgufSummary {
    use gguf::Value;
    fn text(v: &Value) -> String {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Array(items) if items.len() > 20 => format!("[{} items]", items.len()),
            Value::Array(items) => {
                format!("[{}]", items.iter().map(text).collect::<Vec<_>>().join(", "))
            }
            Value::SkippedArray { len, .. } => format!("[{len} items]"),
            Value::Bool(b) => b.to_string(),
            Value::F32(f) => f.to_string(),
            Value::F64(f) => f.to_string(),
            other => other.as_u64().map(|n| n.to_string()).unwrap_or_else(|| format!("{other:?}")),
        };
        if s.chars().count() > 500 {
            s.chars().take(500).collect::<String>() + "…"
        } else {
            s
        }
    }
    GgufSummary {
        version: h.version,
        architecture: h.architecture().map(str::to_owned),
        name: h.name().map(str::to_owned),
        block_count: h.block_count(),
        context_length: h.context_length(),
        embedding_length: h.embedding_length(),
        feed_forward_length: h.feed_forward_length(),
        head_count: h.head_count_per_layer().and_then(|v| v.into_iter().max()),
        head_count_kv: h.head_count_kv_per_layer().and_then(|v| v.into_iter().max()),
        expert_count: h.expert_count(),
        file_type: h.file_type(),
        tensor_count: h.tensors.len() as u64,
        kv_count: h.metadata.len() as u64,
        raw: h.metadata.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
    }
}
