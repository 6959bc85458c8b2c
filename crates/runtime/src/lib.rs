//! The app's engine: storage, hardware, downloads, runtimes, servers and image jobs.
//!
//! Nothing here knows about Tauri or the window. `src-tauri` holds one [`Runtime`] and turns its
//! methods into commands; tests drive the same methods directly.

pub mod applog;
pub mod binaries;
pub mod diffusion;
pub mod download;
pub mod endpoint;
pub mod error;
pub mod events;
pub mod links;
pub mod llama;
pub mod logfile;
pub mod models;
pub mod net;
pub mod orchestrator;
pub mod process;
pub mod rpc;
pub mod storage;
pub mod stored;
pub mod system;

pub use error::{Result, RuntimeError};
pub use events::EventBus;
pub use storage::{StorageLayout, StorageRoot};

use ipc::{AppEvent, AppInfo, Platform};
use models::queue::{DownloadQueue, DEFAULT_CONCURRENCY};
use models::ModelStore;
use std::sync::Arc;
use system::SystemProbe;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The product's name as shown to people.
pub const APP_NAME: &str = "GenAI Control Panel";

/// Owns the shared pieces every feature needs. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtime {
    storage: StorageLayout,
    events: EventBus,
    system: Arc<SystemProbe>,
    models: ModelStore,
    downloads: DownloadQueue,
    hf: models::hf::HfSettings,
    binaries: binaries::Binaries,
    llm: llama::LlamaServer,
    diffusion: diffusion::DiffusionServer,
    orchestrator: orchestrator::Orchestrator,
    endpoint: endpoint::Endpoint,
    catalog: models::catalog::Catalog,
    rpc_worker: rpc::local::LocalWorker,
    memory: Arc<system::history::MemoryFeed>,
    app_log: applog::AppLog,
}

impl Runtime {
    /// Opens the storage root (creating its folders). `events` and `system` may outlive a failed
    /// open, so the window's subscription and the hardware cache hold across a retry.
    pub fn open(root: StorageRoot, events: EventBus, system: Arc<SystemProbe>) -> Result<Self> {
        let memory = Arc::new(system::history::MemoryFeed::new(system.clone()));
        Self::open_shared(root, events, system, memory)
    }

    /// [`Self::open`] with the app's one memory feed, which outlives a failed open like `system`.
    pub fn open_shared(
        root: StorageRoot,
        events: EventBus,
        system: Arc<SystemProbe>,
        memory: Arc<system::history::MemoryFeed>,
    ) -> Result<Self> {
        let storage = StorageLayout::create(root)?;
        let app_log = applog::AppLog::new(&storage);
        let models = ModelStore::new(storage.clone());
        let hf = models::hf::HfSettings::open(&storage.config(), models::hf::HfEnv::from_env());
        let downloads = DownloadQueue::open(
            models.clone(),
            events.clone(),
            DEFAULT_CONCURRENCY,
            download::DownloadConfig::default(),
            hf.clone(),
            &storage.config(),
        )?;
        let binaries = binaries::Binaries::new(
            storage.clone(),
            events.clone(),
            binaries::BinariesConfig::from_env()?,
        )?;
        let llm = llama::LlamaServer::new(
            storage.clone(),
            events.clone(),
            binaries.clone(),
            models.clone(),
            system.clone(),
            llama::ServerConfig::default(),
        );
        let diffusion = diffusion::DiffusionServer::new(
            storage.clone(),
            events.clone(),
            binaries.clone(),
            models.clone(),
            system.clone(),
            diffusion::DiffusionServerConfig::default(),
        );
        let orchestrator = orchestrator::Orchestrator::new(
            storage.config(),
            events.clone(),
            Arc::new(llm.clone()),
            memory.clone(),
            orchestrator::OrchestratorConfig::default(),
        );
        llm.set_memory(memory.clone());
        diffusion.set_memory(memory.clone());
        diffusion.set_gate(Arc::new(orchestrator.clone()));
        llm.set_before_start(diffusion.before_llm_start());
        let endpoint = endpoint::Endpoint::new(
            llm.clone(),
            diffusion.clone(),
            models.clone(),
            events.clone(),
            storage.config(),
        )?;
        let catalog =
            models::catalog::Catalog::new(hf.clone(), download::DownloadConfig::default())?;
        let rpc_worker =
            rpc::local::LocalWorker::new(storage.clone(), events.clone(), binaries.clone());
        Ok(Self {
            storage,
            events,
            system,
            models,
            downloads,
            catalog,
            rpc_worker,
            hf,
            binaries,
            llm,
            diffusion,
            orchestrator,
            endpoint,
            memory,
            app_log,
        })
    }

    /// The app's own log (`logs/app.log`); the app installs it for the process at start.
    pub fn app_log(&self) -> &applog::AppLog {
        &self.app_log
    }

    /// Live memory: the one feed every part of the runtime reads (its sampler is started by
    /// the app, [`system::history::MemoryFeed::sample_every`]).
    pub fn memory(&self) -> &Arc<system::history::MemoryFeed> {
        &self.memory
    }

    /// Opens the storage root chosen by `GENAI_HOME` or the platform's app-data folder, with the
    /// app's one memory feed.
    pub fn open_default(
        events: EventBus,
        system: Arc<SystemProbe>,
        memory: Arc<system::history::MemoryFeed>,
    ) -> Result<Self> {
        Self::open_shared(StorageRoot::from_env()?, events, system, memory)
    }

    pub fn models(&self) -> &ModelStore {
        &self.models
    }

    pub fn downloads(&self) -> &DownloadQueue {
        &self.downloads
    }

    /// How Hugging Face is reached: the endpoint and token in force.
    pub fn hf(&self) -> &models::hf::HfSettings {
        &self.hf
    }

    pub fn llm(&self) -> &llama::LlamaServer {
        &self.llm
    }

    pub fn diffusion(&self) -> &diffusion::DiffusionServer {
        &self.diffusion
    }

    pub fn orchestrator(&self) -> &orchestrator::Orchestrator {
        &self.orchestrator
    }

    /// Ends every server the app started, as it quits (a crash of the app is handled by the
    /// pidfiles on the next launch instead).
    pub async fn shutdown(&self) {
        self.orchestrator.shutting_down();
        self.endpoint.close().await;
        let _ = self.diffusion.stop().await;
        let _ = self.rpc_worker.stop().await;
        let _ = self.llm.stop().await;
    }

    /// Empties a server's log: its lines in memory and its files.
    pub fn clear_server_log(&self, server: ipc::event::ServerKind) -> Result<()> {
        use ipc::event::ServerKind;
        match server {
            ServerKind::Llm => self.llm.clear_logs(),
            ServerKind::Diffusion => self.diffusion.clear_logs(),
            ServerKind::RpcWorker => self.rpc_worker.clear_logs(),
        }
    }

    /// This computer as an RPC worker for other machines (#18).
    pub fn rpc_worker(&self) -> &rpc::local::LocalWorker {
        &self.rpc_worker
    }

    /// Hugging Face's repos with fit badges (#17).
    pub fn catalog(&self) -> &models::catalog::Catalog {
        &self.catalog
    }

    /// A repo's view with badges for the memory free now (`fresh`: the tree and unread headers
    /// fetched; else the view kept from the last open, with no request).
    pub async fn hf_repo(
        &self,
        args: &ipc::models::HfRepoArgs,
        fresh: bool,
    ) -> Result<ipc::models::HfRepoView> {
        let revision = args.revision.as_deref().unwrap_or("");
        let view = if fresh {
            self.catalog.open(&args.repo, revision).await?
        } else {
            self.catalog.opened(&args.repo, revision)?
        };
        // A projector chosen to go with the entry is loaded beside it and takes its share first.
        let machine = self.llm.fit_machine()?.less(args.projector_bytes);
        let ask = llama::fit::FitAsk { context: args.context, kv_type: args.kv_type.clone() };
        Ok(models::catalog::view_for_window(&view, &machine, &ask))
    }

    /// Every installed LLM's fit badge for the memory free now (#17): headers read once per
    /// file version, weighed against the live machine.
    pub async fn installed_fit(
        &self,
        args: &ipc::models::FitArgs,
    ) -> Result<Vec<ipc::models::InstalledFit>> {
        let machine = self.llm.fit_machine()?;
        let ask = llama::fit::FitAsk { context: args.context, kv_type: args.kv_type.clone() };
        let mut out = Vec::new();
        for m in self.models.list().await?.models {
            if m.kind != ipc::models::ModelKind::Llm {
                continue;
            }
            let files =
                m.weight_files().into_iter().map(|f| std::path::PathBuf::from(f.path)).collect();
            let facts = self.catalog.local_facts(files).await;
            // A vision projector is loaded beside it and takes its share first.
            let left = m.projector().map(|p| machine.less(p.size_bytes));
            let fit = models::catalog::report(&facts, left.as_ref().unwrap_or(&machine), &ask);
            out.push(ipc::models::InstalledFit { id: m.id, fit });
        }
        Ok(out)
    }

    /// The local OpenAI-compatible endpoint (opened by the app at launch: [`endpoint::Endpoint::open`]).
    pub fn endpoint(&self) -> &endpoint::Endpoint {
        &self.endpoint
    }

    /// Deletes model `id`. One that a server uses (the LLM running or paused for an image, the
    /// image server) is refused with `MODEL_IN_USE` naming it, unless `stop` is set: then those
    /// servers are stopped first ("Stop and delete"). Lists that offer models are told.
    pub async fn delete_model(&self, id: &str, stop: bool) -> Result<()> {
        use models::in_use::{users_of, ModelUser};
        let paused = self.orchestrator.status().saved;
        let users = users_of(id, &self.llm.status(), &self.diffusion.status(), paused.as_ref());
        if !users.is_empty() {
            if !stop {
                return Err(RuntimeError::ModelInUse {
                    model: self
                        .models
                        .get(id)
                        .await
                        .map(|m| m.name)
                        .unwrap_or_else(|_| id.to_owned()),
                    users: users.iter().map(|u| u.label().to_owned()).collect(),
                });
            }
            for user in users {
                match user {
                    ModelUser::LlmServer => self.llm.stop().await?,
                    ModelUser::PausedLlm => self.orchestrator.keep_stopped()?,
                    ModelUser::ImageServer => self.diffusion.stop().await?,
                }
            }
            self.system_changed();
        }
        self.models.delete(id).await?;
        // What sd-cli allocated for it must not size a later model of the same id.
        self.diffusion.forget_model(id).await;
        self.events.emit(AppEvent::ModelDeleted { model_id: id.to_owned() });
        Ok(())
    }

    /// At launch: brings back an LLM that was paused for an image when the app last ended.
    pub async fn recover(&self) -> Result<bool> {
        self.orchestrator.recover().await
    }

    pub fn binaries(&self) -> &binaries::Binaries {
        &self.binaries
    }

    /// Makes sure a checked build of `kind` is installed, choosing variants for the GPUs this
    /// machine has now.
    pub async fn ensure_runtime(
        &self,
        kind: ipc::runtimes::RuntimeKind,
        force: bool,
    ) -> Result<binaries::Ensured> {
        let gpus = self.system.gpus();
        self.binaries.ensure(kind, &gpus, force).await
    }

    pub fn system(&self) -> &SystemProbe {
        &self.system
    }

    /// A server started or stopped: what the machine has free changed, so hardware facts are
    /// detected afresh and the window is told to refresh.
    pub fn system_changed(&self) {
        self.system.invalidate();
        self.events.emit(AppEvent::SystemChanged);
    }

    pub fn storage(&self) -> &StorageLayout {
        &self.storage
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    pub fn app_info(&self) -> AppInfo {
        AppInfo {
            name: APP_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            storage_root: self.storage.root().display().to_string(),
            storage_root_source: self.storage.source(),
            platform: Platform {
                os: std::env::consts::OS.to_owned(),
                arch: std::env::consts::ARCH.to_owned(),
            },
        }
    }
}
