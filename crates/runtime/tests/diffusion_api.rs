//! The diffusion server's local HTTP job API, driven over HTTP on 127.0.0.1 with a fake sd-cli
//! that prints sd-cli's output and writes real PNGs: a job from request to decodable PNG, the
//! events, busy, cancel (process gone within 1 s), result expiry, every 400, a body too large,
//! other hosts and origins refused, a token for other addresses, stop during a job, a failing
//! sd-cli.

use base64::Engine as _;
use ipc::diffusion::DiffusionConfig;
use ipc::event::{ImageStage, ServerState};
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, ErrorCode, StorageRootSource};
use runtime::binaries::{Binaries, BinariesConfig};
use runtime::diffusion::{DiffusionServer, DiffusionServerConfig};
use runtime::models::ModelStore;
use runtime::system::SystemProbe;
use runtime::{EventBus, StorageLayout, StorageRoot};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::fake_runtime::{self, alive};
use testkit::TempDir;

/// Fake sd-clis re-run this test binary in sd-cli mode.
#[test]
#[ignore = "entry point of the fake sd-cli, not a test"]
fn fake_sd_cli_entry() {
    fake_runtime::sd_cli_if_asked();
}

struct World {
    dir: TempDir,
    events: EventBus,
    server: DiffusionServer,
    models: ModelStore,
    base: String,
    http: reqwest::Client,
}

impl World {
    /// A started server whose sd-cli takes `step_ms` per step (and fails half-way if `fail`).
    async fn new(name: &str, step_ms: u64, fail: bool, config: DiffusionServerConfig) -> Self {
        let w = Self::stopped(name, step_ms, fail, config).await;
        w.start(cfg("sd-tiny")).await
    }

    async fn stopped(name: &str, step_ms: u64, fail: bool, config: DiffusionServerConfig) -> Self {
        let dir = TempDir::new(&format!("sdapi-{name}"));
        let storage =
            StorageLayout::create(StorageRoot::new(dir.join("home"), StorageRootSource::Env))
                .unwrap();
        let events = EventBus::default();
        let binaries =
            Binaries::new(storage.clone(), events.clone(), BinariesConfig::from_env().unwrap())
                .unwrap();
        let exe = fake_runtime::generating_sd_cli(dir.path(), step_ms, fail);
        binaries.set_custom(RuntimeKind::Diffusion, Some(&exe)).await.unwrap();
        std::fs::remove_file(dir.join("calls.log")).unwrap(); // the install check's runs
        let models = ModelStore::new(storage.clone());
        let path = storage.diffusion_models().join("sd-tiny.gguf");
        std::fs::write(&path, b"weights").unwrap();
        let p = path.display().to_string();
        let info = ModelInfo::local_file("sd-tiny", "SD Tiny", ModelKind::Diffusion, &p, 7);
        models.register(&info).await.unwrap();
        let server = DiffusionServer::new(
            storage,
            events.clone(),
            binaries,
            models.clone(),
            Arc::new(SystemProbe::real()),
            config,
        );
        let http = runtime::net::local_client().unwrap();
        Self { dir, events, server, models, base: String::new(), http }
    }

    async fn start(mut self, c: DiffusionConfig) -> Self {
        let status = self.server.start(c).await.unwrap();
        assert_eq!(status.state, ServerState::Running);
        self.base = format!("http://127.0.0.1:{}", status.port.unwrap());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        (r.status().as_u16(), json_of(r).await)
    }

    async fn post(&self, body: Value) -> (u16, Value) {
        self.post_raw(body.to_string()).await
    }

    async fn post_raw(&self, body: String) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/v1/images/generations"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), json_of(r).await)
    }

    async fn delete(&self, id: &str) -> (u16, Value) {
        let r = self.http.delete(self.url(&format!("/v1/images/generations/{id}"))).send();
        let r = r.await.unwrap();
        (r.status().as_u16(), json_of(r).await)
    }

    /// Polls the job until `done` holds for it, answering every view seen.
    async fn poll_until(&self, id: &str, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let (code, v) = self.get(&format!("/v1/images/generations/{id}")).await;
            assert_eq!(code, 200, "{v}");
            seen.push(v.clone());
            if done(&v) {
                return seen;
            }
            assert!(Instant::now() < deadline, "job never got there: {v}");
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The running fake sd-cli of this world.
    async fn sd_pid(&self) -> u32 {
        let needle = self.dir.join("home").display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = fake_runtime::fake_sd_cli_pid(&needle) {
                return pid;
            }
            assert!(Instant::now() < deadline, "the fake sd-cli never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn cfg(model: &str) -> DiffusionConfig {
    DiffusionConfig { model_id: model.into(), port: Some(0), ..Default::default() }
}

fn decode_png(b64: &str) -> (u32, u32) {
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert!(buf.iter().any(|b| *b != 0), "pixels decoded");
    (info.width, info.height)
}

fn collect(rx: &mut tokio::sync::broadcast::Receiver<AppEvent>) -> Vec<AppEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_request_to_decodable_pngs() {
    let w = World::new("ok", 20, false, Default::default()).await;
    let mut rx = w.events.subscribe();
    assert_eq!(w.get("/health").await, (200, json!({"status": "ok", "busy": false})));
    assert_eq!(w.get("/health?probe=1").await.0, 200, "a query string does not break routing");

    let (code, created) = w
        .post(json!({"prompt": "a lighthouse", "negativePrompt": "blur", "width": 128,
                     "height": 64, "steps": 6, "cfgScale": 6.5, "seed": 7, "sampler": "euler",
                     "count": 2}))
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"], "pending");
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("gen_") && created["createdAt"].as_u64().unwrap() > 0, "{created}");
    let (_, health) = w.get("/health").await;
    assert_eq!(health["busy"], true, "busy while the job runs");

    let seen = w.poll_until(&id, |v| v["status"] == "complete").await;
    let progress: Vec<&Value> = seen.iter().filter_map(|v| v.get("progress")).collect();
    assert!(
        progress.iter().any(|p| p["stage"] == "diffusion"
            && p["currentStep"].as_u64().unwrap() >= 1
            && p["totalSteps"] == 6),
        "step progress seen while polling: {progress:?}"
    );
    assert!(progress.iter().any(|p| p["currentImage"] == 2 && p["totalImages"] == 2));
    let pct: Vec<f64> = progress.iter().map(|p| p["percentage"].as_f64().unwrap()).collect();
    assert!(pct.windows(2).all(|w| w[0] <= w[1]), "percentage never goes back: {pct:?}");

    let done = seen.last().unwrap();
    assert!(done.get("progress").is_none() && done.get("error").is_none(), "{done}");
    let result = &done["result"];
    assert_eq!(result["format"], "png");
    assert!(result["timeTaken"].as_u64().unwrap() > 0);
    let images = result["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (i, img) in images.iter().enumerate() {
        assert_eq!(img["seed"], 7 + i as i64);
        assert_eq!((img["width"].as_u64(), img["height"].as_u64()), (Some(128), Some(64)));
        assert_eq!(decode_png(img["image"].as_str().unwrap()), (128, 64));
    }
    // The flags reached sd-cli: one run per image, seeds 7 and 8.
    let calls = w.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for (call, seed) in calls.iter().zip([7, 8]) {
        for part in ["-p a lighthouse", "-n blur", "-W 128 -H 64", "--steps 6", "--cfg-scale 6.5"] {
            assert!(call.contains(part), "{part} in {call}");
        }
        assert!(call.contains(&format!("-s {seed} --sampling-method euler")), "{call}");
    }
    assert_eq!(w.get("/health").await.1["busy"], false);
    // Save as…: the second image, to a place the user chose; nothing else left beside it.
    let chosen = w.dir.join("chosen").join("lighthouse.png");
    std::fs::create_dir_all(chosen.parent().unwrap()).unwrap();
    assert_eq!(w.server.suggested_file_name(&id, 1).unwrap(), format!("{id}-2-seed8.png"));
    assert_eq!(w.server.save_image_to(&id, 1, &chosen).unwrap(), chosen);
    let png = std::fs::read(&chosen).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(
        std::fs::read_dir(chosen.parent().unwrap()).unwrap().count(),
        1,
        "a temporary file left"
    );
    let err = w.server.save_image_to(&id, 5, &chosen).unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput, "{err}");
    assert_eq!(std::fs::read(&chosen).unwrap(), png, "a failed save leaves the file as it was");
    let (code, body) = w.get(&format!("/v1/images/generations/{id}?t=1")).await;
    assert_eq!((code, &body["status"]), (200, &json!("complete")));
    let (code, body) = w.delete(&id).await;
    assert_eq!((code, body["error"]["code"].as_str()), (409, Some("ALREADY_TERMINAL")));

    // Events for the window: started, progress through the stages, finished with the seeds.
    let events = collect(&mut rx);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            AppEvent::ImageJobStarted { job_id, count: 2, .. } if *job_id == id => Some("started"),
            AppEvent::ImageProgress { stage: ImageStage::Diffusion, .. } => Some("diffusion"),
            AppEvent::ImageProgress { stage: ImageStage::Decoding, .. } => Some("decoding"),
            AppEvent::ImageJobFinished { seeds, images: 2, .. } if *seeds == [7, 8] => {
                Some("finished")
            }
            _ => None,
        })
        .collect();
    assert_eq!(kinds.first(), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"finished"), "{kinds:?}");
    assert!(kinds.contains(&"diffusion") && kinds.contains(&"decoding"), "{kinds:?}");

    // No seed: a random one, reported back and passed to sd-cli.
    let (code, created) =
        w.post(json!({"prompt": "x", "width": 64, "height": 64, "steps": 1})).await;
    assert_eq!(code, 201);
    let seen = w.poll_until(created["id"].as_str().unwrap(), |v| v["status"] == "complete").await;
    let seed = seen.last().unwrap()["result"]["images"][0]["seed"].as_i64().unwrap();
    assert!(seed >= 0);
    assert!(w.calls().last().unwrap().contains(&format!("-s {seed} ")), "{:?}", w.calls());
    w.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_cancel_and_expiry() {
    let config =
        DiffusionServerConfig { result_ttl: Duration::from_millis(800), ..Default::default() };
    let w = World::new("cancel", 300, false, config).await;
    let mut rx = w.events.subscribe();
    let (code, created) =
        w.post(json!({"prompt": "slow", "width": 64, "height": 64, "steps": 20})).await;
    assert_eq!(code, 201);
    let id = created["id"].as_str().unwrap().to_owned();
    let (code, busy) = w.post(json!({"prompt": "second"})).await;
    assert_eq!(code, 503, "{busy}");
    assert_eq!(busy["error"]["code"], "SERVER_BUSY");
    assert!(busy["error"]["message"].as_str().unwrap().contains(&id), "{busy}");

    let pid = w.sd_pid().await;
    w.poll_until(&id, |v| v["progress"]["stage"] == "diffusion").await;
    let t = Instant::now();
    let (code, body) = w.delete(&id).await;
    assert_eq!((code, &body), (200, &json!({"id": id, "status": "cancelled"})));
    while alive(pid) {
        assert!(t.elapsed() < Duration::from_secs(1), "sd-cli still running 1 s after cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.delete(&id).await.0, 200, "cancel is idempotent");
    assert_eq!(w.get(&format!("/v1/images/generations/{id}")).await.1["status"], "cancelled");
    // The server is free again at once, and no half-written image is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while w.get("/health").await.1["busy"] != false {
        assert!(Instant::now() < deadline, "still busy after the cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let temp = w.dir.join("home/temp");
    assert_eq!(std::fs::read_dir(&temp).map(|d| d.count()).unwrap_or(0), 0);
    assert!(collect(&mut rx)
        .iter()
        .any(|e| matches!(e, AppEvent::ImageJobCancelled { job_id } if *job_id == id)));

    // Finished results are forgotten after their lifetime.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (code, body) = w.get(&format!("/v1/images/generations/{id}")).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    assert_eq!(w.delete("gen_0_unknown").await.0, 404);
    w.server.stop().await.unwrap();
}

/// A request sent right after a cancel is taken at once (no "busy" while the cancelled job lets
/// go of its sd-cli), starts only once that sd-cli is gone, and makes its image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_right_after_a_cancel_is_taken_and_runs_after_it() {
    let w = World::new("cancel-next", 300, false, Default::default()).await;
    let (code, created) =
        w.post(json!({"prompt": "slow", "width": 64, "height": 64, "steps": 20})).await;
    assert_eq!(code, 201);
    let first = created["id"].as_str().unwrap().to_owned();
    let pid = w.sd_pid().await;
    w.poll_until(&first, |v| v["progress"]["stage"] == "diffusion").await;
    assert_eq!(w.delete(&first).await.0, 200);
    let (code, next) =
        w.post(json!({"prompt": "next", "width": 64, "height": 64, "steps": 2})).await;
    assert_eq!(code, 201, "taken at once after the cancel: {next}");
    let next = next["id"].as_str().unwrap().to_owned();
    let (code, busy) = w.post(json!({"prompt": "third"})).await;
    assert_eq!((code, busy["error"]["code"].as_str()), (503, Some("SERVER_BUSY")), "{busy}");
    let seen = w.poll_until(&next, |v| v["status"] == "complete").await;
    assert!(!alive(pid), "the cancelled job's sd-cli is gone");
    let done = seen.last().unwrap();
    let image = done["result"]["images"][0]["image"].as_str().unwrap();
    assert_eq!(decode_png(image), (64, 64));
    // One sd-cli run for each job, and none for the request turned away.
    let calls = w.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(w.get(&format!("/v1/images/generations/{first}")).await.1["status"], "cancelled");
    w.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_400_with_the_reason() {
    let w = World::new("bad", 5, false, Default::default()).await;
    let cases: Vec<(String, &str)> = vec![
        (json!({}).to_string(), "prompt"),
        (json!({"prompt": "  "}).to_string(), "prompt"),
        (json!({"prompt": "x", "width": 100}).to_string(), "width"),
        (json!({"prompt": "x", "width": 4096}).to_string(), "width"),
        (json!({"prompt": "x", "height": 0}).to_string(), "height"),
        (json!({"prompt": "x", "steps": 0}).to_string(), "steps"),
        (json!({"prompt": "x", "steps": 151}).to_string(), "steps"),
        (json!({"prompt": "x", "cfgScale": -1}).to_string(), "cfgScale"),
        (json!({"prompt": "x", "cfgScale": 30.5}).to_string(), "cfgScale"),
        (json!({"prompt": "x", "count": 0}).to_string(), "count"),
        (json!({"prompt": "x", "count": 6}).to_string(), "count"),
        (json!({"prompt": "x", "sampler": "warp_drive"}).to_string(), "sampler"),
        (json!({"prompt": "x", "width": "wide"}).to_string(), "JSON"),
        (json!({"prompt": "x", "steps": -3}).to_string(), "JSON"),
        ("{\"prompt\": ".to_owned(), "JSON"),
    ];
    for (body, word) in cases {
        let (code, v) = w.post_raw(body.clone()).await;
        assert_eq!(code, 400, "{body} → {v}");
        assert_eq!(v["error"]["code"], "INVALID_REQUEST", "{body} → {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(word), "{body}: {msg:?} should name {word}");
    }
    // A body over the limit is refused before it is parsed.
    let big = json!({"prompt": "x".repeat(100 * 1024)}).to_string();
    let (code, v) = w.post_raw(big).await;
    assert_eq!((code, v["error"]["code"].as_str()), (413, Some("PAYLOAD_TOO_LARGE")), "{v}");
    let (code, v) = w.get("/v1/models").await;
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    assert!(w.calls().is_empty(), "no sd-cli ran for a refused request: {:?}", w.calls());

    // Other hosts: a page on another origin, and a request naming another host (DNS rebinding).
    let r = w.http.get(w.url("/health")).header("origin", "http://evil.example").send().await;
    assert_eq!(r.unwrap().status().as_u16(), 403);
    let r = w.http.get(w.url("/health")).header("origin", "http://localhost:3000").send().await;
    let r = r.unwrap();
    assert_eq!(r.status().as_u16(), 200, "a local page may ask");
    assert_eq!(header(&r, "access-control-allow-origin"), "http://localhost:3000", "and read");

    // A browser page on this computer: its preflight is answered for that origin only.
    let preflight = |origin: &'static str, path: &str| {
        w.http
            .request(reqwest::Method::OPTIONS, w.url(path))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let r = preflight("http://127.0.0.1:5173", "/v1/images/generations").await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), "http://127.0.0.1:5173");
    assert!(header(&r, "access-control-allow-methods").contains("POST"));
    assert!(header(&r, "access-control-allow-headers").contains("content-type"));
    for evil in ["http://evil.example", "https://localhost:3000", "null"] {
        let r = preflight(evil, "/v1/images/generations").await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "{evil}");
        assert_eq!(header(&r, "access-control-allow-origin"), "", "{evil}");
    }
    let r = preflight("http://localhost:3000", "/v1/models").await.unwrap();
    assert_eq!(r.status().as_u16(), 404);

    // A wrong method on a known route: JSON like every other error, with what it answers.
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/v1/images/generations", "POST, OPTIONS"),
        (reqwest::Method::GET, "/v1/images/generations", "POST, OPTIONS"),
        (reqwest::Method::DELETE, "/health", "GET, HEAD, OPTIONS"),
        (reqwest::Method::POST, "/v1/images/generations/img-1", "GET, HEAD, DELETE, OPTIONS"),
    ] {
        let r = w.http.request(method.clone(), w.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        assert_eq!(header(&r, "allow"), allow, "{method} {path}");
        let v = json_of(r).await;
        assert_eq!(v["error"]["code"], "METHOD_NOT_ALLOWED", "{method} {path}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(allow), "{v}");
    }
    let port = w.base.rsplit(':').next().unwrap();
    let mut s = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("FORBIDDEN") && !answer.contains("Access-Control-Allow-Origin"));
    w.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_address_needs_a_token() {
    let w = World::stopped("token", 5, false, Default::default()).await;
    let open = DiffusionConfig { host: Some("0.0.0.0".into()), ..cfg("sd-tiny") };
    let err = w.server.start(open.clone()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    assert!(err.to_string().contains("token"), "{err}");
    assert_eq!(w.server.status().state, ServerState::Stopped);
    let w = w.start(DiffusionConfig { token: Some("s3cret-token".into()), ..open }).await;
    assert_eq!(w.server.status().host.as_deref(), Some("0.0.0.0"));
    assert_eq!(w.get("/health").await.0, 401);
    let r = w.http.get(w.url("/health")).bearer_auth("wrong-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = w.http.get(w.url("/health")).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    w.server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_and_stop_during_a_job() {
    let w = World::stopped("stop", 300, false, Default::default()).await;
    // An LLM is not a diffusion model; a taken port is named.
    let llm_path = w.dir.join("home/models/llm/chat.gguf");
    std::fs::write(&llm_path, b"x").unwrap();
    let p = llm_path.display().to_string();
    w.models.register(&ModelInfo::local_file("chat", "Chat", ModelKind::Llm, &p, 1)).await.unwrap();
    let err = w.server.start(cfg("chat")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidInput);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = w.server.start(DiffusionConfig { port: Some(port), ..cfg("sd-tiny") }).await;
    let err = err.unwrap_err();
    assert_eq!(err.code(), ErrorCode::PortInUse);
    assert!(err.to_ipc().remedy.contains(&port.to_string()));
    assert_eq!(w.server.status().last_error.unwrap().code, ErrorCode::PortInUse);
    let err = w.server.start(cfg("missing")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ModelNotFound);

    let w = w.start(cfg("sd-tiny")).await;
    let err = w.server.start(cfg("sd-tiny")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServerAlreadyRunning);
    let (code, created) = w.post(json!({"prompt": "slow", "steps": 30})).await;
    assert_eq!(code, 201);
    let pid = w.sd_pid().await;
    let mut rx = w.events.subscribe();
    let t = Instant::now();
    w.server.stop().await.unwrap();
    assert!(!alive(pid), "stop returns once sd-cli is gone");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(w.server.status().state, ServerState::Stopped);
    assert!(std::net::TcpStream::connect(w.base.trim_start_matches("http://")).is_err());
    let events = collect(&mut rx);
    let id = created["id"].as_str().unwrap();
    assert!(events
        .iter()
        .any(|e| matches!(e, AppEvent::ImageJobCancelled { job_id } if job_id == id)));
    assert_eq!(
        w.server.generate(Default::default()).unwrap_err().code(),
        ErrorCode::ServerNotRunning
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sd_cli_fails_the_job_with_its_reason() {
    let w = World::new("fail", 5, true, Default::default()).await;
    let mut rx = w.events.subscribe();
    let (code, created) = w.post(json!({"prompt": "x", "steps": 4})).await;
    assert_eq!(code, 201);
    let id = created["id"].as_str().unwrap();
    let seen = w.poll_until(id, |v| v["status"] == "error").await;
    let err = &seen.last().unwrap()["error"];
    assert_eq!(err["code"], "INSUFFICIENT_MEMORY", "{err}");
    assert!(err["message"].as_str().unwrap().contains("out of memory"), "{err}");
    // The window's error box has what to do about it, not only the code.
    assert_eq!(err["title"], ErrorCode::InsufficientMemory.title(), "{err}");
    assert!(!err["remedy"].as_str().unwrap_or("").is_empty(), "{err}");
    assert_eq!(w.get("/health").await.1["busy"], false);
    assert!(collect(&mut rx).iter().any(|e| matches!(e,
        AppEvent::ImageJobFailed { job_id, error } if job_id == id && error.code == ErrorCode::InsufficientMemory)));
    let log: Vec<String> = w.server.logs().into_iter().map(|l| l.message).collect();
    assert!(log.iter().any(|l| l.contains("image job failed")), "{log:?}");
    w.server.stop().await.unwrap();
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_default_port_moves_the_api_and_the_tab_says_why() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let default = taken.local_addr().unwrap().port();
    let config = DiffusionServerConfig { default_port: default, ..Default::default() };
    let w = World::stopped("default-port", 1, false, config).await;
    let w = w.start(DiffusionConfig { port: None, ..cfg("sd-tiny") }).await;
    let st = w.server.status();
    let port = st.port.unwrap();
    assert_ne!(port, default);
    let note = st.port_note.expect("the tab says why");
    assert!(
        note.contains(&format!("Port {default} is in use")) && note.contains(&port.to_string()),
        "{note}"
    );
    let (code, _) = w.get("/health").await;
    assert_eq!(code, 200);
    w.server.stop().await.unwrap();
    drop(taken);
}
