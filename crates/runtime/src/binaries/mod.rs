//! llama-server and sd-cli builds: download, unpack, check, install and cache.
//!
//! So far: safe archive extraction. The release manifest, variant choice, checks and the
//! validation cache follow (see the Runtimes issue).

pub mod archive;
pub mod manifest;
