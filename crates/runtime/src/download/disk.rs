//! Free disk space, checked before a download starts.

use std::path::Path;

/// Bytes available to this user on the file system holding `dir`; `None` where unknown.
#[cfg(unix)]
pub fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(not(unix))]
pub fn available_bytes(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn temp_dir_has_some_space() {
        assert!(super::available_bytes(&std::env::temp_dir()).unwrap() > 0);
        assert_eq!(super::available_bytes(std::path::Path::new("/no/such/dir")), None);
    }
}
