//! A Hugging Face repo's GGUF files as the browse view lists them (#17): one entry per
//! quantisation, a split model's shards as one entry, vision projectors (`mmproj`) apart as
//! add-ons, each file with the SHA-256 the tree gives (verified on download). Pure and
//! table-tested; the repo tree comes from `GET {endpoint}/api/models/{repo}/tree/{revision}
//! ?recursive=true`.

use super::source::shard_of;
use serde::Deserialize;

/// One entry of a repo tree as Hugging Face's API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TreeEntry {
    /// `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub size: u64,
    /// Set for files stored with Git LFS: `oid` is the file's SHA-256.
    #[serde(default)]
    pub lfs: Option<Lfs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Lfs {
    pub oid: String,
    pub size: u64,
}

/// One file to fetch (its SHA-256 from the tree's LFS pointer, when it is one): the type the
/// window receives, so the view needs no copy of it.
pub use ipc::models::HfFile as RepoFile;

/// One choice in the browse view: a quantisation of a model, all its shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantEntry {
    /// The file name without `.gguf` and the shard suffix (`Qwen3-8B-Q4_K_M`).
    pub name: String,
    /// The quantisation as the name says it (`Q4_K_M`, `IQ3_XXS`, `UD-Q4_K_XL`, `BF16`), upper
    /// case; `None` when the name does not say.
    pub quant: Option<String>,
    /// In shard order; one file when the model is not split.
    pub files: Vec<RepoFile>,
    /// All the files' bytes.
    pub bytes: u64,
    /// Every shard the names announce is in the tree.
    pub complete: bool,
}

/// What a repo offers: entries by size (smallest first; a larger file of one model is a
/// higher-quality quantisation), and projectors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoGguf {
    pub entries: Vec<QuantEntry>,
    pub projectors: Vec<RepoFile>,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Whether one `-`/`.`-separated part of a file name is a quantisation name.
fn is_quant(part: &str) -> bool {
    let p = part.to_ascii_uppercase();
    if matches!(p.as_str(), "F16" | "BF16" | "F32" | "FP16" | "FP32" | "MXFP4" | "MXFP4_MOE") {
        return true;
    }
    let Some(rest) = ["IQ", "TQ", "Q"].iter().find_map(|pre| p.strip_prefix(pre)) else {
        return false;
    };
    let mut bits = rest.split('_');
    let width = bits.next().unwrap_or("");
    width.len() == 1
        && width.bytes().all(|b| b.is_ascii_digit())
        && bits.all(|b| (1..=3).contains(&b.len()) && b.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// The quantisation a file name says: its last part that is one (`UD-` kept, as Unsloth's
/// dynamic quantisations are told apart by it).
pub fn quant_of(file_name: &str) -> Option<String> {
    let stem = stem_of(file_name);
    let parts: Vec<&str> = stem.split(['-', '.']).collect();
    let at = parts.iter().rposition(|p| is_quant(p))?;
    let q = parts[at].to_ascii_uppercase();
    Some(match at.checked_sub(1).map(|i| parts[i]) {
        Some(ud) if ud.eq_ignore_ascii_case("ud") => format!("UD-{q}"),
        _ => q,
    })
}

/// The file name without `.gguf` and a shard suffix.
fn stem_of(file_name: &str) -> &str {
    let name = base_name(file_name);
    let stem =
        &name[..name.len() - if name.to_ascii_lowercase().ends_with(".gguf") { 5 } else { 0 }];
    match shard_of(name) {
        Some(_) => &stem[..stem.len() - "-00001-of-00003".len()],
        None => stem,
    }
}

fn is_projector(path: &str) -> bool {
    base_name(path).to_ascii_lowercase().contains("mmproj")
}

fn sha256_of(e: &TreeEntry) -> Option<String> {
    let oid = e.lfs.as_ref()?.oid.to_ascii_lowercase();
    (oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit())).then_some(oid)
}

/// A file of a (possibly split) model: its shard index, the shard count its name announces.
type Shard = (u32, u32, RepoFile);

/// The GGUF files of a repo tree, grouped by (folder, stem).
pub fn group(tree: &[TreeEntry]) -> RepoGguf {
    let mut out = RepoGguf::default();
    let mut groups: Vec<((String, String), Vec<Shard>)> = Vec::new();
    for e in tree {
        if e.kind != "file" || !e.path.to_ascii_lowercase().ends_with(".gguf") {
            continue;
        }
        let file = RepoFile {
            path: e.path.clone(),
            size: e.lfs.as_ref().map_or(e.size, |l| l.size),
            sha256: sha256_of(e),
        };
        if is_projector(&e.path) {
            out.projectors.push(file);
            continue;
        }
        let folder = e.path.rsplit_once('/').map_or("", |(d, _)| d).to_owned();
        let key = (folder, stem_of(&e.path).to_owned());
        let (index, count) = shard_of(base_name(&e.path)).unwrap_or((1, 1));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, shards)) => shards.push((index, count, file)),
            None => groups.push((key, vec![(index, count, file)])),
        }
    }
    for ((_, name), mut shards) in groups {
        shards.sort_by_key(|(i, _, _)| *i);
        shards.dedup_by_key(|(i, _, _)| *i);
        let count = shards.iter().map(|(_, n, _)| *n).max().unwrap_or(1);
        let complete = shards.len() as u32 == count
            && shards.iter().enumerate().all(|(k, (i, n, _))| *i == k as u32 + 1 && *n == count);
        let files: Vec<RepoFile> = shards.into_iter().map(|(_, _, f)| f).collect();
        out.entries.push(QuantEntry {
            quant: quant_of(&files[0].path),
            bytes: files.iter().map(|f| f.size).sum(),
            name,
            files,
            complete,
        });
    }
    out.entries.sort_by(|a, b| a.bytes.cmp(&b.bytes).then_with(|| a.name.cmp(&b.name)));
    out.projectors.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_names_from_file_names() {
        #[rustfmt::skip]
        let table = [
            ("Qwen3-8B-Q4_K_M.gguf", Some("Q4_K_M")),
            ("qwen3-8b-q4_k_m.gguf", Some("Q4_K_M")),
            ("llama-2-7b-chat.Q5_K_S.gguf", Some("Q5_K_S")),
            ("Meta-Llama-3.1-8B-Instruct-IQ3_XXS.gguf", Some("IQ3_XXS")),
            ("gemma-3-27b-it-UD-Q4_K_XL.gguf", Some("UD-Q4_K_XL")),
            ("Qwen3-235B-A22B-Q4_K_M-00002-of-00003.gguf", Some("Q4_K_M")),
            ("Q8_0/Qwen3-235B-A22B-Q8_0-00001-of-00006.gguf", Some("Q8_0")),
            ("gpt-oss-20b-MXFP4.gguf", Some("MXFP4")),
            ("Phi-4-mini-BF16.gguf", Some("BF16")),
            ("model-f16.gguf", Some("F16")),
            ("bitnet-b1.58-2B-TQ1_0.gguf", Some("TQ1_0")),
            // Not quantisation names: a version, a size, a plain name.
            ("Qwen2.5-7B-Instruct.gguf", None),
            ("Qwen3-30B-A3B.gguf", None),
            ("model.gguf", None),
        ];
        for (name, want) in table {
            assert_eq!(quant_of(name).as_deref(), want, "{name}");
        }
    }

    fn file(path: &str, size: u64, sha: Option<&str>) -> TreeEntry {
        TreeEntry {
            kind: "file".into(),
            path: path.into(),
            size: if sha.is_some() { 135 } else { size },
            lfs: sha.map(|s| Lfs { oid: s.into(), size }),
        }
    }

    #[test]
    fn a_repo_tree_grouped_into_entries_shards_and_projectors() {
        let sha = |c: char| c.to_string().repeat(64);
        let (a, b, c, d) = (sha('a'), sha('b'), sha('c'), sha('d'));
        let json = format!(
            r#"[
            {{"type": "file", "oid": "x", "size": 1500, "path": "README.md"}},
            {{"type": "directory", "oid": "y", "size": 0, "path": "Q8_0"}},
            {{"type": "file", "oid": "1", "size": 135, "path": "M-Q4_K_M.gguf",
              "lfs": {{"oid": "{a}", "size": 4000, "pointerSize": 135}}}},
            {{"type": "file", "oid": "2", "size": 135, "path": "M-Q2_K.gguf",
              "lfs": {{"oid": "{b}", "size": 2500, "pointerSize": 135}}}},
            {{"type": "file", "oid": "3", "size": 135, "path": "Q8_0/M-Q8_0-00002-of-00002.gguf",
              "lfs": {{"oid": "{c}", "size": 3000, "pointerSize": 135}}}},
            {{"type": "file", "oid": "4", "size": 135, "path": "Q8_0/M-Q8_0-00001-of-00002.gguf",
              "lfs": {{"oid": "{d}", "size": 5000, "pointerSize": 135}}}},
            {{"type": "file", "oid": "5", "size": 135, "path": "mmproj-M-F16.gguf",
              "lfs": {{"oid": "{a}", "size": 900, "pointerSize": 135}}}},
            {{"type": "file", "oid": "6", "size": 10, "path": "tiny-unquantised.gguf"}}
        ]"#
        );
        let tree: Vec<TreeEntry> = serde_json::from_str(&json).unwrap();
        let repo = group(&tree);
        let names: Vec<(&str, Option<&str>, u64, usize, bool)> = repo
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.quant.as_deref(), e.bytes, e.files.len(), e.complete))
            .collect();
        assert_eq!(
            names,
            [
                ("tiny-unquantised", None, 10, 1, true),
                ("M-Q2_K", Some("Q2_K"), 2500, 1, true),
                ("M-Q4_K_M", Some("Q4_K_M"), 4000, 1, true),
                ("M-Q8_0", Some("Q8_0"), 8000, 2, true),
            ]
        );
        // Shards in order, each with its own checksum; the LFS size, not the pointer's.
        let q8 = &repo.entries[3].files;
        assert_eq!(q8[0].path, "Q8_0/M-Q8_0-00001-of-00002.gguf");
        assert_eq!((q8[0].size, q8[0].sha256.as_deref()), (5000, Some(d.as_str())));
        assert_eq!(q8[1].sha256.as_deref(), Some(c.as_str()));
        // A file stored without LFS has no checksum to verify against.
        assert_eq!(repo.entries[0].files[0].sha256, None);
        assert_eq!(repo.projectors.len(), 1);
        assert_eq!(
            (repo.projectors[0].path.as_str(), repo.projectors[0].size),
            ("mmproj-M-F16.gguf", 900)
        );
    }

    #[test]
    fn a_split_model_missing_a_shard_is_incomplete() {
        let tree = [
            file("M-Q4_K_M-00001-of-00003.gguf", 10, None),
            file("M-Q4_K_M-00003-of-00003.gguf", 10, None),
            file("N-Q4_K_M-00001-of-00002.gguf", 10, None),
            file("N-Q4_K_M-00002-of-00002.gguf", 10, None),
            // The same shard listed twice counts once.
            file("N-Q4_K_M-00002-of-00002.gguf", 10, None),
        ];
        let repo = group(&tree);
        let complete: Vec<(&str, bool, u64)> =
            repo.entries.iter().map(|e| (e.name.as_str(), e.complete, e.bytes)).collect();
        assert_eq!(complete, [("M-Q4_K_M", false, 20), ("N-Q4_K_M", true, 20)]);
        // A checksum that is not a SHA-256 is not kept.
        let odd = group(&[file("O-Q8_0.gguf", 5, Some("not-a-sha"))]);
        assert_eq!(odd.entries[0].files[0].sha256, None);
    }
}
