//! Image generation with sd-cli. So far: reading its progress output (the job API, the argv
//! builder and the Diffusion tab follow; see the Image generation issue).

pub mod args;
pub mod progress;
