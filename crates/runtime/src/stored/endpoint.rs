//! The endpoint's settings as they are kept (`config/endpoint.json`).

use super::mirror_struct;

pub const FORMAT: u32 = 1;

/// `config/endpoint.json`.
pub type SettingsFile = super::Kept<Settings>;

mirror_struct! {
    pub struct Settings <=> ipc::endpoint::EndpointSettings {
        enabled: bool,
        port: Option<u16>,
        host: Option<String>,
        token: Option<String>,
        wait_secs: u32,
        idle_unload_mins: Option<u32>,
    }
}
