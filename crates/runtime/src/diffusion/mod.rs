//! Image generation with sd-cli: the command line and offload flags ([`args`]), the progress
//! parser ([`progress`]), the runner of one job's images ([`job`]), the first-run memory
//! estimate ([`estimate`]) and what sd-cli really allocated ([`ledger`]), the server that owns
//! the jobs ([`server`]) and its local HTTP job API ([`api`]); the warm backend that keeps the
//! model loaded between images, stable-diffusion.cpp's `sd-server` ([`sd_server`]).

pub mod api;
pub mod args;
pub mod estimate;
pub mod job;
pub mod ledger;
pub mod progress;
pub mod sd_server;
pub mod server;
pub mod warm;

pub use server::{DiffusionServer, DiffusionServerConfig, JobGate, JobTicket};
