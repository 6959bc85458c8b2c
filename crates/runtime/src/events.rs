//! The runtime's event bus. Its events are [`ipc::AppEvent`] itself: every event is meant for the
//! window, so a second, runtime-only enum would only be copied field by field into the first.

use ipc::AppEvent;
use tokio::sync::broadcast;

/// How many events a slow subscriber may fall behind before it misses some (it is told how many
/// it missed, and polling fills the gap).
const CAPACITY: usize = 256;

#[derive(Clone, Debug)]
pub struct EventBus {
    tx: broadcast::Sender<AppEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0 }
    }
}

impl EventBus {
    /// Sends to every current subscriber; an event with no subscriber is dropped, by design.
    pub fn emit(&self, event: AppEvent) {
        trace(&event);
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<AppEvent> {
        self.tx.subscribe()
    }
}

/// What the app's own log (`crate::applog`) keeps of an event: what happened to servers,
/// downloads, jobs and runtimes, failures as warnings; not progress, chat pieces or the
/// servers' own lines (they have their own logs).
fn trace(event: &AppEvent) {
    use ipc::event::LogLevel;
    let level = match event {
        AppEvent::DownloadProgress(_)
        | AppEvent::DownloadsChanged
        | AppEvent::ImageProgress { .. }
        | AppEvent::ChatDelta { .. }
        | AppEvent::ServerLog { .. }
        | AppEvent::LlmBusy { .. }
        | AppEvent::MemoryChanged(_)
        | AppEvent::BinaryProgress(_)
        | AppEvent::SystemChanged => return,
        AppEvent::BinaryLog { line, .. } => line.level,
        AppEvent::ServerCrashed { .. }
        | AppEvent::DownloadFailed { .. }
        | AppEvent::ImageJobFailed { .. }
        | AppEvent::LlmReloadFailed { .. }
        | AppEvent::LlmHealth { ok: false, .. }
        | AppEvent::LlmCpuFallback { .. } => LogLevel::Warn,
        _ => LogLevel::Info,
    };
    let summary = event.summary();
    match level {
        LogLevel::Debug => tracing::debug!(target: "genai::event", "{summary}"),
        LogLevel::Info => tracing::info!(target: "genai::event", "{summary}"),
        LogLevel::Warn => tracing::warn!(target: "genai::event", "{summary}"),
        LogLevel::Error => tracing::error!(target: "genai::event", "{summary}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_subscriber_gets_each_event_in_order() {
        let bus = EventBus::default();
        let mut a = bus.subscribe();
        let mut b = bus.clone().subscribe();
        bus.emit(AppEvent::SystemChanged);
        bus.emit(AppEvent::DownloadFinished { download_id: "d".into(), model_id: "m".into() });
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), AppEvent::SystemChanged);
            assert!(matches!(rx.recv().await.unwrap(), AppEvent::DownloadFinished { .. }));
        }
    }

    #[test]
    fn emitting_without_subscribers_is_fine() {
        EventBus::default().emit(AppEvent::SystemChanged);
    }
}
