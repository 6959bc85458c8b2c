//! Release archives unpack safely: hostile entries are refused and leave nothing behind.

use runtime::binaries::archive::extract;
use std::io::Write;
use std::path::{Path, PathBuf};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("genai-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
}

/// A .tar.gz written byte by byte, so that hostile names the tar crate would refuse get in.
fn tar_gz(path: &Path, entries: &[Entry]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut b = tar::Builder::new(gz);
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, data, mode, kind, link): (&str, &[u8], u32, tar::EntryType, Option<&str>) =
            match e {
                Entry::File(n, d, m) => (n, d, *m, tar::EntryType::Regular, None),
                Entry::Symlink(n, t) => (n, &[], 0o777, tar::EntryType::Symlink, Some(t)),
            };
        let gnu = h.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(t) = link {
            gnu.linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_entry_type(kind);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

fn zip(path: &Path, entries: &[(&str, &[u8])]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, data) in entries {
        let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn a_release_archive_unpacks_with_run_bits_and_inner_links() {
    let d = Dir::new("good");
    let a = d.0.join("llama-b9860-bin-ubuntu-x64.tar.gz");
    tar_gz(
        &a,
        &[
            Entry::File("build/bin/llama-server", b"\x7fELF...", 0o755),
            Entry::File("build/bin/libggml.so.0", b"lib", 0o644),
            Entry::Symlink("build/bin/libggml.so", "libggml.so.0"),
        ],
    );
    let dest = d.0.join("installed");
    let files = extract(&a, &dest).unwrap();
    assert_eq!(files.len(), 2);
    let server = dest.join("build/bin/llama-server");
    assert_eq!(std::fs::read(&server).unwrap(), b"\x7fELF...");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&server).unwrap().permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(dest.join("build/bin/libggml.so")).unwrap(), b"lib");
    }

    let z = d.0.join("sd-master-bin-win-avx2-x64.zip");
    zip(&z, &[("sd-cli.exe", b"MZ"), ("lib/stable-diffusion.dll", b"dll")]);
    let zdest = d.0.join("zip-installed");
    assert_eq!(extract(&z, &zdest).unwrap().len(), 2);
    assert_eq!(std::fs::read(zdest.join("lib/stable-diffusion.dll")).unwrap(), b"dll");
}

/// Writes one test archive to the given path.
type MakeArchive = Box<dyn Fn(&Path)>;

#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let d = Dir::new("hostile");
    let outside = d.0.join("outside");
    let cases: Vec<(&str, MakeArchive)> = vec![
        ("tar slip", Box::new(|p: &Path| tar_gz(p, &[Entry::File("../outside", b"x", 0o644)]))),
        (
            "absolute tar",
            Box::new(|p: &Path| tar_gz(p, &[Entry::File("/tmp/genai-abs-evil", b"x", 0o644)])),
        ),
        ("link out", Box::new(|p: &Path| tar_gz(p, &[Entry::Symlink("lib", "../..")]))),
        ("absolute link", Box::new(|p: &Path| tar_gz(p, &[Entry::Symlink("etc", "/etc")]))),
        (
            "write through a link",
            Box::new(|p: &Path| {
                tar_gz(p, &[Entry::Symlink("sub", "."), Entry::File("sub", b"x", 0o644)])
            }),
        ),
        ("zip-slip zip", Box::new(|p: &Path| zip(p, &[("../../outside", b"x")]))),
        ("absolute zip", Box::new(|p: &Path| zip(p, &[("/tmp/genai-abs-evil-zip", b"x")]))),
        ("not an archive", Box::new(|p: &Path| std::fs::write(p, b"<html>404</html>").unwrap())),
    ];
    for (i, (name, make)) in cases.iter().enumerate() {
        let ext = if name.ends_with(" zip") { "zip" } else { "tar.gz" };
        let a = d.0.join(format!("case{i}.{ext}"));
        make(&a);
        let dest = d.0.join(format!("dest{i}"));
        let e = extract(&a, &dest).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::BinaryInvalid, "{name}: {e}");
        if !name.starts_with("not") {
            assert!(
                e.to_string().contains("outside") || e.to_string().contains("twice"),
                "{name}: {e}"
            );
        }
        assert!(!dest.exists(), "{name}: destination created");
        let left: Vec<_> = std::fs::read_dir(&d.0)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("unpacking"))
            .collect();
        assert!(left.is_empty(), "{name}: staging left: {left:?}");
    }
    assert!(!outside.exists());
    assert!(
        !Path::new("/tmp/genai-abs-evil").exists()
            && !Path::new("/tmp/genai-abs-evil-zip").exists()
    );
}
