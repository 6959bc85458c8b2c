//! The resident image backend of a running diffusion server: one [`Backend`] (sd-server) at a
//! time, started by the first image, kept for the next ones while its launch settings stay the
//! same, released when the usage mode, the idle timer, a cancel, a crash, the user or a stop
//! says so. Every change of state is an event with its reason.
//!
//! Rules (pure functions, table-tested): [`reuse`] (keep the backend for the next image, or why
//! not) and [`keep_after`] (stay warm after a request, or release). A release whose exit cannot
//! be confirmed leaves the backend in its slot as `Stopping`: the next image fails with that
//! error instead of starting a second one beside it.

use super::args::{Offload, SdImage};
use super::job::JobOut;
use super::progress::{Snapshot, Tracker};
use super::sd_server::{Backend, ServerSpec};
use crate::events::EventBus;
use crate::process::{pidfile, LoadDeadline};
use crate::{now_ms, Result, RuntimeError};
use ipc::diffusion::{BackendInfo, BackendState, ReleaseReason, UsageMode};
use ipc::orchestrator::Footprint;
use ipc::AppEvent;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long a model load may go without a line, and in all.
pub const LOAD: LoadDeadline =
    LoadDeadline { quiet: Duration::from_secs(120), max: Duration::from_secs(15 * 60) };
/// SIGTERM, then SIGKILL after this.
pub const RELEASE_GRACE: Duration = Duration::from_secs(10);

/// Whether the resident backend can make the next image, or why it has to go first.
pub fn reuse(
    resident: &ServerSpec,
    gone: bool,
    next: &ServerSpec,
) -> std::result::Result<(), ReleaseReason> {
    if gone {
        Err(ReleaseReason::Crashed)
    } else if resident.model != next.model
        || resident.offload != next.offload
        || resident.threads != next.threads
    {
        Err(ReleaseReason::FlagsChanged)
    } else {
        Ok(())
    }
}

/// After a request: stay warm (`None`) or release now, and why. `auto` stays warm unless the LLM
/// had to be paused for this request (its memory is wanted back).
pub fn keep_after(mode: UsageMode, llm_paused: bool) -> Option<ReleaseReason> {
    match (mode, llm_paused) {
        (UsageMode::Single, _) | (UsageMode::Auto, true) => Some(ReleaseReason::Single),
        (UsageMode::Burst, _) | (UsageMode::Auto, false) => None,
    }
}

/// Whether an LLM about to start, needing `need`, fits in what is free now beside the resident
/// backend (whose memory is already taken out of `free_ram` / `free_vram`): within `margin` of
/// each. A need of VRAM without a GPU reading does not fit.
pub fn llm_fits(need: Footprint, free_ram: u64, free_vram: Option<u64>, margin: f64) -> bool {
    let within = |need: u64, free: u64| need as f64 <= margin * free as f64;
    within(need.ram_bytes, free_ram)
        && (need.vram_bytes == 0 || free_vram.is_some_and(|f| within(need.vram_bytes, f)))
}

/// What an image needs beside a resident backend that already holds `held` (its weights and
/// its process) of the `full` need.
pub fn beside_resident(full: Footprint, held: Footprint) -> Footprint {
    Footprint {
        ram_bytes: full.ram_bytes.saturating_sub(held.ram_bytes),
        vram_bytes: full.vram_bytes.saturating_sub(held.vram_bytes),
    }
}

/// Where the backend's pid is kept while it runs (a crashed app's backend is stopped at the next
/// launch from it: [`crate::process::pidfile::stop_orphan`]).
pub fn pidfile_in(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("sd-server.json")
}

/// sd-server's file name in a build.
pub const SERVER_FILE: &str = if cfg!(windows) { "sd-server.exe" } else { "sd-server" };

/// The sd-server of a build: beside its sd-cli, when the build has one.
pub fn server_beside(sd_cli: &std::path::Path) -> Option<PathBuf> {
    let p = sd_cli.with_file_name(SERVER_FILE);
    crate::process::is_executable(&p).then_some(p)
}

/// The slot and what the window shows of it.
pub struct Warm {
    exe: PathBuf,
    /// `run/sd-server.json`.
    pidfile: PathBuf,
    lora_dir: PathBuf,
    events: EventBus,
    slot: tokio::sync::Mutex<Option<Backend>>,
    info: Mutex<BackendInfo>,
    /// What the resident backend was started with (its memory is in use), if one is.
    resident: Mutex<Option<ServerSpec>>,
    /// Bumped by every image: an idle timer of an older one does nothing.
    idle_epoch: AtomicU64,
}

impl std::fmt::Debug for Warm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warm").field("exe", &self.exe).finish_non_exhaustive()
    }
}

impl Warm {
    /// `exe` is sd-server; `run_dir` holds its pidfile and its (empty) LoRA folder.
    pub fn new(exe: PathBuf, run_dir: PathBuf, events: EventBus) -> Arc<Self> {
        Arc::new(Self {
            exe,
            pidfile: pidfile_in(&run_dir),
            lora_dir: run_dir.join("sd-server-loras"),
            events,
            slot: tokio::sync::Mutex::new(None),
            info: Mutex::new(BackendInfo::default()),
            resident: Mutex::new(None),
            idle_epoch: AtomicU64::new(0),
        })
    }

    pub fn info(&self) -> BackendInfo {
        self.info.lock().unwrap().clone()
    }

    /// Whether a resident backend of this server's model holds `offload` and `threads` (the
    /// next image then needs only its own buffers).
    pub fn holds(&self, offload: Offload, threads: Option<u32>) -> bool {
        self.resident
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|s| s.offload == offload && s.threads == threads)
    }

    fn set(
        &self,
        state: BackendState,
        reason: Option<ReleaseReason>,
        change: impl FnOnce(&mut BackendInfo),
    ) {
        let (previous, pid) = {
            let mut i = self.info.lock().unwrap();
            let previous = i.state;
            i.state = state;
            if reason.is_some() {
                i.last_release = reason;
            }
            change(&mut i);
            if state == BackendState::Absent {
                i.pid = None;
            }
            (previous, i.pid)
        };
        if previous != state {
            self.events.emit(AppEvent::DiffusionBackend { state, previous, reason, pid });
        }
    }

    /// Makes the images of one request on the resident backend, starting one first when there
    /// is none or it cannot serve `image` (another model, other flags). `on_line` sees every
    /// line, the load's included; `tracker` follows them.
    #[allow(clippy::too_many_arguments)]
    pub async fn generate(
        &self,
        image: &SdImage,
        count: u32,
        cancel: watch::Receiver<bool>,
        tracker: &mut Tracker,
        watchdog: Duration,
        mut on_progress: impl FnMut(Snapshot),
        mut on_line: impl FnMut(&str),
    ) -> Result<JobOut> {
        self.idle_epoch.fetch_add(1, Ordering::SeqCst);
        // Cancelled while it waited (for the gate, or for the slot): nothing is started.
        if *cancel.borrow() {
            return Err(RuntimeError::Cancelled);
        }
        // The slot is held while a release or another request finishes: a cancel meanwhile ends
        // the wait at once.
        let mut asked = cancel.clone();
        let mut slot = tokio::select! {
            slot = self.slot.lock() => slot,
            Ok(_) = asked.wait_for(|c| *c) => return Err(RuntimeError::Cancelled),
        };
        if *cancel.borrow() {
            return Err(RuntimeError::Cancelled);
        }
        let spec = |port| ServerSpec {
            model: image.model.clone(),
            offload: image.offload,
            threads: image.threads,
            port,
            lora_dir: self.lora_dir.display().to_string(),
        };
        if let Some(b) = slot.as_mut() {
            if let Err(reason) = reuse(b.spec(), b.is_gone(), &spec(b.spec().port)) {
                self.release_locked(&mut slot, reason).await?;
            }
        }
        if slot.is_none() {
            self.set(BackendState::Starting, None, |_| {});
            let mut stop_rx = cancel.clone();
            let stop = async move {
                let _ = stop_rx.wait_for(|c| *c).await;
            };
            let port = crate::net::free_port()?;
            let started = Backend::start(
                &self.exe,
                spec(port),
                LOAD,
                |l| {
                    on_line(l);
                    if tracker.feed(l) {
                        on_progress(tracker.snapshot());
                    }
                },
                stop,
            )
            .await;
            let b = match started {
                Ok(b) => b,
                Err(e) => {
                    self.set(BackendState::Absent, None, |_| {});
                    return Err(e);
                }
            };
            let exe = self.exe.display().to_string();
            if let Err(e) = pidfile::write(&self.pidfile, b.pid(), &exe).await {
                tracing::warn!(
                    "no pidfile for sd-server ({e}); a crash of the app would leave it running"
                );
            }
            let (pid, load_ms) = (b.pid(), b.load_time().as_millis() as u64);
            self.set(BackendState::Ready, None, |i| {
                i.pid = Some(pid);
                i.load_ms = Some(load_ms);
                i.started_at_ms = Some(now_ms());
            });
            *self.resident.lock().unwrap() = Some(b.spec().clone());
            *slot = Some(b);
        }
        let b = slot.as_mut().expect("started above");
        b.set_watchdog(watchdog);
        self.set(BackendState::Busy, None, |_| {});
        let out = b.generate(image, count, cancel, tracker, on_progress, on_line).await;
        if b.is_gone() {
            *slot = None;
            *self.resident.lock().unwrap() = None;
            pidfile::remove(&self.pidfile);
            let reason = match &out {
                Err(RuntimeError::Cancelled) => ReleaseReason::Cancel,
                Err(RuntimeError::ServerFailed { code: ipc::ErrorCode::JobStuck, .. }) => {
                    ReleaseReason::Stuck
                }
                _ => ReleaseReason::Crashed,
            };
            self.set(BackendState::Absent, Some(reason), |_| {});
        } else {
            self.set(BackendState::Ready, None, |i| i.last_used_ms = Some(now_ms()));
        }
        out
    }

    /// After a request: releases the backend when `mode` says so, else arms the idle release
    /// (`idle` zero: never).
    pub async fn settle(self: &Arc<Self>, mode: UsageMode, llm_paused: bool, idle: Duration) {
        if let Some(reason) = keep_after(mode, llm_paused) {
            if let Err(e) = self.release(reason).await {
                tracing::warn!("the image backend was not released: {e}");
            }
            return;
        }
        if idle.is_zero() {
            return;
        }
        let epoch = self.idle_epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(idle).await;
            let Some(me) = me.upgrade() else { return };
            let mut slot = me.slot.lock().await;
            // An image since then (or one that ran while this waited for the slot) re-armed it.
            if me.idle_epoch.load(Ordering::SeqCst) == epoch {
                if let Err(e) = me.release_locked(&mut slot, ReleaseReason::IdleTimeout).await {
                    tracing::warn!("the idle image backend was not released: {e}");
                }
            }
        });
    }

    /// Ends the resident backend, if any (waiting for an image in progress to end first).
    /// Answers whether there was one.
    pub async fn release(&self, reason: ReleaseReason) -> Result<bool> {
        self.idle_epoch.fetch_add(1, Ordering::SeqCst);
        let mut slot = self.slot.lock().await;
        self.release_locked(&mut slot, reason).await
    }

    async fn release_locked(
        &self,
        slot: &mut Option<Backend>,
        reason: ReleaseReason,
    ) -> Result<bool> {
        let Some(b) = slot.as_mut() else { return Ok(false) };
        self.set(BackendState::Stopping, None, |_| {});
        match b.release(RELEASE_GRACE).await {
            Ok(_) => {
                *slot = None;
                *self.resident.lock().unwrap() = None;
                pidfile::remove(&self.pidfile);
                self.set(BackendState::Absent, Some(reason), |_| {});
                Ok(true)
            }
            // Left in its slot, Stopping: the next image tries again and fails with this rather
            // than starting a second backend beside one that may still hold the memory.
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::args::SdModel;

    #[test]
    fn a_resident_backend_leaves_only_the_image_buffers_to_find() {
        let f = |ram, vram| Footprint { ram_bytes: ram, vram_bytes: vram };
        let cases = [
            (f(10, 8), f(4, 6), f(6, 2)),
            (f(10, 0), f(4, 0), f(6, 0)),
            // A held figure above the need (measured at another time) never goes negative.
            (f(3, 1), f(4, 6), f(0, 0)),
        ];
        for (full, held, want) in cases {
            assert_eq!(beside_resident(full, held), want);
        }
    }

    fn spec(model: &str, clip_on_cpu: bool, threads: Option<u32>, port: u16) -> ServerSpec {
        ServerSpec {
            model: SdModel::Single(model.into()),
            offload: Offload { clip_on_cpu, ..Default::default() },
            threads,
            port,
            lora_dir: "/r/loras".into(),
        }
    }

    #[test]
    fn the_resident_backend_serves_the_next_image_only_as_launched() {
        let resident = spec("/m/a.gguf", false, Some(4), 40001);
        let cases = [
            // The port is the backend's own, not part of what the image needs.
            (spec("/m/a.gguf", false, Some(4), 0), false, Ok(())),
            (spec("/m/a.gguf", true, Some(4), 0), false, Err(ReleaseReason::FlagsChanged)),
            (spec("/m/a.gguf", false, None, 0), false, Err(ReleaseReason::FlagsChanged)),
            (spec("/m/b.gguf", false, Some(4), 0), false, Err(ReleaseReason::FlagsChanged)),
            (spec("/m/a.gguf", false, Some(4), 0), true, Err(ReleaseReason::Crashed)),
        ];
        for (next, gone, want) in cases {
            assert_eq!(reuse(&resident, gone, &next), want, "{next:?} gone={gone}");
        }
    }

    #[test]
    fn an_llm_start_releases_the_backend_only_when_it_would_not_fit_beside_it() {
        const GIB: u64 = 1 << 30;
        let need = |ram, vram| Footprint { ram_bytes: ram * GIB, vram_bytes: vram * GIB };
        let cases = [
            // (LLM need, free RAM, free VRAM, fits)
            (need(4, 0), 8 * GIB, None, true),
            (need(7, 0), 8 * GIB, None, false), // 7 > 0.75 × 8
            (need(1, 6), 8 * GIB, Some(10 * GIB), true),
            (need(1, 9), 8 * GIB, Some(10 * GIB), false),
            (need(1, 2), 8 * GIB, None, false), // VRAM wanted, no GPU reading
            (need(0, 0), 0, None, true),
        ];
        for (n, ram, vram, want) in cases {
            assert_eq!(llm_fits(n, ram, vram, 0.75), want, "{n:?} {ram} {vram:?}");
        }
    }

    #[test]
    fn usage_modes_decide_what_happens_after_a_request() {
        use UsageMode::*;
        let cases = [
            (Burst, false, None),
            (Burst, true, None),
            (Single, false, Some(ReleaseReason::Single)),
            (Single, true, Some(ReleaseReason::Single)),
            (Auto, false, None),
            (Auto, true, Some(ReleaseReason::Single)),
        ];
        for (mode, paused, want) in cases {
            assert_eq!(keep_after(mode, paused), want, "{mode:?} llm_paused={paused}");
        }
    }
}
