//! Where a model comes from: URLs for each source, and the file name it gets here.

use crate::{Result, RuntimeError};
use ipc::models::ModelSource;

/// Hugging Face's download URL for a file on `endpoint` (no trailing `/`, e.g.
/// `https://huggingface.co`): each path segment percent-encoded, `/` kept.
pub fn hf_url(endpoint: &str, repo: &str, file: &str, revision: &str) -> Result<String> {
    let repo = repo.trim().trim_matches('/');
    if repo.split('/').count() != 2 || repo.split('/').any(|p| p.is_empty() || p == "..") {
        return Err(RuntimeError::InvalidInput(format!(
            "repository {repo:?} is not of the form owner/name"
        )));
    }
    let revision = if revision.trim().is_empty() { "main" } else { revision.trim() };
    let file = file.trim().trim_start_matches('/');
    if file.is_empty() || file.split('/').any(|p| p.is_empty() || p == "..") {
        return Err(RuntimeError::InvalidInput(format!(
            "file {file:?} is not a file path in the repository"
        )));
    }
    let enc = |s: &str| s.split('/').map(percent_encode).collect::<Vec<_>>().join("/");
    Ok(format!("{endpoint}/{repo}/resolve/{}/{}", percent_encode(revision), enc(file)))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL to fetch (Hugging Face files on `hf_endpoint`), or `None` for a local import.
pub fn url_of(source: &ModelSource, hf_endpoint: &str) -> Result<Option<String>> {
    match source {
        ModelSource::HuggingFace { repo, file, revision } => {
            hf_url(hf_endpoint, repo, file, revision).map(Some)
        }
        ModelSource::Url { url } => {
            let u = url.trim();
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                return Err(RuntimeError::InvalidInput(format!("{u:?} is not an http(s) URL")));
            }
            Ok(Some(u.to_owned()))
        }
        ModelSource::Local { .. } => Ok(None),
    }
}

/// The file name a source's file gets here: the last path segment, without query or fragment,
/// percent-decoded, with characters that are unsafe in file names removed. Never empty, never a
/// path.
pub fn file_name(source: &ModelSource) -> Result<String> {
    let raw = match source {
        ModelSource::HuggingFace { file, .. } => file.rsplit('/').next().unwrap_or("").to_owned(),
        ModelSource::Url { url } => {
            let path = url.split(['?', '#']).next().unwrap_or("");
            percent_decode(path.rsplit('/').next().unwrap_or(""))
        }
        ModelSource::Local { path } => std::path::Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let clean: String = raw
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '<' | '>' | ':' | '"' | '/' | '\\' | '|' | '?' | '*')
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let clean = clean.trim_start_matches('.').to_owned();
    if clean.is_empty() {
        return Err(RuntimeError::InvalidInput(format!(
            "no file name can be taken from {source:?}"
        )));
    }
    Ok(clean)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A split GGUF's shard name, `<stem>-00001-of-00003.gguf` (any case): (index, count).
pub fn shard_of(file_name: &str) -> Option<(u32, u32)> {
    let lower = file_name.to_ascii_lowercase();
    let stem = lower.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (_, index) = rest.rsplit_once('-')?;
    if index.len() != 5 || count.len() != 5 {
        return None;
    }
    let (i, n) = (index.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
    (i >= 1 && i <= n).then_some((i, n))
}

/// The source of shard `index` of `count`, given the source of any shard of the same model.
pub fn shard_source(source: &ModelSource, index: u32, count: u32) -> ModelSource {
    let rename = |path: &str| -> String {
        let (dir, name) = match path.rfind('/') {
            Some(at) => (&path[..=at], &path[at + 1..]),
            None => ("", path),
        };
        // "<stem>-00001-of-00003.gguf": 20 characters of suffix; keep the stem's own casing.
        let stem = &name[..name.len().saturating_sub("-00001-of-00003.gguf".len())];
        format!("{dir}{stem}-{index:05}-of-{count:05}.gguf")
    };
    match source {
        ModelSource::HuggingFace { repo, file, revision } => ModelSource::HuggingFace {
            repo: repo.clone(),
            file: rename(file),
            revision: revision.clone(),
        },
        ModelSource::Url { url } => {
            let (path, query) = match url.find(['?', '#']) {
                Some(at) => (&url[..at], &url[at..]),
                None => (url.as_str(), ""),
            };
            ModelSource::Url { url: format!("{}{query}", rename(path)) }
        }
        ModelSource::Local { path } => ModelSource::Local { path: rename(path) },
    }
}

/// A model id from its display name: lower case, `[a-z0-9-]` only, no repeated or edge dashes.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if (c.is_whitespace() || c == '-' || c == '_' || c == '.') && !out.ends_with('-') {
            out.push('-');
        }
    }
    let s = out.trim_matches('-').to_owned();
    if s.is_empty() {
        "model".to_owned()
    } else {
        s
    }
}

/// Models that think before answering, by name (the GGUF chat template would be surer; names
/// are what upstream used and what users recognise).
pub fn supports_reasoning(name: &str) -> bool {
    let n = name.to_lowercase();
    [
        "qwen3",
        "deepseek-r1",
        "gpt-oss",
        "qwq",
        "phi-4-reasoning",
        "magistral",
        "glm-4.5",
        "exaone-deep",
        "skywork-or1",
    ]
    .iter()
    .any(|k| n.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_urls() {
        assert_eq!(
            hf_url("https://huggingface.co", "unsloth/Qwen3-4B-GGUF", "Qwen3-4B-Q4_0.gguf", "")
                .unwrap(),
            "https://huggingface.co/unsloth/Qwen3-4B-GGUF/resolve/main/Qwen3-4B-Q4_0.gguf"
        );
        assert_eq!(
            hf_url("https://hf-mirror.com", "a/b", "split files/x y.gguf", "refs/pr/1").unwrap(),
            "https://hf-mirror.com/a/b/resolve/refs%2Fpr%2F1/split%20files/x%20y.gguf"
        );
        for (repo, file) in [
            ("a", "x"),
            ("a/b/c", "x"),
            ("a/..", "x"),
            ("a/b", ""),
            ("a/b", "../x"),
            ("a/b", "d//x"),
        ] {
            assert!(hf_url("https://huggingface.co", repo, file, "main").is_err(), "{repo} {file}");
        }
    }

    #[test]
    fn file_names_never_become_paths() {
        let url = |u: &str| ModelSource::Url { url: u.into() };
        assert_eq!(
            file_name(&url("http://h/a/b/model%20v2.gguf?download=1")).unwrap(),
            "model v2.gguf"
        );
        assert_eq!(file_name(&url("http://h/x/..%2F..%2Fetc%2Fpasswd")).unwrap(), "etcpasswd");
        assert_eq!(file_name(&url("http://h/.bashrc")).unwrap(), "bashrc");
        assert!(file_name(&url("http://h/")).is_err());
        let hf = ModelSource::HuggingFace {
            repo: "a/b".into(),
            file: "sub/dir/m.gguf".into(),
            revision: "main".into(),
        };
        assert_eq!(file_name(&hf).unwrap(), "m.gguf");
    }

    #[test]
    fn shards() {
        assert_eq!(shard_of("Qwen3-235B-Q4_K_M-00001-of-00003.gguf"), Some((1, 3)));
        assert_eq!(shard_of("X-00002-OF-00002.GGUF"), Some((2, 2)));
        assert_eq!(shard_of("model.gguf"), None);
        assert_eq!(shard_of("m-1-of-3.gguf"), None);
        assert_eq!(shard_of("m-00004-of-00003.gguf"), None);
        let url = ModelSource::Url { url: "http://h/d/Big-00001-of-00003.gguf?x=1".into() };
        assert_eq!(
            shard_source(&url, 3, 3),
            ModelSource::Url { url: "http://h/d/Big-00003-of-00003.gguf?x=1".into() }
        );
        let hf = ModelSource::HuggingFace {
            repo: "a/b".into(),
            file: "Q4/Big-00001-of-00002.gguf".into(),
            revision: "main".into(),
        };
        let ModelSource::HuggingFace { file, .. } = shard_source(&hf, 2, 2) else { panic!() };
        assert_eq!(file, "Q4/Big-00002-of-00002.gguf");
    }

    #[test]
    fn slugs_and_reasoning() {
        assert_eq!(slug("Flux 2 Klein Q8_0"), "flux-2-klein-q8-0");
        assert_eq!(slug("  --Tiny  Llama!!-- "), "tiny-llama");
        assert_eq!(slug("???"), "model");
        assert!(supports_reasoning("Qwen3-4B-Q4_0.gguf"));
        assert!(supports_reasoning("DeepSeek-R1-Distill-Qwen-7B"));
        assert!(!supports_reasoning("Llama-3.2-1B-Instruct"));
    }
}
