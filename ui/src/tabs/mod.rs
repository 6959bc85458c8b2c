//! One file per tab.

pub mod api;
pub mod chat;
pub mod diffusion;
pub mod llm;
pub mod models;
pub mod monitor;
pub mod share;
pub mod system;
