//! Unpacking release archives (`.zip`, `.tar.gz`) so that no entry can land outside the target:
//! absolute paths, `..`, and links pointing outside are refused, and a refused archive leaves
//! nothing behind. Everything is unpacked into a fresh sibling folder first and renamed into
//! place at the end, so a crash never leaves a half-unpacked runtime where a whole one is expected.

use crate::storage::relative_inside;
use crate::{Result, RuntimeError};
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

/// Where a link inside the archive points, resolved against the folder of the link itself;
/// `None` when that leaves the archive's root.
fn link_target_inside(link: &Path, target: &Path) -> Option<PathBuf> {
    if target.is_absolute() {
        return None;
    }
    let mut out: Vec<Component> =
        link.parent().map(|p| p.components().collect()).unwrap_or_default();
    for c in target.components() {
        match c {
            Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop()?;
            }
            _ => return None,
        }
    }
    Some(out.iter().collect())
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

fn write_file(
    archive: &Path,
    root: &Path,
    rel: &Path,
    mut data: impl Read,
    mode: Option<u32>,
) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| RuntimeError::io("creating folder", parent, e))?;
    }
    // A symlink unpacked earlier must not redirect this write outside the root.
    if fs::symlink_metadata(&path).is_ok() {
        return Err(bad(archive, format!("entry {} appears twice", rel.display())));
    }
    let mut out = fs::File::create(&path).map_err(|e| RuntimeError::io("writing", &path, e))?;
    std::io::copy(&mut data, &mut out).map_err(|e| RuntimeError::io("writing", &path, e))?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        // Keep the run bits; drop set-uid and the like.
        let _ = fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o777));
    }
    #[cfg(not(unix))]
    let _ = mode;
    Ok(())
}

fn make_symlink(archive: &Path, root: &Path, rel: &Path, target: &Path) -> Result<()> {
    if link_target_inside(rel, target).is_none() {
        return Err(bad(
            archive,
            format!("link {} points outside the folder ({})", rel.display(), target.display()),
        ));
    }
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| RuntimeError::io("creating folder", parent, e))?;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &path).map_err(|e| RuntimeError::io("linking", &path, e))?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn extract_tar_gz(
    archive: &Path,
    root: &Path,
    on_entry: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<PathBuf>> {
    let file = fs::File::open(archive).map_err(|e| RuntimeError::io("opening", archive, e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut files = Vec::new();
    let mut budget = Budget { entries: 0, bytes: 0 };
    let entries = tar.entries().map_err(|e| bad(archive, e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| bad(archive, e.to_string()))?;
        on_entry(budget.entries as u64, None);
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let header = entry.header();
        budget.take(archive, header.size().unwrap_or(0))?;
        let kind = header.entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        let rel = entry_path(archive, &raw)?;
        if kind.is_dir() {
            fs::create_dir_all(root.join(&rel))
                .map_err(|e| RuntimeError::io("creating folder", root, e))?;
        } else if kind.is_symlink() {
            let target =
                entry.link_name().map_err(|e| bad(archive, e.to_string()))?.unwrap_or_default();
            make_symlink(archive, root, &rel, &target)?;
        } else if kind.is_hard_link() {
            // Hard links can alias any file the extracting user may write; builds do not need them.
            return Err(bad(archive, format!("hard link {raw:?} is not allowed")));
        } else if kind.is_file() || kind.is_contiguous() {
            let mode = header.mode().ok();
            write_file(archive, root, &rel, entry, mode)?;
            files.push(rel);
        } else {
            return Err(bad(archive, format!("entry {raw:?} is a device or other special file")));
        }
    }
    Ok(files)
}

fn extract_zip(
    archive: &Path,
    root: &Path,
    on_entry: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Vec<PathBuf>> {
    let file = fs::File::open(archive).map_err(|e| RuntimeError::io("opening", archive, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(archive, e.to_string()))?;
    let mut files = Vec::new();
    let mut budget = Budget { entries: 0, bytes: 0 };
    for i in 0..zip.len() {
        on_entry(i as u64, Some(zip.len() as u64));
        let mut entry = zip.by_index(i).map_err(|e| bad(archive, e.to_string()))?;
        let raw = entry.name().map_err(|e| bad(archive, e.to_string()))?.into_owned();
        budget.take(archive, entry.size())?;
        let rel = entry_path(archive, &raw)?;
        let mode = entry.unix_mode();
        let is_link = mode.is_some_and(|m| m & 0o170000 == 0o120000);
        if entry.is_dir() {
            fs::create_dir_all(root.join(&rel))
                .map_err(|e| RuntimeError::io("creating folder", root, e))?;
        } else if is_link {
            let mut target = String::new();
            entry.read_to_string(&mut target).map_err(|e| bad(archive, e.to_string()))?;
            make_symlink(archive, root, &rel, Path::new(&target))?;
        } else {
            write_file(archive, root, &rel, &mut entry, mode)?;
            files.push(rel);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_targets() {
        let l = Path::new("lib/libggml.dylib");
        assert_eq!(
            link_target_inside(l, Path::new("libggml.0.dylib")),
            Some(PathBuf::from("lib/libggml.0.dylib"))
        );
        assert_eq!(link_target_inside(l, Path::new("../bin/x")), Some(PathBuf::from("bin/x")));
        assert_eq!(link_target_inside(l, Path::new("../../etc/passwd")), None);
        assert_eq!(link_target_inside(l, Path::new("/etc/passwd")), None);
    }
}
