//! Release archives unpack safely: hostile entries are refused and leave nothing behind.

use runtime::binaries::archive::extract;
use std::io::Write;
use std::path::{Path, PathBuf};

struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("genai-archive-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Copy)]
enum Entry<'a> {
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Dir(&'a str),
    HardLink(&'a str, &'a str),
}

impl Entry<'_> {
    fn name(&self) -> &str {
        match *self {
            Entry::File(n, ..) | Entry::Symlink(n, _) | Entry::Dir(n) | Entry::HardLink(n, _) => n,
        }
    }
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
                Entry::Dir(n) => (n, &[], 0o755, tar::EntryType::Directory, None),
                Entry::HardLink(n, t) => (n, &[], 0o644, tar::EntryType::Link, Some(t)),
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

/// The same entries as a .zip (a hard link has no zip form: it is left out).
fn zip_entries(path: &Path, entries: &[Entry]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for e in entries {
        match *e {
            Entry::File(n, d, m) => {
                z.start_file(n, opts.unix_permissions(m)).unwrap();
                z.write_all(d).unwrap();
            }
            Entry::Symlink(n, t) => z.add_symlink(n, t, opts).unwrap(),
            Entry::Dir(n) => z.add_directory(n, opts).unwrap(),
            Entry::HardLink(..) => {}
        }
    }
    z.finish().unwrap();
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
    let d = TestDir::new("good");
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

/// Every file and folder under `dir`, as relative paths (links listed, not followed).
fn listing(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The formats an entry list can be written in: zip has no hard links, and its writer refuses
/// a name twice.
fn formats_for(entries: &[Entry]) -> &'static [&'static str] {
    let names: std::collections::HashSet<&str> = entries.iter().map(Entry::name).collect();
    if entries.iter().any(|e| matches!(e, Entry::HardLink(..))) || names.len() < entries.len() {
        &["tar.gz"]
    } else {
        &["tar.gz", "zip"]
    }
}

/// Writes the entries as the archive the file name asks for.
fn write_archive(path: &Path, entries: &[Entry]) {
    if path.extension().is_some_and(|e| e == "zip") {
        zip_entries(path, entries)
    } else {
        tar_gz(path, entries)
    }
}

/// The hostile archives: (case, entries, words the error must hold, naming the entry).
type Case = (&'static str, &'static [Entry<'static>], &'static str);

fn hostile_cases() -> Vec<Case> {
    use Entry::*;
    vec![
        (
            "the chain: a -> ., a/b -> .., a/b/escaped.txt",
            &[Symlink("a", "."), Symlink("a/b", ".."), File("a/b/escaped.txt", b"x", 0o644)],
            "a/b",
        ),
        (
            "a longer chain climbing two levels",
            &[
                Symlink("a", "."),
                Symlink("a/b", "."),
                Symlink("a/b/c", "../.."),
                File("a/b/c/escaped.txt", b"x", 0o644),
            ],
            "a/b",
        ),
        (
            "a link under a link",
            &[Symlink("d", "lib"), Symlink("d/x", "y")],
            "entry d/x lies under the link d",
        ),
        (
            "a file under a link to the folder itself",
            &[Symlink("same", "."), File("same/x.txt", b"x", 0o644)],
            "entry same/x.txt lies under the link same",
        ),
        (
            "a link made after a file of the same name",
            &[File("lib/libggml.so", b"lib", 0o644), Symlink("lib/libggml.so", "libggml.so.0")],
            "link lib/libggml.so replaces an entry",
        ),
        (
            "a link to a link that points out",
            &[Symlink("l2", "l1"), Symlink("l1", "sub/../../outside")],
            "link l2 -> l1 points outside",
        ),
        (
            "a folder entry replaced by a link",
            &[Dir("bin/"), File("bin/llama-server", b"x", 0o755), Symlink("bin", "lib")],
            "link bin replaces an entry",
        ),
        ("a link straight out", &[Symlink("lib", "../..")], "link lib -> ../.. points outside"),
        ("an absolute link", &[Symlink("etc", "/etc")], "link etc points outside"),
        ("a link loop", &[Symlink("x", "y"), Symlink("y", "x")], "loop"),
        ("a link twice", &[Symlink("x", "a"), Symlink("x", "b")], "entry x appears twice"),
        (
            "a file twice",
            &[File("x", b"1", 0o644), File("x", b"2", 0o644)],
            "entry x appears twice",
        ),
        (
            "a .. path",
            &[File("../outside.txt", b"x", 0o644)],
            "\"../outside.txt\" would land outside",
        ),
        ("an absolute path", &[File("/tmp/genai-abs-evil", b"x", 0o644)], "would land outside"),
        ("a hard link", &[File("a", b"x", 0o644), HardLink("b", "a")], "hard link \"b\""),
    ]
}

/// Each hostile archive, as .tar.gz and as .zip: refused with BINARY_INVALID naming the entry,
/// nothing written outside the target (the folder around it lists the same before and after),
/// no target folder, no staging folder.
#[test]
fn hostile_archives_are_refused_and_leave_nothing() {
    let d = TestDir::new("hostile");
    let cases = hostile_cases();
    for (i, (name, entries, want)) in cases.into_iter().enumerate() {
        for ext in formats_for(entries) {
            let sandbox = d.0.join(format!("case{i}-{}", ext.replace('.', "")));
            std::fs::create_dir_all(&sandbox).unwrap();
            let a = sandbox.join(format!("release.{ext}"));
            write_archive(&a, entries);
            let before = listing(&d.0);
            let dest = sandbox.join("installed");
            let e = extract(&a, &dest).expect_err(&format!("{name} ({ext}) was accepted"));
            assert_eq!(e.code(), ipc::ErrorCode::BinaryInvalid, "{name} ({ext}): {e}");
            assert!(e.to_string().contains(want), "{name} ({ext}): {e}\nwanted: {want}");
            assert_eq!(listing(&d.0), before, "{name} ({ext}): something was written or left");
            assert!(!dest.exists(), "{name} ({ext}): destination created");
        }
    }
    assert!(!d.0.parent().unwrap().join("outside.txt").exists());
    assert!(!std::env::temp_dir().join("escaped.txt").exists());
    assert!(!Path::new("/tmp/genai-abs-evil").exists());
}

#[test]
fn not_an_archive_is_refused() {
    let d = TestDir::new("garbage");
    for name in ["x.tar.gz", "x.zip", "x.rar"] {
        let a = d.0.join(name);
        std::fs::write(&a, b"<html>404</html>").unwrap();
        let e = extract(&a, &d.0.join("dest")).unwrap_err();
        assert_eq!(e.code(), ipc::ErrorCode::BinaryInvalid, "{name}: {e}");
        assert!(listing(&d.0).iter().all(|n| n.starts_with("x.")), "{name}: {:?}", listing(&d.0));
    }
}

/// What real llama.cpp / sd.cpp archives hold: a top folder ("./" too), shared libraries with
/// their version links (a link to a link), and a link to a folder beside it.
#[test]
fn version_links_and_folder_links_stay_working() {
    use Entry::*;
    let d = TestDir::new("versions");
    let entries = [
        Dir("./"),
        Dir("build/"),
        Dir("build/bin/"),
        File("build/bin/libggml-base.so.0.9.4", b"base", 0o644),
        Symlink("build/bin/libggml-base.so.0", "libggml-base.so.0.9.4"),
        Symlink("build/bin/libggml-base.so", "libggml-base.so.0"),
        File("build/bin/llama-server", b"\x7fELF", 0o755),
        Symlink("build/lib", "bin"),
        Symlink("build/server", "./bin/../bin/llama-server"),
    ];
    for ext in ["tar.gz", "zip"] {
        let a = d.0.join(format!("llama-bin.{ext}"));
        write_archive(&a, &entries);
        let dest = d.0.join(format!("installed-{}", ext.replace('.', "")));
        let files = extract(&a, &dest).unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(files.len(), 2, "{ext}: {files:?}");
        assert_eq!(std::fs::read(dest.join("build/bin/libggml-base.so")).unwrap(), b"base");
        assert_eq!(std::fs::read(dest.join("build/lib/libggml-base.so.0")).unwrap(), b"base");
        assert_eq!(std::fs::read(dest.join("build/server")).unwrap(), b"\x7fELF");
        assert_eq!(
            std::fs::read_link(dest.join("build/bin/libggml-base.so")).unwrap(),
            Path::new("libggml-base.so.0"),
            "{ext}: the link is kept as a link"
        );
    }
}

mod fuzz {
    //! Fuzz target for unpacking, run inside `cargo test` for a fixed number of generated cases
    //! (proptest, no fork, no saved failures): archives of files, folders, links and hard links
    //! whose names and targets are made of `a`, `b`, `lib`, `.`, `..` and an occasional leading
    //! `/`, half of them grown from the hostile table's cases by inserting and changing entries.
    //! Whatever the archive, nothing is written outside the target folder, a refusal leaves no
    //! target and no staging folder and says BINARY_INVALID, and every link of an accepted one
    //! resolves inside the target.

    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Gen {
        File(String),
        Dir(String),
        Link(String, String),
        Hard(String, String),
    }

    fn path() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            4 => Just("a"), 4 => Just("b"), 2 => Just("lib"), 2 => Just("."), 3 => Just(".."),
        ];
        (prop::bool::weighted(0.05), vec(part, 1..4))
            .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
    }

    fn entry() -> impl Strategy<Value = Gen> {
        prop_oneof![
            3 => path().prop_map(Gen::File),
            1 => path().prop_map(|p| Gen::Dir(p + "/")),
            4 => (path(), path()).prop_map(|(p, t)| Gen::Link(p, t)),
            1 => (path(), path()).prop_map(|(p, t)| Gen::Hard(p, t)),
        ]
    }

    fn from_case(e: &Entry) -> Gen {
        match *e {
            Entry::File(n, ..) => Gen::File(n.into()),
            Entry::Dir(n) => Gen::Dir(n.into()),
            Entry::Symlink(n, t) => Gen::Link(n.into(), t.into()),
            Entry::HardLink(n, t) => Gen::Hard(n.into(), t.into()),
        }
    }

    /// A table case with random entries put in and its names changed here and there, or a
    /// random archive.
    fn archive() -> impl Strategy<Value = Vec<Gen>> {
        let cases = hostile_cases().len();
        prop_oneof![
            (0..cases, vec((any::<prop::sample::Index>(), entry()), 0..3)).prop_map(
                |(i, extra)| {
                    let mut v: Vec<Gen> = hostile_cases()[i].1.iter().map(from_case).collect();
                    for (at, e) in extra {
                        v.insert(at.index(v.len() + 1), e);
                    }
                    v
                }
            ),
            vec(entry(), 1..7),
        ]
    }

    fn as_entries(gen: &[Gen]) -> Vec<Entry<'_>> {
        gen.iter()
            .map(|g| match g {
                Gen::File(n) => Entry::File(n, b"data", 0o644),
                Gen::Dir(n) => Entry::Dir(n),
                Gen::Link(n, t) => Entry::Symlink(n, t),
                Gen::Hard(n, t) => Entry::HardLink(n, t),
            })
            .collect()
    }

    /// Every link under `dir` resolves (when it resolves at all) inside `inside`.
    fn links_stay_inside(dir: &Path, inside: &Path) -> Result<(), String> {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let ty = e.file_type().unwrap();
            if ty.is_symlink() {
                if let Ok(real) = p.canonicalize() {
                    if !real.starts_with(inside) {
                        return Err(format!("{} resolves to {}", p.display(), real.display()));
                    }
                }
            } else if ty.is_dir() {
                links_stay_inside(&p, inside)?;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 600,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn no_archive_writes_outside_its_target(gen in archive(), zip_it in any::<bool>()) {
            let entries = as_entries(&gen);
            let formats = formats_for(&entries);
            let ext = if zip_it && formats.len() == 2 { "zip" } else { "tar.gz" };
            let d = TestDir::new("fuzz");
            // The target sits two folders down, so a climb of one or two levels stays visible.
            let a = d.0.join(format!("fuzz.{ext}"));
            write_archive(&a, &entries);
            let inner = d.0.join("box/inner");
            std::fs::create_dir_all(&inner).unwrap();
            let before = listing(&d.0);
            let dest = inner.join("installed");
            match extract(&a, &dest) {
                Ok(_) => {
                    let real = dest.canonicalize().unwrap();
                    let outside: Vec<String> = listing(&d.0)
                        .into_iter()
                        .filter(|p| !p.starts_with("box/inner/installed"))
                        .collect();
                    prop_assert_eq!(outside, before, "written outside: {:?}", gen);
                    let links = links_stay_inside(&real, &real);
                    prop_assert!(links.is_ok(), "{:?}: {:?}", links, gen);
                }
                Err(e) => {
                    prop_assert_eq!(e.code(), ipc::ErrorCode::BinaryInvalid, "{} for {:?}", e, gen);
                    prop_assert_eq!(listing(&d.0), before, "left behind after {}: {:?}", e, gen);
                }
            }
        }
    }
}
