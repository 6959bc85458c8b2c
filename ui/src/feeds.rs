//! The window's feeds: what the app's events fill, for the tabs to read. `provide()` creates
//! each feed, puts it in the context and subscribes to the app's events once; a tab takes the
//! feeds it shows with `expect_context` and never imports the shell.

use ipc::diffusion::JobProgress;
use ipc::event::{DownloadProgress, ImageStage, LogLine, ServerKind};
use ipc::runtimes::{BinaryProgress, RuntimeKind, SetupStage};
use ipc::AppEvent;
use leptos::leptos_dom::helpers::{set_interval_with_handle, IntervalHandle};
use leptos::prelude::*;

/// One line of the event log.
#[derive(Clone, Debug, PartialEq)]
pub struct EventEntry {
    pub at_ms: u64,
    /// `error`, `warn`, `ok` or `info`: the line's colour.
    pub class: &'static str,
    pub text: String,
}

/// Recent app events, newest last, shared by the tabs that show them.
#[derive(Clone, Copy)]
pub struct EventLog(pub RwSignal<Vec<EventEntry>>);

/// What the Resource Monitor's charts mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    LlmPaused,
    LlmBack,
    LlmReloadFailed,
    JobStart,
    JobEnd,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at_ms: u64,
    pub kind: MarkerKind,
}

/// Marks on the memory charts, newest last (the last 10 minutes' worth are kept).
#[derive(Clone, Copy)]
pub struct Timeline(pub RwSignal<Vec<Marker>>);

/// How long the charts look back.
pub const HISTORY_MS: u64 = 10 * 60 * 1000;

fn class_of(event: &AppEvent) -> &'static str {
    match event {
        AppEvent::DownloadFailed { .. }
        | AppEvent::ServerCrashed { .. }
        | AppEvent::ImageJobFailed { .. }
        | AppEvent::LlmReloadFailed { .. } => "error",
        AppEvent::LlmOffloaded { .. }
        | AppEvent::ImageJobCancelled { .. }
        | AppEvent::LlmHealth { ok: false, .. }
        | AppEvent::LlmKeptStopped
        | AppEvent::LlmCpuFallback { .. } => "warn",
        AppEvent::EndpointNote { message } if message.contains("waits") => "warn",
        AppEvent::DownloadFinished { .. }
        | AppEvent::ImageJobFinished { .. }
        | AppEvent::LlmReloaded { .. }
        | AppEvent::LlmHealth { ok: true, .. } => "ok",
        _ => "info",
    }
}

fn marker_of(event: &AppEvent) -> Option<MarkerKind> {
    Some(match event {
        AppEvent::LlmOffloaded { .. } => MarkerKind::LlmPaused,
        AppEvent::LlmReloaded { .. } => MarkerKind::LlmBack,
        AppEvent::LlmReloadFailed { .. } => MarkerKind::LlmReloadFailed,
        AppEvent::ImageJobStarted { .. } => MarkerKind::JobStart,
        AppEvent::ImageJobFinished { .. }
        | AppEvent::ImageJobFailed { .. }
        | AppEvent::ImageJobCancelled { .. } => MarkerKind::JobEnd,
        _ => return None,
    })
}

/// Bumped when a download finishes or fails or a model is deleted: every list of models (the
/// Models, LLM and Diffusion tabs) refreshes at once.
#[derive(Clone, Copy)]
pub struct ModelsChanged(pub RwSignal<u64>);

/// The id of the tab on screen (`system`, `models`, `llm`, `diffusion`, `monitor`): a tab that
/// polls does so only while it is shown. Provided by the shell.
#[derive(Clone, Copy)]
pub struct ShownTab(pub Signal<&'static str>);

/// Whether the window is on screen: false while it is minimised or hidden (the page's
/// visibility, which WebKit keeps). No timer runs while it is false.
#[derive(Clone, Copy)]
pub struct PageVisible(pub Signal<bool>);

fn page_visible() -> PageVisible {
    let visible = RwSignal::new(!document().hidden());
    // The listener lives as long as the window; its handle is not needed.
    let _ = window_event_listener(leptos::ev::visibilitychange, move |_| {
        visible.set(!document().hidden())
    });
    PageVisible(visible.into())
}

/// Whether tab `tab` is on screen: it is the tab shown and the window is visible.
pub fn on_screen(tab: &'static str) -> Memo<bool> {
    let shown = expect_context::<ShownTab>().0;
    let visible = expect_context::<PageVisible>().0;
    Memo::new(move |_| shown.get() == tab && visible.get())
}

/// Calls `f` at once and then every `period` (a new period starts a new timer), while tab `tab`
/// is on screen and the window is visible; no timer exists otherwise, so a hidden tab or a
/// minimised window costs nothing. For what nothing announces (the time axis of a chart
/// moving on); everything else is refreshed by the events that announce it. Returns whether
/// the timer is on.
pub fn every_while_shown(
    tab: &'static str,
    period: Signal<std::time::Duration>,
    f: impl Fn() + Clone + 'static,
) -> Memo<bool> {
    let on = on_screen(tab);
    let timer = StoredValue::new(None::<IntervalHandle>);
    let stop = move || {
        if let Some(t) = timer.get_value() {
            t.clear();
            timer.set_value(None);
        }
    };
    Effect::new(move |_| {
        stop();
        if on.get() {
            f();
            timer.set_value(set_interval_with_handle(f.clone(), period.get()).ok());
        }
    });
    on_cleanup(stop);
    on
}

/// The newest reading of memory the app announced (`MemoryChanged`: sent only while a tab that
/// shows live memory is on screen, and only when it differs visibly from the one before).
#[derive(Clone, Copy)]
pub struct LiveMemory(pub RwSignal<Option<ipc::system::MemorySample>>);

/// The tabs that show live memory (the Models tab's fit badges follow free memory).
const MEMORY_TABS: [&str; 3] = ["system", "monitor", "models"];

/// Tells the app whether a tab that shows live memory is on screen, each time that changes.
/// Called by the shell once the shown tab is known.
pub fn watch_memory() {
    let shown = expect_context::<ShownTab>().0;
    let visible = expect_context::<PageVisible>().0;
    let watching = Memo::new(move |_| visible.get() && MEMORY_TABS.contains(&shown.get()));
    Effect::new(move |_| {
        let on = watching.get();
        leptos::task::spawn_local(async move {
            let _ = crate::api::memory_watch(on).await;
        });
    });
}

/// What the download queue announces: bumped when its rows changed (queued, paused, cleared,
/// finished...), and the newest progress of a running download. The Models tab reads the rows
/// again on the first and updates one row on the second; nothing polls the queue.
#[derive(Clone, Copy)]
pub struct DownloadsFeed {
    pub changed: RwSignal<u64>,
    pub progress: RwSignal<Option<DownloadProgress>>,
}

/// Bumped whenever the machine's situation changed (a server started or stopped): tabs showing
/// hardware refresh at once instead of waiting for their next poll.
#[derive(Clone, Copy)]
pub struct SystemChanged(pub RwSignal<u64>);

/// What runtime setups report, per runtime: the newest progress event, and a counter bumped by
/// each log line and by the end of a setup (the Runtime card reads its status again then).
#[derive(Clone, Copy)]
pub struct RuntimeFeed {
    progress: [RwSignal<Option<BinaryProgress>>; 2],
    ticks: [RwSignal<u64>; 2],
}

impl RuntimeFeed {
    fn new() -> Self {
        Self {
            progress: [RwSignal::new(None), RwSignal::new(None)],
            ticks: [RwSignal::new(0), RwSignal::new(0)],
        }
    }

    fn index(kind: RuntimeKind) -> usize {
        match kind {
            RuntimeKind::Llama => 0,
            RuntimeKind::Diffusion => 1,
        }
    }

    pub fn progress(&self, kind: RuntimeKind) -> Option<BinaryProgress> {
        self.progress[Self::index(kind)].get()
    }

    pub fn log_tick(&self, kind: RuntimeKind) -> u64 {
        self.ticks[Self::index(kind)].get()
    }

    fn on_event(&self, event: &AppEvent) {
        match event {
            AppEvent::BinaryLog { runtime, .. } => {
                self.ticks[Self::index(*runtime)].update(|n| *n += 1)
            }
            AppEvent::BinaryProgress(p) => {
                let i = Self::index(p.runtime);
                if matches!(p.stage, SetupStage::Done | SetupStage::Failed) {
                    self.ticks[i].update(|n| *n += 1);
                }
                self.progress[i].set(Some(p.clone()));
            }
            _ => {}
        }
    }
}

/// What the LLM server reports: a counter bumped on each state change or crash (the tab reads
/// the status again), its new log lines, and the test chat's streamed pieces.
#[derive(Clone, Copy)]
pub struct LlmFeed {
    pub ticks: RwSignal<u64>,
    /// Bumped only when the server starts, stops or crashes (what moves free memory), not on
    /// health checks or busy slots: the Models tab's fit badges follow it.
    pub states: RwSignal<u64>,
    pub lines: RwSignal<Vec<LogLine>>,
    /// The test-chat reply streaming now, or the last one: its pieces joined, so the window
    /// holds one reply's text, never every piece since it opened.
    pub chat: RwSignal<StreamedReply>,
}

/// One reply's pieces so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamedReply {
    pub request_id: String,
    pub content: String,
    pub reasoning: String,
    pub done: bool,
}

impl StreamedReply {
    fn add(&mut self, request_id: &str, content: &str, reasoning: &str, done: bool) {
        if self.request_id != request_id {
            *self = StreamedReply { request_id: request_id.to_owned(), ..Default::default() };
        }
        self.content.push_str(content);
        self.reasoning.push_str(reasoning);
        self.done |= done;
    }
}

/// Log lines the LLM tab keeps.
pub const LLM_LOG_LEN: usize = 1000;

/// Adds a server's log line, keeping the newest [`LLM_LOG_LEN`].
fn push_capped(lines: RwSignal<Vec<LogLine>>, line: &LogLine) {
    lines.update(|l| {
        l.push(line.clone());
        let extra = l.len().saturating_sub(LLM_LOG_LEN);
        l.drain(..extra);
    });
}

impl LlmFeed {
    fn on_event(&self, event: &AppEvent) {
        match event {
            AppEvent::ServerState { server: ServerKind::Llm, .. }
            | AppEvent::ServerCrashed { server: ServerKind::Llm, .. } => {
                self.states.update(|n| *n += 1);
                self.ticks.update(|n| *n += 1);
            }
            AppEvent::LlmHealth { .. }
            | AppEvent::LlmBusy { .. }
            | AppEvent::LlmCpuFallback { .. } => self.ticks.update(|n| *n += 1),
            AppEvent::ServerLog { server: ServerKind::Llm, line } => push_capped(self.lines, line),
            AppEvent::ChatDelta { request_id, content, reasoning, done } => {
                self.chat.update(|r| r.add(request_id, content, reasoning, *done))
            }
            _ => {}
        }
    }
}

/// What this computer's RPC worker reports: a counter bumped on each state change, its lines.
#[derive(Clone, Copy)]
pub struct RpcWorkerFeed {
    pub ticks: RwSignal<u64>,
    pub lines: RwSignal<Vec<LogLine>>,
}

impl RpcWorkerFeed {
    fn on_event(&self, event: &AppEvent) {
        match event {
            AppEvent::ServerState { server: ServerKind::RpcWorker, .. } => {
                self.ticks.update(|n| *n += 1)
            }
            AppEvent::ServerLog { server: ServerKind::RpcWorker, line } => {
                push_capped(self.lines, line)
            }
            _ => {}
        }
    }
}

/// What the diffusion server reports: a counter bumped on each state change and job end (the
/// tab reads the status and its job again), its log lines, and the newest job progress.
#[derive(Clone, Copy)]
pub struct DiffusionFeed {
    pub ticks: RwSignal<u64>,
    pub lines: RwSignal<Vec<LogLine>>,
    /// (job id, progress) from the newest `ImageProgress`.
    pub progress: RwSignal<Option<(String, JobProgress)>>,
    /// The id of the job that ended last (finished, failed or cancelled).
    pub ended: RwSignal<Option<String>>,
}

impl DiffusionFeed {
    fn on_event(&self, event: &AppEvent) {
        match event {
            AppEvent::ServerState { server: ServerKind::Diffusion, .. }
            | AppEvent::DiffusionBackend { .. } => self.ticks.update(|n| *n += 1),
            AppEvent::ServerLog { server: ServerKind::Diffusion, line } => {
                push_capped(self.lines, line)
            }
            AppEvent::ImageJobStarted { job_id, count, steps, .. } => {
                self.ticks.update(|n| *n += 1);
                let start = JobProgress::at_start(ImageStage::Loading, *steps, *count);
                self.progress.set(Some((job_id.clone(), start)));
            }
            AppEvent::ImageProgress {
                job_id,
                stage,
                step,
                total_steps,
                percent,
                image,
                images,
                eta_secs,
            } => self.progress.set(Some((
                job_id.clone(),
                JobProgress {
                    stage: *stage,
                    current_step: *step,
                    total_steps: *total_steps,
                    percentage: *percent,
                    current_image: *image,
                    total_images: *images,
                    eta_secs: *eta_secs,
                },
            ))),
            AppEvent::ImageJobFinished { job_id, .. }
            | AppEvent::ImageJobFailed { job_id, .. }
            | AppEvent::ImageJobCancelled { job_id } => {
                self.ended.set(Some(job_id.clone()));
                self.ticks.update(|n| *n += 1);
            }
            _ => {}
        }
    }
}

/// What the OpenAI-compatible endpoint reports: a counter bumped when it opened, moved or
/// closed (its card reads the status again), and the requests it answered since the window
/// opened, newest last (the card starts from the status's log and adds these).
#[derive(Clone, Copy)]
pub struct EndpointFeed {
    pub ticks: RwSignal<u64>,
    pub requests: RwSignal<Vec<ipc::endpoint::EndpointRequest>>,
}

/// Requests the API card keeps.
pub const ENDPOINT_LOG_LEN: usize = 200;

impl EndpointFeed {
    fn on_event(&self, event: &AppEvent) {
        match event {
            AppEvent::EndpointChanged => self.ticks.update(|n| *n += 1),
            AppEvent::EndpointRequest(r) => self.requests.update(|l| {
                l.push(r.clone());
                let extra = l.len().saturating_sub(ENDPOINT_LOG_LEN);
                l.drain(..extra);
            }),
            _ => {}
        }
    }
}

const EVENT_LOG_LEN: usize = 50;

/// Creates every feed, provides it to the tabs, and fills them from the app's events.
pub fn provide() {
    let log = EventLog(RwSignal::new(Vec::new()));
    provide_context(log);
    let changed = SystemChanged(RwSignal::new(0));
    provide_context(changed);
    let models_changed = ModelsChanged(RwSignal::new(0));
    provide_context(models_changed);
    provide_context(page_visible());
    let downloads = DownloadsFeed { changed: RwSignal::new(0), progress: RwSignal::new(None) };
    provide_context(downloads);
    let runtime_feed = RuntimeFeed::new();
    provide_context(runtime_feed);
    let llm_feed = LlmFeed {
        ticks: RwSignal::new(0),
        states: RwSignal::new(0),
        lines: RwSignal::new(Vec::new()),
        chat: RwSignal::new(StreamedReply::default()),
    };
    provide_context(llm_feed);
    let diffusion_feed = DiffusionFeed {
        ticks: RwSignal::new(0),
        lines: RwSignal::new(Vec::new()),
        progress: RwSignal::new(None),
        ended: RwSignal::new(None),
    };
    provide_context(diffusion_feed);
    let rpc_feed = RpcWorkerFeed { ticks: RwSignal::new(0), lines: RwSignal::new(Vec::new()) };
    provide_context(rpc_feed);
    let endpoint_feed =
        EndpointFeed { ticks: RwSignal::new(0), requests: RwSignal::new(Vec::new()) };
    provide_context(endpoint_feed);
    let timeline = Timeline(RwSignal::new(Vec::new()));
    provide_context(timeline);
    let live_memory = LiveMemory(RwSignal::new(None));
    provide_context(live_memory);
    crate::api::listen_events(move |now, event| {
        if let Some(kind) = marker_of(&event) {
            timeline.0.update(|m| {
                m.push(Marker { at_ms: now, kind });
                m.retain(|x| x.at_ms + HISTORY_MS >= now);
            });
        }
        runtime_feed.on_event(&event);
        llm_feed.on_event(&event);
        diffusion_feed.on_event(&event);
        rpc_feed.on_event(&event);
        endpoint_feed.on_event(&event);
        match &event {
            AppEvent::SystemChanged | AppEvent::ServerState { .. } => changed.0.update(|n| *n += 1),
            AppEvent::DownloadFinished { .. }
            | AppEvent::DownloadFailed { .. }
            | AppEvent::ModelDeleted { .. } => models_changed.0.update(|n| *n += 1),
            _ => {}
        }
        if let AppEvent::MemoryChanged(sample) = &event {
            live_memory.0.set(Some(sample.clone()));
            return;
        }
        match &event {
            AppEvent::DownloadProgress(p) => downloads.progress.set(Some(p.clone())),
            AppEvent::DownloadsChanged
            | AppEvent::DownloadFinished { .. }
            | AppEvent::DownloadFailed { .. } => downloads.changed.update(|n| *n += 1),
            _ => {}
        }
        // Progress ticks would drown the log; the queue panel shows them.
        if matches!(
            event,
            AppEvent::DownloadProgress(_)
                | AppEvent::DownloadsChanged
                | AppEvent::BinaryProgress(_)
                | AppEvent::ServerLog { .. }
                | AppEvent::LlmBusy { .. }
                | AppEvent::ChatDelta { .. }
                | AppEvent::ImageProgress { .. }
                | AppEvent::EndpointRequest(_)
                | AppEvent::EndpointChanged
        ) {
            return;
        }
        log.0.update(|lines| {
            lines.push(EventEntry { at_ms: now, class: class_of(&event), text: event.summary() });
            let extra = lines.len().saturating_sub(EVENT_LOG_LEN);
            lines.drain(..extra);
        })
    });
}
