//! llama-server and sd-cli builds: the pinned release manifest, the choice of variant, safe
//! unpacking, the two checks, the validation cache, and [`Binaries`], which ties them together.

pub mod archive;
pub mod cache;
pub mod check;
pub mod install;
pub mod manifest;
pub mod scan;

pub use install::{Binaries, BinariesConfig, Ensured, How};
