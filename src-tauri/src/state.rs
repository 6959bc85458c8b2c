use ipc::IpcError;
use runtime::system::history::MemoryFeed;
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime};
use std::sync::{Arc, Mutex};

/// What every command can reach. The runtime may fail to open (no writable storage folder):
/// commands then answer with that error and its remedy, and each later call tries again, so the
/// user can fix the folder and press Retry without restarting the app.
pub struct AppState {
    pub events: EventBus,
    system: Arc<SystemProbe>,
    memory: Arc<MemoryFeed>,
    runtime: Mutex<Result<Runtime, IpcError>>,
}

impl AppState {
    pub fn open() -> Self {
        let events = EventBus::default();
        let system = Arc::new(SystemProbe::real());
        let memory = Arc::new(MemoryFeed::new(system.clone()));
        let runtime = Runtime::open_default(events.clone(), system.clone(), memory.clone())
            .map_err(IpcError::from);
        Self { events, system, memory, runtime: Mutex::new(runtime) }
    }

    /// The open runtime, or the reason it cannot open (after one more try).
    pub fn runtime(&self) -> Result<Runtime, IpcError> {
        let mut slot = self.runtime.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_err() {
            *slot = Runtime::open_default(
                self.events.clone(),
                self.system.clone(),
                self.memory.clone(),
            )
            .map_err(IpcError::from);
        }
        slot.clone()
    }

    /// Hardware detection works without the storage folder, so it is reachable without it.
    pub fn system(&self) -> &SystemProbe {
        &self.system
    }

    /// Live memory, read once for every consumer (the window, the runtime's decisions and the
    /// Monitor's ring); reachable without the storage folder.
    pub fn memory(&self) -> &Arc<MemoryFeed> {
        &self.memory
    }

    pub fn startup_error(&self) -> Option<IpcError> {
        self.runtime.lock().unwrap_or_else(|p| p.into_inner()).as_ref().err().cloned()
    }
}
