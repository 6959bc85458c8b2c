//! Image generation with sd-cli. So far: the command line, the offload flags, the progress
//! parser and the runner of one job's images; the HTTP job API, events and the Diffusion tab
//! follow (see the Image generation issue).

pub mod args;
pub mod job;
pub mod progress;
