use crate::state::AppState;
use tauri::{AppHandle, Emitter, Manager};
use tokio::sync::broadcast::error::RecvError;

/// Forwards every runtime event to the window on [`ipc::EVENT_CHANNEL`], for the app's lifetime.
pub fn forward_runtime_events(app: &AppHandle) {
    let mut rx = app.state::<AppState>().events.subscribe();
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let stamped = ipc::event::Stamped { at_ms: runtime::now_ms(), event };
                    if let Err(e) = app.emit(ipc::EVENT_CHANNEL, &stamped) {
                        eprintln!("genai-control-panel: could not forward an event: {e}");
                    }
                }
                // The window polls as well, so a missed event only delays a refresh.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
}
