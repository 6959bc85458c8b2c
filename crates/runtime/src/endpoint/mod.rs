//! The local OpenAI-compatible endpoint (issue #16): one HTTP server for chat and images that
//! starts, swaps and makes room on demand.
//!
//! - [`server`]: the listener (127.0.0.1, [`ipc::endpoint::DEFAULT_PORT`] or the next free
//!   port; on by default), its settings (`config/endpoint.json`), the checks every request
//!   passes ([`crate::net::guard`], as the image job API), `GET /v1/models`, the expiring
//!   image URLs and the request log.
//! - [`text`]: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, forwarded to the
//!   llama-server of the model asked for, started or swapped first; streams pass through.
//! - [`images`]: `/v1/images/generations` through the image server's job path.
//! - The decisions, pure and table-tested: OpenAI's shapes ([`openai`]), what a text request
//!   does given the LLM server's state ([`route::plan_text`]), the one start shared by every
//!   request that needs it ([`once::Once`]), the store behind `response_format: "url"`
//!   ([`files::Files`]).
//!
//! The orchestrator stays the one place that decides about memory: an image request is a job
//! like the window's, and a text request that finds the LLM paused for an image waits for it.

pub mod files;
mod images;
pub mod once;
pub mod openai;
pub mod route;
pub mod server;
mod text;

pub use server::{Endpoint, EndpointConfig};
