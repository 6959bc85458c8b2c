//! The app log's setting, `config/app-log.json`.

use super::{mirror_enum, Conv};
use serde::{Deserialize, Serialize};

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub format: u32,
    pub level: Level,
}

impl Settings {
    pub fn of(level: ipc::event::LogLevel) -> Self {
        Self { format: FORMAT, level: level.conv() }
    }
}

mirror_enum! {
    pub enum Level <=> ipc::event::LogLevel { Debug, Info, Warn, Error }
}
