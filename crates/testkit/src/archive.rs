//! Release archives built in memory, the way llama.cpp and stable-diffusion.cpp publish them.

use sha2::{Digest, Sha256};
use std::io::Write;

/// A `.tar.gz` of `(path, bytes, mode)` entries.
pub fn tar_gz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let items: Vec<Item> = files.iter().map(|&(n, d, m)| Item::File(n, d, m)).collect();
    tar_gz_items(&items)
}

/// One entry of [`tar_gz_items`].
pub enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Link(&'a str, &'a str),
}

/// A `.tar.gz` of files and symbolic links, in the order given.
pub fn tar_gz_items(items: &[Item]) -> Vec<u8> {
    let mut b =
        tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for item in items {
        let mut h = tar::Header::new_gnu();
        match *item {
            Item::File(name, data, mode) => {
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                h.set_cksum();
                b.append_data(&mut h, name, data).unwrap();
            }
            Item::Link(name, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, name, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `.zip` of `(path, bytes)` entries, each marked executable.
pub fn zip(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in files {
        z.start_file(*name, zip::write::SimpleFileOptions::default().unix_permissions(0o755))
            .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
