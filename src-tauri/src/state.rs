use ipc::IpcError;
use runtime::{EventBus, Runtime};
use std::sync::Mutex;

/// What every command can reach. The runtime may fail to open (no writable storage folder):
/// commands then answer with that error and its remedy, and each later call tries again, so the
/// user can fix the folder and press Retry without restarting the app.
pub struct AppState {
    pub events: EventBus,
    runtime: Mutex<Result<Runtime, IpcError>>,
}

impl AppState {
    pub fn open() -> Self {
        let events = EventBus::default();
        let runtime = Runtime::open_default(events.clone()).map_err(IpcError::from);
        Self {
            events,
            runtime: Mutex::new(runtime),
        }
    }

    /// The open runtime, or the reason it cannot open (after one more try).
    pub fn runtime(&self) -> Result<Runtime, IpcError> {
        let mut slot = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_err() {
            *slot = Runtime::open_default(self.events.clone()).map_err(IpcError::from);
        }
        slot.clone()
    }

    pub fn startup_error(&self) -> Option<IpcError> {
        self.runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .err()
            .cloned()
    }
}
