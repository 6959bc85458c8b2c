//! The LLM server: llama-server's command line, settings fitted to the model and machine, its
//! log, and [`LlamaServer`], which runs it.

pub mod args;
pub mod autoconfig;
pub mod chat;
pub mod estimate;
pub mod fit;
pub mod health;
pub mod log;
pub mod server;

pub use server::{BeforeStart, LlamaServer, ServerConfig};
