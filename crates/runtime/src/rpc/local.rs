//! This computer as a worker for other machines (#18): the installed build's `ggml-rpc-server`,
//! started on 127.0.0.1 by default (any other address only once the user confirmed that the
//! protocol has no authentication), its tensor cache in the app's storage trimmed under a cap
//! before each start and after each stop, its lines in its own server log, ready once it
//! answers its own probe.

use super::probe::probe;
use super::{cache, worker_beside};
use crate::binaries::Binaries;
use crate::logfile::ServerLog;
use crate::process::{pidfile, Event, Supervised};
use crate::{EventBus, Result, RuntimeError, StorageLayout};
use ipc::event::{LogLevel, LogLine, ServerKind, ServerState};
use ipc::rpc::{LendableDevice, ShareArgs, ShareStatus, DEFAULT_CACHE_CAP_GIB, DEFAULT_PORT};
use ipc::runtimes::RuntimeKind;
use ipc::AppEvent;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a started worker has to answer its own probe.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// Why a listening address is refused without the user's confirmation, or `None`. Pure.
pub fn exposure(host: &str, confirmed: bool) -> Option<String> {
    (ipc::rpc::exposes(host) && !confirmed).then(|| {
        format!(
            "listening on {host} lets every computer that reaches it use this one: llama.cpp's \
             RPC protocol has no authentication and no encryption. Confirm that this is a trusted \
             network, or keep 127.0.0.1"
        )
    })
}

#[derive(Clone)]
pub struct LocalWorker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LocalWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.inner.shared.lock().unwrap().status.clone();
        f.debug_struct("LocalWorker").field("status", &status).finish()
    }
}

struct Inner {
    storage: StorageLayout,
    events: EventBus,
    binaries: Binaries,
    logs: ServerLog,
    shared: Mutex<Shared>,
    op: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Shared {
    status: ShareStatus,
    stop: Option<oneshot::Sender<()>>,
    done: Option<oneshot::Receiver<()>>,
}

impl LocalWorker {
    pub fn new(storage: StorageLayout, events: EventBus, binaries: Binaries) -> Self {
        let logs = ServerLog::new(
            ServerKind::RpcWorker,
            storage.logs().join("rpc-server.log"),
            events.clone(),
        );
        let me = Self {
            inner: Arc::new(Inner {
                storage,
                events,
                binaries,
                logs,
                shared: Mutex::new(Shared::default()),
                op: tokio::sync::Mutex::new(()),
            }),
        };
        // A worker left by a crash of the app (perhaps listening beyond this computer) ends.
        if let Some(pid) = pidfile::stop_orphan(&me.pidfile()) {
            let why =
                format!("stopped ggml-rpc-server (pid {pid}) left running by an earlier session");
            me.log(LogLevel::Warn, why);
        }
        me
    }

    fn pidfile(&self) -> PathBuf {
        self.inner.storage.root().join("run").join("rpc-server.json")
    }

    /// Where llama.cpp keeps the tensor cache: `$LLAMA_CACHE/rpc`, `LLAMA_CACHE` being this.
    pub fn cache_root(&self) -> PathBuf {
        self.inner.storage.root().join("rpc-cache")
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_root().join("rpc")
    }

    /// Where it stands. The cache's size is read from its folder only while the worker runs
    /// (and fills it); else it is what the last trim kept.
    pub fn status(&self) -> ShareStatus {
        let mut s = self.inner.shared.lock().unwrap().status.clone();
        s.lendable = self.lendable();
        if s.running {
            s.cache_bytes =
                cache::list(&self.cache_dir()).map_or(0, |f| f.iter().map(|f| f.bytes).sum());
        }
        s
    }

    /// The devices the installed llama.cpp build can lend (the GPUs its check found, and the
    /// CPU); just the CPU before one is installed.
    fn lendable(&self) -> Vec<LendableDevice> {
        let installed = self.inner.binaries.installed(RuntimeKind::Llama);
        LendableDevice::from_check(installed.as_ref().map_or(&[][..], |i| &i.devices[..]))
    }

    pub fn logs(&self) -> Vec<LogLine> {
        self.inner.logs.recent()
    }

    pub fn clear_logs(&self) -> Result<()> {
        self.inner.logs.clear()
    }

    fn log(&self, level: LogLevel, message: impl Into<String>) {
        self.inner.logs.log(level, message);
    }

    fn announce(&self, state: ServerState, pid: Option<u32>, port: Option<u16>) {
        let server = ServerKind::RpcWorker;
        self.inner.events.emit(AppEvent::ServerState { server, state, pid, port });
    }

    /// Trims the cache under `cap` (off the async workers), recording what went.
    async fn trim(&self, cap: u64) -> Result<()> {
        let dir = self.cache_dir();
        let done = tokio::task::spawn_blocking(move || cache::trim(&dir, cap))
            .await
            .map_err(|e| RuntimeError::Internal(e.to_string()))?
            .map_err(|e| RuntimeError::io("trimming", self.cache_dir(), e))?;
        if done.removed > 0 {
            self.log(
                LogLevel::Info,
                format!(
                    "tensor cache trimmed: {} files, {} freed (cap {})",
                    done.removed,
                    ipc::format::bytes(done.freed_bytes),
                    ipc::format::bytes(cap)
                ),
            );
        }
        let mut sh = self.inner.shared.lock().unwrap();
        sh.status.trimmed = (done.removed, done.freed_bytes);
        sh.status.cache_bytes = done.kept_bytes;
        sh.status.cache_cap_bytes = cap;
        Ok(())
    }

    /// Starts the worker (stopping one already running first) and waits until it answers.
    pub async fn start(&self, args: ShareArgs) -> Result<ShareStatus> {
        let _op = self.inner.op.lock().await;
        self.stop_locked().await;
        let result = self.launch(&args).await;
        if let Err(e) = &result {
            self.log(LogLevel::Error, format!("not started: {e}"));
            self.inner.shared.lock().unwrap().status.last_error = Some(e.to_ipc());
        }
        result.map(|()| self.status())
    }

    async fn launch(&self, args: &ShareArgs) -> Result<()> {
        let host = match args.host.trim() {
            "" => "127.0.0.1",
            h => h,
        };
        if host.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(RuntimeError::InvalidInput(format!(
                "{host:?} is not an IPv4 address (llama.cpp's worker listens on one: 127.0.0.1 \
                 for this computer only, 0.0.0.0 for every network)"
            )));
        }
        if let Some(why) = exposure(host, args.exposed_ok) {
            return Err(RuntimeError::InvalidInput(why));
        }
        let port = args.port.unwrap_or(DEFAULT_PORT);
        if !crate::net::port_free(host, port) {
            return Err(RuntimeError::PortInUse(port));
        }
        let installed = self.inner.binaries.installed(RuntimeKind::Llama).ok_or_else(|| {
            RuntimeError::BinaryNotFound(
                "llama.cpp is not installed yet: start the LLM once (it installs the runtime)"
                    .into(),
            )
        })?;
        let exe = worker_beside(Path::new(&installed.path)).ok_or_else(|| {
            RuntimeError::BinaryNotFound(format!(
                "the installed llama.cpp build ({}) has no RPC worker (ggml-rpc-server): it was \
                 built without GGML_RPC",
                installed.path
            ))
        })?;
        let lendable = LendableDevice::from_check(&installed.devices);
        if let Some(why) = LendableDevice::refuse(&args.devices, &lendable) {
            return Err(RuntimeError::InvalidInput(why));
        }
        let devices: Vec<&str> =
            args.devices.iter().map(|d| d.trim()).filter(|d| !d.is_empty()).collect();
        let cap = u64::from(args.cache_cap_gib.unwrap_or(DEFAULT_CACHE_CAP_GIB)) << 30;
        self.trim(cap).await?;
        let mut argv = vec!["-H".to_owned(), host.to_owned(), "-p".into(), port.to_string()];
        if cap > 0 {
            argv.push("-c".into());
        }
        if !devices.is_empty() {
            argv.extend(["-d".to_owned(), devices.join(",")]);
        }
        let env = vec![("LLAMA_CACHE".to_owned(), self.cache_root().display().to_string())];
        self.log(LogLevel::Info, format!("spawning {} {}", exe.display(), argv.join(" ")));
        let mut child = Supervised::spawn_with_env(&exe, &argv, &env)?;
        let pid = child.pid();
        if let Err(e) = pidfile::write(&self.pidfile(), pid, &exe.display().to_string()).await {
            self.log(
                LogLevel::Warn,
                format!("no pidfile ({e}): a crash of the app would leave it running"),
            );
        }
        self.announce(ServerState::Starting, Some(pid), Some(port));
        // Asked on loopback when it listens everywhere.
        let ask = if host == "0.0.0.0" { "127.0.0.1" } else { host };
        let address = format!("{ask}:{port}");
        let failed = |message: String| RuntimeError::ServerFailed {
            code: ipc::ErrorCode::ServerStartFailed,
            message,
        };
        let lines = |l: String| self.log(crate::llama::log::level(&l), l);
        let ours = match super::answering(&mut child, &address, READY_WITHIN, lines).await {
            Ok(v) => v,
            Err(exit) => {
                let why = match exit {
                    Some(info) => crate::process::failure_message(
                        crate::process::Program::RpcServer,
                        Some(info),
                        "while starting",
                        child.tail(),
                    ),
                    None => {
                        let _ = child.kill().await;
                        format!("ggml-rpc-server did not answer on {address} in {READY_WITHIN:?}")
                    }
                };
                pidfile::remove(&self.pidfile());
                self.announce(ServerState::Stopped, None, None);
                return Err(failed(why));
            }
        };
        let found = probe(&address, ours, super::probe::PROBE_LIMIT).await;
        let shown = format!("{host}:{port}");
        self.log(LogLevel::Info, format!("lending this computer on {shown}: {}", found.detail()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.running = true;
            sh.status.address = Some(shown);
            sh.status.pid = Some(pid);
            sh.status.probe = Some(found);
            sh.status.last_error = None;
            sh.stop = Some(stop_tx);
            sh.done = Some(done_rx);
        }
        self.announce(ServerState::Running, Some(pid), Some(port));
        let me = self.clone();
        tokio::spawn(async move {
            me.watch(child, stop_rx, cap).await;
            let _ = done_tx.send(());
        });
        Ok(())
    }

    /// Logs its lines until it exits or is asked to stop; then trims the cache it filled.
    async fn watch(&self, mut child: Supervised, mut stop: oneshot::Receiver<()>, cap: u64) {
        let state = loop {
            tokio::select! {
                _ = &mut stop => {
                    let _ = child.terminate(Duration::from_secs(3)).await;
                    break ServerState::Stopped;
                }
                event = child.next() => match event {
                    Event::Line(_, l) => self.log(crate::llama::log::level(&l), l),
                    Event::Exited(info) => {
                        self.log(LogLevel::Error, format!("ggml-rpc-server exited: {}", info.describe()));
                        break ServerState::Crashed;
                    }
                },
            }
        };
        pidfile::remove(&self.pidfile());
        {
            let mut sh = self.inner.shared.lock().unwrap();
            sh.status.running = false;
            sh.status.pid = None;
            sh.stop = None;
        }
        self.announce(state, None, None);
        let _ = self.trim(cap).await;
    }

    async fn stop_locked(&self) {
        let (stop, done) = {
            let mut sh = self.inner.shared.lock().unwrap();
            (sh.stop.take(), sh.done.take())
        };
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        if let Some(done) = done {
            let _ = done.await;
        }
    }

    /// Stops the worker, if it runs.
    pub async fn stop(&self) -> ShareStatus {
        let _op = self.inner.op.lock().await;
        self.stop_locked().await;
        self.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_listens_without_a_confirmation() {
        assert_eq!(exposure("127.0.0.1", false), None);
        assert!(exposure("0.0.0.0", false).is_some_and(|w| w.contains("no authentication")));
        assert!(exposure("192.168.1.20", false).is_some());
        assert_eq!(exposure("192.168.1.20", true), None);
    }
}
