//! Hugging Face's routes on a [`FixtureServer`], shaped as the Hub answers them: a repo's tree
//! (`/api/models/{repo}/tree/{revision}?recursive=true`, in pages that name the next in a `Link`
//! header), and each file's `resolve` URL answering 302 to a storage path elsewhere on the
//! server with `x-linked-etag` (the LFS SHA-256) and `x-linked-size`, as the Hub does for LFS
//! files. The storage path honours `Range`.

use crate::http::{FixtureServer, Route};

/// One file of a fixture repo.
#[derive(Clone, Debug)]
pub struct HubFile {
    pub path: String,
    /// What the storage path serves: the whole file, or only its start (a header-only file
    /// whose weights are never to be fetched).
    pub bytes: Vec<u8>,
    /// The size the tree lists (the whole file's).
    pub size: u64,
    /// The LFS SHA-256 the tree and the redirect give; `None`: a file not in LFS.
    pub sha256: Option<String>,
}

impl HubFile {
    /// A whole file, its size and SHA-256 its own.
    pub fn whole(path: &str, bytes: Vec<u8>) -> Self {
        let sha256 = Some(crate::archive::sha256_hex(&bytes));
        Self { path: path.to_owned(), size: bytes.len() as u64, bytes, sha256 }
    }

    /// The start of a file of `size` bytes (only the start is served), with a checksum that
    /// stands for the whole.
    pub fn start(path: &str, bytes: Vec<u8>, size: u64) -> Self {
        let sha256 = Some(crate::archive::sha256_hex(path.as_bytes()));
        Self { path: path.to_owned(), bytes, size, sha256 }
    }

    /// The tree's checksum for it replaced (a tree that does not match the file served).
    pub fn claiming(mut self, sha256: &str) -> Self {
        self.sha256 = Some(sha256.to_owned());
        self
    }

    fn tree_entry(&self) -> String {
        let lfs = self.sha256.as_ref().map_or(String::new(), |s| {
            format!(r#", "lfs": {{"oid": "{s}", "size": {}, "pointerSize": 134}}"#, self.size)
        });
        let oid = crate::archive::sha256_hex(self.path.as_bytes());
        format!(
            r#"{{"type": "file", "oid": "{}", "path": "{}", "size": {}{lfs}}}"#,
            &oid[..40],
            self.path,
            self.size
        )
    }
}

/// The tree URL path the app asks for (`revision` as one encoded segment, as the Hub wants).
pub fn tree_path(repo: &str, revision: &str) -> String {
    format!("/api/models/{repo}/tree/{}?recursive=true", revision.replace('/', "%2F"))
}

/// Serves `files` as the repo `repo` at `revision`: the tree in pages of `page` entries (a folder
/// entry first, as the Hub lists them), each file behind its `resolve` URL.
pub fn serve_repo(
    server: &FixtureServer,
    repo: &str,
    revision: &str,
    files: &[HubFile],
    page: usize,
) {
    let mut entries =
        vec![r#"{"type": "directory", "oid": "0", "path": "docs", "size": 0}"#.into()];
    entries.extend(files.iter().map(HubFile::tree_entry));
    let pages: Vec<&[String]> = entries.chunks(page.max(1)).collect();
    let first = tree_path(repo, revision);
    for (i, entries) in pages.iter().enumerate() {
        let here = if i == 0 { first.clone() } else { format!("{first}&cursor={i}") };
        let mut route = Route::bytes(format!("[{}]", entries.join(",")).into_bytes());
        if i + 1 < pages.len() {
            let next = server.url(&format!("{first}&cursor={}", i + 1));
            route = route.header("Link", &format!(r#"<{next}>; rel="next""#));
        }
        server.add(&here, route);
    }
    for (i, f) in files.iter().enumerate() {
        let storage = format!("/xet-bridge/{i}/{}", f.path.rsplit('/').next().unwrap_or(&f.path));
        server.add(&storage, Route::bytes(f.bytes.clone()));
        let mut resolve = Route::redirect(&server.url(&storage))
            .header("x-linked-size", &f.size.to_string())
            .header("x-repo-commit", "0123456789abcdef0123456789abcdef01234567");
        if let Some(sha) = &f.sha256 {
            resolve = resolve.header("x-linked-etag", &format!("\"{sha}\""));
        }
        server.add(&resolve_path(repo, revision, &f.path), resolve);
    }
}

/// A file's `resolve` URL path.
pub fn resolve_path(repo: &str, revision: &str, path: &str) -> String {
    format!("/{repo}/resolve/{revision}/{path}")
}

/// Where a file of [`serve_repo`] is served from (to count what was fetched of it).
pub fn storage_path(files: &[HubFile], path: &str) -> String {
    let i = files.iter().position(|f| f.path == path).expect("a file of the repo");
    format!("/xet-bridge/{i}/{}", path.rsplit('/').next().unwrap_or(path))
}
