//! Unpacking release archives (`.zip`, `.tar.gz`) so that no entry can land outside the target:
//! absolute paths, `..`, hard links, and links that point outside (also through other links of the
//! archive) are refused, no write ever goes through a link the archive made (links are created
//! last, see [`Unpacker`]), and a refused archive leaves nothing behind. Everything is unpacked into a fresh sibling folder first and renamed into
//! place at the end, so a crash never leaves a half-unpacked runtime where a whole one is expected.

use crate::storage::relative_inside;
use crate::{Result, RuntimeError};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Files and folders an archive may hold; more is taken as an archive bomb.
const MAX_ENTRIES: usize = 100_000;
/// Unpacked bytes an archive may hold (the largest CUDA runtime archives are about 600 MB).
const MAX_BYTES: u64 = 8 << 30;

fn bad(archive: &Path, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::BadArchive { archive: archive.display().to_string(), detail: detail.into() }
}

/// Unpacks `archive` into `dest` (which must not exist yet) and lists the files it wrote,
/// relative to `dest`. The format is taken from the file name.
pub fn extract(archive: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    extract_with_progress(archive, dest, &mut |_, _| {})
}

/// [`extract`], calling `on_entry(entries done, entries in all when known)` as it goes.
pub fn extract_with_progress(
    archive: &Path,
    dest: &Path,
    on_entry: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<PathBuf>> {
    if dest.exists() {
        return Err(RuntimeError::AlreadyExists(dest.display().to_string()));
    }
    let staging = {
        let mut s = dest.as_os_str().to_owned();
        s.push(format!(".unpacking-{}", std::process::id()));
        PathBuf::from(s)
    };
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| RuntimeError::io("creating folder", &staging, e))?;
    let name = archive.file_name().unwrap_or_default().to_string_lossy().to_ascii_lowercase();
    let result = if name.ends_with(".zip") {
        extract_zip(archive, &staging, on_entry)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        extract_tar_gz(archive, &staging, on_entry)
    } else {
        Err(bad(archive, "not a .zip or .tar.gz"))
    };
    match result {
        Ok(files) => {
            fs::rename(&staging, dest).map_err(|e| RuntimeError::io("renaming", &staging, e))?;
            Ok(files)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Budget shared by all entries of one archive.
struct Budget {
    entries: usize,
    bytes: u64,
}

impl Budget {
    fn take(&mut self, archive: &Path, bytes: u64) -> Result<()> {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        if self.entries > MAX_ENTRIES || self.bytes > MAX_BYTES {
            return Err(bad(archive, "more entries or bytes than any runtime build has"));
        }
        Ok(())
    }
}

fn entry_path(archive: &Path, raw: &str) -> Result<PathBuf> {
    relative_inside(raw.trim_end_matches('/'))
        .map_err(|_| bad(archive, format!("entry {raw:?} would land outside the folder")))
}

/// Unpacks into a fresh staging folder so that no write can be steered by a link: files and
/// folders are written first, while the folder holds no link at all, so every parent is a real
/// folder this unpacking made; links are only recorded then. At the end, each link is checked
/// against the whole archive (no entry lies under a link or at its path, no link lies under
/// another, and its target, followed through every other link of the archive, stays inside) and
/// only then created. Release archives' shared-library version links (`libggml.so ->
/// libggml.so.0`) pass; a chain such as `a -> .`, `a/b -> ..`, `a/b/x` is refused.
struct Unpacker<'a> {
    archive: &'a Path,
    root: &'a Path,
    files: Vec<PathBuf>,
    /// Files and folders written, to find entries that a link would sit on or above.
    written: BTreeSet<PathBuf>,
    links: Vec<(PathBuf, PathBuf)>,
    budget: Budget,
}

/// How many links one lookup may pass through, as the kernel's own limit (ELOOP).
const MAX_LINK_HOPS: usize = 40;

impl<'a> Unpacker<'a> {
    fn new(archive: &'a Path, root: &'a Path) -> Self {
        Self {
            archive,
            root,
            files: Vec::new(),
            written: BTreeSet::new(),
            links: Vec::new(),
            budget: Budget { entries: 0, bytes: 0 },
        }
    }

    fn bad(&self, detail: String) -> RuntimeError {
        bad(self.archive, detail)
    }

    /// A write inside the staging folder that fails because of another entry (a file where a
    /// folder must be, or the reverse) is the archive's fault; anything else is the disk's.
    fn write_error(
        &self,
        what: &'static str,
        rel: &Path,
        path: &Path,
        e: std::io::Error,
    ) -> RuntimeError {
        use std::io::ErrorKind::{AlreadyExists, IsADirectory, NotADirectory};
        match e.kind() {
            AlreadyExists | NotADirectory | IsADirectory => {
                self.bad(format!("entry {} clashes with another entry ({e})", rel.display()))
            }
            _ => RuntimeError::io(what, path, e),
        }
    }

    fn dir(&mut self, raw: &str) -> Result<()> {
        if Path::new(raw).components().all(|c| c == Component::CurDir) {
            return Ok(()); // the archive's own top folder, "./"
        }
        let rel = entry_path(self.archive, raw)?;
        let path = self.root.join(&rel);
        fs::create_dir_all(&path)
            .map_err(|e| self.write_error("creating folder", &rel, &path, e))?;
        self.written.insert(rel);
        Ok(())
    }

    fn file(&mut self, raw: &str, mut data: impl Read, mode: Option<u32>) -> Result<()> {
        let rel = entry_path(self.archive, raw)?;
        let path = self.root.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| self.write_error("creating folder", &rel, parent, e))?;
        }
        // create_new: never through an existing entry of the same name (nor a link, if one were
        // there: O_EXCL does not follow it).
        let mut out = match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(self.bad(format!("entry {} appears twice", rel.display())));
            }
            Err(e) => return Err(self.write_error("writing", &rel, &path, e)),
        };
        std::io::copy(&mut data, &mut out).map_err(|e| RuntimeError::io("writing", &path, e))?;
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            // Keep the run bits; drop set-uid and the like.
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777));
        }
        #[cfg(not(unix))]
        let _ = mode;
        self.written.insert(rel.clone());
        self.files.push(rel);
        Ok(())
    }

    fn link(&mut self, raw: &str, target: &Path) -> Result<()> {
        let rel = entry_path(self.archive, raw)?;
        if !target.is_relative() || target.as_os_str().is_empty() {
            return Err(self.bad(format!(
                "link {} points outside the folder ({})",
                rel.display(),
                target.display()
            )));
        }
        self.links.push((rel, target.to_path_buf()));
        Ok(())
    }

    /// Checks every link against the whole archive, then creates them.
    fn finish(self) -> Result<Vec<PathBuf>> {
        let mut by_path = BTreeMap::new();
        for (rel, target) in &self.links {
            if by_path.insert(rel.clone(), target.clone()).is_some() {
                return Err(self.bad(format!("entry {} appears twice", rel.display())));
            }
        }
        for (rel, target) in &self.links {
            let under = |set: &mut dyn Iterator<Item = &PathBuf>| {
                set.take_while(|p| p.starts_with(rel)).find(|p| *p != rel).cloned()
            };
            if self.written.contains(rel) {
                return Err(
                    self.bad(format!("link {} replaces an entry of the same name", rel.display()))
                );
            }
            let below = under(&mut self.written.range(rel.clone()..))
                .or_else(|| under(&mut by_path.range(rel.clone()..).map(|(p, _)| p)));
            if let Some(entry) = below {
                return Err(self.bad(format!(
                    "entry {} lies under the link {} -> {}",
                    entry.display(),
                    rel.display(),
                    target.display()
                )));
            }
            resolve_inside(&by_path, rel).map_err(|why| {
                self.bad(format!("link {} -> {} {why}", rel.display(), target.display()))
            })?;
        }
        for (rel, target) in &self.links {
            let path = self.root.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| self.write_error("creating folder", rel, parent, e))?;
            }
            #[cfg(unix)]
            std::os::unix::fs::symlink(target, &path)
                .map_err(|e| self.write_error("linking", rel, &path, e))?;
            #[cfg(not(unix))]
            let _ = (path, target);
        }
        Ok(self.files)
    }
}

/// Follows the link at `link` (relative to the root) through every link in `links`, as the
/// kernel would once all of them exist, and says why not when that leaves the root or loops.
/// The link's own folder holds no link (checked before), so its parents are real folders.
fn resolve_inside(links: &BTreeMap<PathBuf, PathBuf>, link: &Path) -> Result<PathBuf, String> {
    let mut at: Vec<&std::ffi::OsStr> = Vec::new();
    if let Some(parent) = link.parent() {
        for c in parent.components() {
            if let Component::Normal(n) = c {
                at.push(n);
            }
        }
    }
    let mut pending: Vec<Component> = links[link].components().rev().collect();
    let mut hops = 1;
    while let Some(c) = pending.pop() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                at.pop().ok_or_else(|| "points outside the folder".to_owned())?;
            }
            Component::Normal(n) => {
                at.push(n);
                let here: PathBuf = at.iter().collect();
                if let Some(next) = links.get(&here) {
                    hops += 1;
                    if hops > MAX_LINK_HOPS {
                        return Err(format!(
                            "goes through more than {MAX_LINK_HOPS} links (a loop)"
                        ));
                    }
                    at.pop();
                    if !next.is_relative() {
                        return Err(format!(
                            "points outside the folder through {}",
                            here.display()
                        ));
                    }
                    pending.extend(next.components().rev());
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err("points outside the folder".to_owned())
            }
        }
    }
    Ok(at.iter().collect())
}

fn extract_tar_gz(
    archive: &Path,
    root: &Path,
    on_entry: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<PathBuf>> {
    let file = fs::File::open(archive).map_err(|e| RuntimeError::io("opening", archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut u = Unpacker::new(archive, root);
    let entries = tar.entries().map_err(|e| bad(archive, e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(archive, e.to_string()))?;
        on_entry(u.budget.entries as u64, None);
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header();
        u.budget.take(archive, header.size().unwrap_or(0))?;
        let kind = header.entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        if kind.is_dir() {
            u.dir(&raw)?;
        } else if kind.is_symlink() {
            let target =
                entry.link_name().map_err(|e| bad(archive, e.to_string()))?.unwrap_or_default();
            u.link(&raw, &target)?;
        } else if kind.is_hard_link() {
            // Hard links can alias any file the extracting user may write; builds do not need them.
            return Err(bad(archive, format!("hard link {raw:?} is not allowed")));
        } else if kind.is_file() || kind.is_contiguous() {
            let mode = header.mode().ok();
            u.file(&raw, entry, mode)?;
        } else {
            return Err(bad(archive, format!("entry {raw:?} is a device or other special file")));
        }
    }
    u.finish()
}

fn extract_zip(
    archive: &Path,
    root: &Path,
    on_entry: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<PathBuf>> {
    let file = fs::File::open(archive).map_err(|e| RuntimeError::io("opening", archive, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(archive, e.to_string()))?;
    let mut u = Unpacker::new(archive, root);
    for i in 0..zip.len() {
        on_entry(i as u64, Some(zip.len() as u64));
        let mut entry = zip.by_index(i).map_err(|e| bad(archive, e.to_string()))?;
        let raw = entry.name().map_err(|e| bad(archive, e.to_string()))?.into_owned();
        u.budget.take(archive, entry.size())?;
        let mode = entry.unix_mode();
        let is_link = mode.is_some_and(|m| m & 0o170000 == 0o120000);
        if entry.is_dir() {
            u.dir(&raw)?;
        } else if is_link {
            let mut target = String::new();
            // A link's target is a short path; more is not a link this archive needs.
            (&mut entry)
                .take(4096)
                .read_to_string(&mut target)
                .map_err(|e| bad(archive, e.to_string()))?;
            u.link(&raw, Path::new(&target))?;
        } else {
            u.file(&raw, &mut entry, mode)?;
        }
    }
    u.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(pairs: &[(&str, &str)]) -> BTreeMap<PathBuf, PathBuf> {
        pairs.iter().map(|(l, t)| (PathBuf::from(l), PathBuf::from(t))).collect()
    }

    #[test]
    fn links_resolve_through_each_other() {
        let ok = |pairs: &[(&str, &str)], link: &str, want: &str| {
            assert_eq!(
                resolve_inside(&links(pairs), Path::new(link)).as_deref(),
                Ok(Path::new(want)),
                "{link} in {pairs:?}"
            )
        };
        let refused = |pairs: &[(&str, &str)], link: &str, why: &str| {
            let e = resolve_inside(&links(pairs), Path::new(link)).unwrap_err();
            assert!(e.contains(why), "{link} in {pairs:?}: {e}");
        };
        ok(&[("lib/libggml.so", "libggml.so.0")], "lib/libggml.so", "lib/libggml.so.0");
        ok(&[("lib/a", "libggml.so.0"), ("lib/b", "a")], "lib/b", "lib/libggml.so.0");
        ok(&[("lib/x", "../bin/x")], "lib/x", "bin/x");
        ok(&[("a", ".")], "a", "");
        refused(&[("lib/x", "../../etc/passwd")], "lib/x", "outside");
        // Through another link: `up -> ..` is fine where it stands, not when reached via `a`.
        refused(&[("a", "sub"), ("sub", "."), ("b", "a/../..")], "b", "outside");
        refused(&[("a", "."), ("b", "a/a/a/..")], "b", "outside");
        refused(&[("a", "b"), ("b", "a")], "a", "loop");
        refused(&[("a", "b"), ("b", "/etc")], "a", "outside");
    }
}
