//! The local worker's tensor cache (`ggml-rpc-server -c`): one file per tensor over 10 MiB,
//! named by the 16 hex digits of its data's hash, written once and never removed by llama.cpp
//! (it has no cap). The app keeps it in its storage under a cap, removing the oldest first.

use std::path::Path;
use std::time::SystemTime;

/// One file of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFile {
    pub name: String,
    pub bytes: u64,
    /// When it was written.
    pub written: SystemTime,
}

/// What a trim did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub removed: usize,
    pub freed_bytes: u64,
    pub kept_bytes: u64,
}

/// Whether llama.cpp could have written a file of this name (16 lower-case hex digits): nothing
/// else in the folder is ever removed.
pub fn is_cache_name(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The indexes of the files to remove so that what stays is at most `cap` bytes: the oldest
/// first (ties by name, so the choice is stable). Pure.
pub fn over_cap(files: &[CacheFile], cap: u64) -> Vec<usize> {
    let mut total: u64 = files.iter().map(|f| f.bytes).sum();
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|&a, &b| {
        (files[a].written, &files[a].name).cmp(&(files[b].written, &files[b].name))
    });
    let mut out = Vec::new();
    for i in order {
        if total <= cap {
            break;
        }
        total -= files[i].bytes;
        out.push(i);
    }
    out
}

/// The cache files in `dir` (none when it does not exist).
pub fn list(dir: &Path) -> std::io::Result<Vec<CacheFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_file() && is_cache_name(&name) {
            let written = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            files.push(CacheFile { name, bytes: meta.len(), written });
        }
    }
    Ok(files)
}

/// Removes the oldest cache files in `dir` until the rest is at most `cap` bytes. Blocking.
pub fn trim(dir: &Path, cap: u64) -> std::io::Result<Trimmed> {
    let files = list(dir)?;
    let mut done =
        Trimmed { kept_bytes: files.iter().map(|f| f.bytes).sum(), ..Trimmed::default() };
    for i in over_cap(&files, cap) {
        let f = &files[i];
        match std::fs::remove_file(dir.join(&f.name)) {
            Ok(()) => {
                done.removed += 1;
                done.freed_bytes += f.bytes;
                done.kept_bytes -= f.bytes;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => done.kept_bytes -= f.bytes,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file(name: &str, mib: u64, age_s: u64) -> CacheFile {
        CacheFile {
            name: name.into(),
            bytes: mib << 20,
            written: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 - age_s),
        }
    }

    #[test]
    fn the_oldest_go_first_until_the_rest_fits() {
        let files = [
            file("a", 100, 10),
            file("b", 300, 40),
            file("c", 200, 30),
            file("d", 50, 20),
            file("e", 50, 40),
        ];
        let table: [(u64, &[&str]); 6] = [
            (700, &[]),
            (650, &["b"]),
            (400, &["b"]),
            (350, &["b", "e"]),
            (340, &["b", "e", "c"]),
            (0, &["b", "e", "c", "d", "a"]),
        ];
        for (cap_mib, want) in table {
            let got: Vec<&str> =
                over_cap(&files, cap_mib << 20).iter().map(|&i| files[i].name.as_str()).collect();
            assert_eq!(got, want, "cap {cap_mib} MiB");
        }
    }

    #[test]
    fn only_names_llama_cpp_writes_are_cache_files() {
        assert!(is_cache_name("0123456789abcdef"));
        for other in ["0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "notes.txt", ""] {
            assert!(!is_cache_name(other), "{other}");
        }
    }
}
