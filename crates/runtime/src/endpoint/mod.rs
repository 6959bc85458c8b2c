//! The local OpenAI-compatible endpoint (issue #16), being built in slices. What exists: the
//! decisions, pure and table-tested — OpenAI's error object, the model list, which installed
//! model a request names, an images request read into the app's [`ipc::diffusion::ImageRequest`]
//! ([`openai`]), and what a text request does given what the LLM server is doing
//! ([`route::plan_text`]: forward, wait for the same start, start, swap after draining, or wait
//! for the reload after an image), [`once::Once`], the one start shared by every request that
//! needs it, and [`files::Files`], the expiring store behind `response_format: "url"`. The HTTP
//! server that answers with them is the next slice.

pub mod files;
pub mod once;
pub mod openai;
pub mod route;
