//! The local OpenAI-compatible endpoint: its settings, where it stands, and its request log.

use crate::IpcError;
use serde::{Deserialize, Serialize};

/// The endpoint's port when none is set (the next free one when it is taken; the status says
/// which and why).
pub const DEFAULT_PORT: u16 = 8088;

/// Seconds a text request waits for the LLM to come back after an image (then 503 with
/// `Retry-After`), when not set.
pub const DEFAULT_WAIT_SECS: u32 = 120;

/// What the user sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSettings {
    /// On by default; off closes the port.
    pub enabled: bool,
    /// `None`: [`DEFAULT_PORT`], or the next free port when it is taken.
    pub port: Option<u16>,
    /// `None`: 127.0.0.1. Another address needs `token`.
    pub host: Option<String>,
    /// `Authorization: Bearer` wanted of every request when set (required off loopback).
    pub token: Option<String>,
    /// How long a text request waits for the LLM paused for an image before a 503.
    pub wait_secs: u32,
    /// Stops a text model the endpoint started after this many minutes without requests
    /// (`None`: keeps it).
    pub idle_unload_mins: Option<u32>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            port: None,
            host: None,
            token: None,
            wait_secs: DEFAULT_WAIT_SECS,
            idle_unload_mins: None,
        }
    }
}

/// One request the endpoint answered (or is answering: `status` 0 until it ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRequest {
    /// Counts up from 1 since the app started.
    pub id: u64,
    /// When it arrived, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `POST /v1/chat/completions` and so on.
    pub route: String,
    pub model: Option<String>,
    /// The HTTP status; 499 when the client went away before the answer ended.
    pub status: u16,
    /// From arrival to the last byte of the answer.
    pub duration_ms: u64,
    /// Tokens of the reply (text routes, when llama-server said or the stream showed).
    pub tokens: Option<u32>,
    /// Images made (images route).
    pub images: Option<u32>,
    /// Why it failed, or what it waited for (a start, a swap, the LLM's return after an image).
    pub note: Option<String>,
}

/// Where the endpoint stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub settings: EndpointSettings,
    pub running: bool,
    /// `http://127.0.0.1:8088/v1`: what an OpenAI client takes as its base URL.
    pub base_url: Option<String>,
    pub port: Option<u16>,
    /// Why the port is not the default, when it is not.
    pub port_note: Option<String>,
    /// Why it is not running although on.
    pub error: Option<IpcError>,
    /// The latest requests, newest last.
    pub requests: Vec<EndpointRequest>,
}
