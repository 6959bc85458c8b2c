//! The OpenAI-compatible endpoint on the real llama-server (`GENAI_TEST_LLAMA_SERVER`) and the
//! real sd-cli with its sd-server (`GENAI_TEST_SD_SERVER`), with models `crates/gguf` writes:
//! text models started and swapped on demand (two requests for a stopped model, one start), a
//! stream that arrives piece by piece, a completion, embeddings, a client that leaves
//! mid-stream; images as `b64_json` and as an expiring `url`; a chat that waits while an image
//! has the LLM paused, and the 503 with `Retry-After` when the wait is short. `scripts/test`
//! runs these with `--ignored`.

use futures_util::StreamExt;
use ipc::endpoint::EndpointSettings;
use ipc::event::{ServerKind, ServerState};
use ipc::models::{ModelInfo, ModelKind};
use ipc::runtimes::RuntimeKind;
use ipc::{AppEvent, StorageRootSource};
use runtime::endpoint::EndpointConfig;
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime, StorageRoot};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::TempDir;

fn env_path(var: &str, script: &str) -> PathBuf {
    PathBuf::from(
        std::env::var_os(var).unwrap_or_else(|| panic!("{var} must name a binary ({script})")),
    )
}

/// A runtime with the real llama-server and sd-cli (sd-server beside it), two text models
/// ("tiny", and "tiny-b", larger and slower) and the tiny Flux.2 model ("tiny-flux2"); the
/// endpoint and the servers it starts on free ports.
async fn world(dir: &TempDir, config: EndpointConfig) -> Runtime {
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        Arc::new(SystemProbe::real()),
    )
    .unwrap();
    let llama = env_path("GENAI_TEST_LLAMA_SERVER", "scripts/build-llama-server");
    rt.binaries().set_custom(RuntimeKind::Llama, Some(&llama)).await.unwrap();
    let sd_cli =
        env_path("GENAI_TEST_SD_SERVER", "scripts/build-sd-server").with_file_name("sd-cli");
    rt.binaries().set_custom(RuntimeKind::Diffusion, Some(&sd_cli)).await.unwrap();
    let b = gguf::fixtures::TinyLlama {
        n_embd: 384,
        n_layer: 6,
        n_ff: 1024,
        n_ctx: 2048,
        seed: 7,
        ..Default::default()
    };
    for (id, shape) in [("tiny", Default::default()), ("tiny-b", b)] {
        let path = rt.storage().llm_models().join(format!("{id}.gguf"));
        let bytes = gguf::fixtures::tiny_llama(shape).to_bytes();
        std::fs::write(&path, &bytes).unwrap();
        let p = path.display().to_string();
        let info = ModelInfo::local_file(id, id, ModelKind::Llm, &p, bytes.len() as u64);
        rt.models().register(&info).await.unwrap();
    }
    let folder = rt.storage().diffusion_models().join("tiny-flux2");
    std::fs::create_dir_all(&folder).unwrap();
    let files = gguf::fixtures::tiny_flux2_klein(7).write_to(&folder).unwrap();
    let info = ModelInfo::local_files("tiny-flux2", "Tiny Flux.2", ModelKind::Diffusion, &files);
    rt.models().register(&info).await.unwrap();
    rt.endpoint().configure(config);
    rt
}

fn quiet() -> EndpointConfig {
    EndpointConfig {
        default_port: 0,
        llm_port: Some(0),
        images_port: Some(0),
        ..Default::default()
    }
}

async fn open(rt: &Runtime) -> String {
    let st = rt.endpoint().open().await;
    st.base_url.clone().unwrap_or_else(|| panic!("the endpoint did not open: {st:?}"))
}

fn client() -> reqwest::Client {
    runtime::net::local_client().unwrap()
}

async fn post(base: &str, route: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}{route}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let bytes = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes))),
    )
}

fn chat(model: &str, max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": 1,
        "stream": stream,
    })
}

/// LLM server states announced on `rx` so far (a state announced again, as Starting is once
/// the process has its PID, counted once).
fn llm_states(rx: &mut tokio::sync::broadcast::Receiver<AppEvent>) -> Vec<ServerState> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let AppEvent::ServerState { server: ServerKind::Llm, state, .. } = e {
            out.push(state);
        }
    }
    out.dedup();
    out
}

/// A streamed reply read whole: when each piece arrived, and the text of the `data:` events.
async fn read_stream(r: reqwest::Response) -> (Vec<Instant>, String) {
    let mut times = Vec::new();
    let mut text = Vec::new();
    let mut body = r.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        times.push(Instant::now());
        text.extend_from_slice(&piece);
    }
    (times, String::from_utf8(text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test builds it and runs this"]
async fn text_models_start_once_stream_and_swap_on_demand() {
    let dir = TempDir::new("real-endpoint-text");
    let rt = world(&dir, quiet()).await;
    let base = open(&rt).await;
    let mut rx = rt.events().subscribe();

    // Two requests for a stopped model: one start, both answered by it.
    let ask =
        json!({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0.0});
    let (a, b) = tokio::join!(post(&base, "/completions", &ask), post(&base, "/completions", &ask));
    let ((sa, va), (sb, vb)) = (json_of(a).await, json_of(b).await);
    assert_eq!((sa, sb), (200, 200), "{va} {vb}");
    assert!(va["choices"][0]["text"].as_str().is_some_and(|t| !t.is_empty()), "{va}");
    let starts = llm_states(&mut rx).iter().filter(|s| **s == ServerState::Starting).count();
    assert_eq!(starts, 1, "one start for both requests");
    assert_eq!(rt.llm().status().model_id.as_deref(), Some("tiny"));

    // A stream arrives piece by piece: the first piece well before the last.
    let r = post(&base, "/chat/completions", &chat("tiny", 48, true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let (times, text) = read_stream(r).await;
    let events = text.matches("data: ").count();
    assert!(events >= 10 && text.trim_end().ends_with("data: [DONE]"), "{events} events: {text}");
    assert!(times.len() >= 3, "pieces came in {} reads", times.len());
    assert!(times[0] < *times.last().unwrap());

    // Embeddings: the model again, started for them (mean pooling: a chat model has none).
    let (s, v) =
        json_of(post(&base, "/embeddings", &json!({"model": "tiny", "input": "hello"})).await)
            .await;
    assert_eq!(s, 200, "{v}");
    let dims = v["data"][0]["embedding"].as_array().map_or(0, Vec::len);
    assert_eq!(dims, 64, "one vector of the model's width: {v}");

    // The other model: a swap; the reply comes from it.
    let mut rx = rt.events().subscribe();
    let (s, v) = json_of(post(&base, "/chat/completions", &chat("tiny-b", 4, false)).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"], "tiny-b", "{v}");
    assert_eq!(rt.llm().status().model_id.as_deref(), Some("tiny-b"));
    let states = llm_states(&mut rx);
    assert_eq!(
        states,
        [ServerState::Stopping, ServerState::Stopped, ServerState::Starting, ServerState::Running]
    );

    // The log has every request with its model, status and tokens; the swap is a note.
    let log = rt.endpoint().status().requests;
    let chats: Vec<_> = log.iter().filter(|r| r.route == "POST /v1/chat/completions").collect();
    assert_eq!(chats.len(), 2, "{log:?}");
    assert!(chats.iter().all(|r| r.status == 200 && r.tokens.is_some_and(|t| t >= 1)), "{chats:?}");
    assert_eq!(chats[1].model.as_deref(), Some("tiny-b"));
    assert!(
        chats[1]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("swapped tiny (embeddings) for tiny-b")),
        "{chats:?}"
    );
    // llama-server serves embeddings or text from one start: the same model was started again
    // for embeddings.
    let embed = log.iter().find(|r| r.route == "POST /v1/embeddings").unwrap();
    assert_eq!(embed.note.as_deref(), Some("swapped tiny for tiny (embeddings)"), "{embed:?}");
    let loaded: Value =
        json_of(client().get(format!("{base}/models")).send().await.unwrap()).await.1;
    let loaded: Vec<&str> = loaded["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["loaded"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(loaded, ["tiny-b"]);
    rt.llm().stop().await.unwrap();
    rt.endpoint().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test builds it and runs this"]
async fn a_client_that_leaves_mid_stream_frees_the_slot() {
    let dir = TempDir::new("real-endpoint-leave");
    let rt = world(&dir, quiet()).await;
    let base = open(&rt).await;
    // How fast the slower model writes, to know how long a long reply would hold its slot.
    let (s, v) = json_of(post(&base, "/chat/completions", &chat("tiny-b", 64, false)).await).await;
    assert_eq!(s, 200, "{v}");
    let per_s = v["timings"]["predicted_per_second"].as_f64().expect("llama-server's timings");
    let long = 1500u32;
    let holds = f64::from(long) / per_s;

    let r = post(&base, "/chat/completions", &chat("tiny-b", long, true)).await;
    let mut body = r.bytes_stream();
    body.next().await.unwrap().unwrap();
    drop(body);
    let left = Instant::now();
    // The next request is answered at once, not after the abandoned reply would have ended.
    let (s, v) = json_of(post(&base, "/chat/completions", &chat("tiny-b", 4, false)).await).await;
    let took = left.elapsed().as_secs_f64();
    assert_eq!(s, 200, "{v}");
    eprintln!(
        "answered {took:.2} s after leaving a reply that would have held the slot {holds:.1} s"
    );
    assert!(
        took < holds / 3.0,
        "answered in {took:.2} s; the abandoned reply would have held the slot {holds:.1} s"
    );
    let log = rt.endpoint().status().requests;
    assert!(
        log.iter().any(|r| r.status == 499),
        "the request that was left is logged as such: {log:?}"
    );
    rt.llm().stop().await.unwrap();
}

fn decode_png(bytes: &[u8]) -> (u32, u32) {
    let info = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    (info.info().width, info.info().height)
}

fn image_ask(format: &str, steps: u32, seed: i64) -> Value {
    json!({
        "model": "tiny-flux2",
        "prompt": "a lighthouse",
        "size": "64x128",
        "n": 1,
        "response_format": format,
        "steps": steps,
        "cfg_scale": 1.0,
        "seed": seed,
        "sampler": "euler",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real sd-cli and sd-server; scripts/test builds them and runs this"]
async fn images_come_back_as_base64_or_as_a_url_that_expires() {
    use base64::Engine as _;
    let dir = TempDir::new("real-endpoint-images");
    let config = EndpointConfig { files_ttl: Duration::from_secs(3), ..quiet() };
    let rt = world(&dir, config).await;
    let base = open(&rt).await;

    let (s, v) =
        json_of(post(&base, "/images/generations", &image_ask("b64_json", 1, 5)).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        rt.diffusion().status().model_id.as_deref(),
        Some("tiny-flux2"),
        "started on demand"
    );
    let b64 = v["data"][0]["b64_json"].as_str().unwrap();
    let png = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(decode_png(&png), (64, 128));
    assert_eq!(v["data"][0]["seed"], 5);

    let (s, v) = json_of(post(&base, "/images/generations", &image_ask("url", 1, 5)).await).await;
    assert_eq!(s, 200, "{v}");
    let url = v["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&base), "{url}");
    let got = client().get(url).send().await.unwrap();
    assert_eq!(got.headers()["content-type"], "image/png");
    let served = got.bytes().await.unwrap();
    assert_eq!(&served[..], &png[..], "the same seed made the same image, served as it was made");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(client().get(url).send().await.unwrap().status(), 404, "expired");

    let log = rt.endpoint().status().requests;
    let images: Vec<_> = log.iter().filter(|r| r.route == "POST /v1/images/generations").collect();
    assert!(images.iter().all(|r| r.status == 200 && r.images == Some(1)), "{images:?}");
    rt.diffusion().stop().await.unwrap();
}

/// Waits for the LLM's state to be `want` (events on `rx`).
async fn until_llm(rx: &mut tokio::sync::broadcast::Receiver<AppEvent>, want: ServerState) {
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            if let Ok(AppEvent::ServerState { server: ServerKind::Llm, state, .. }) =
                rx.recv().await
            {
                if state == want {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the LLM never became {want:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server, sd-cli and sd-server; scripts/test builds them and runs this"]
async fn a_chat_waits_while_an_image_has_the_llm_paused() {
    use ipc::orchestrator::{OffloadMode, OrchestratorSettings};
    let dir = TempDir::new("real-endpoint-pause");
    let rt = world(&dir, quiet()).await;
    let settings = OrchestratorSettings { mode: OffloadMode::Always, ..Default::default() };
    rt.orchestrator().set_settings(settings).await.unwrap();
    let short = EndpointSettings { wait_secs: 1, ..Default::default() };
    let st = rt.endpoint().set(short).await.unwrap();
    let base = st.base_url.unwrap();
    let (s, _) = json_of(post(&base, "/chat/completions", &chat("tiny", 2, false)).await).await;
    assert_eq!(s, 200);

    // A short wait: the chat gets 503 with Retry-After while the LLM is away.
    let mut rx = rt.events().subscribe();
    let image = tokio::spawn({
        let base = base.clone();
        async move {
            json_of(post(&base, "/images/generations", &image_ask("b64_json", 12, 1)).await).await
        }
    });
    until_llm(&mut rx, ServerState::Offloaded).await;
    let r = post(&base, "/chat/completions", &chat("tiny", 2, false)).await;
    assert_eq!(r.status(), 503);
    let retry: u32 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let (_, v) = json_of(r).await;
    assert_eq!(v["error"]["code"], "model_unavailable", "{v}");
    assert_eq!(image.await.unwrap().0, 200);
    until_llm(&mut rx, ServerState::Running).await;

    // The usual wait: the chat sent during the pause is answered after the LLM comes back.
    let port = rt.endpoint().status().port;
    let st = rt.endpoint().set(EndpointSettings { port, ..Default::default() }).await.unwrap();
    let base = st.base_url.unwrap();
    let image = tokio::spawn({
        let base = base.clone();
        async move {
            json_of(post(&base, "/images/generations", &image_ask("b64_json", 12, 2)).await).await
        }
    });
    until_llm(&mut rx, ServerState::Offloaded).await;
    let (s, v) = json_of(post(&base, "/chat/completions", &chat("tiny", 2, false)).await).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(image.await.unwrap().0, 200);
    let log = rt.endpoint().status().requests;
    let waited = log.iter().rev().find(|r| r.route == "POST /v1/chat/completions").unwrap();
    assert!(waited.note.as_deref().is_some_and(|n| n.contains("after an image")), "{waited:?}");
    rt.llm().stop().await.unwrap();
    rt.diffusion().stop().await.unwrap();
}

/// What the issue asks of the endpoint in one journey: a program using an ordinary OpenAI
/// client with only its base URL changed lists the models, chats (whole and streamed) with each
/// installed text model, gets embeddings and makes an image, without touching the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server, sd-cli and sd-server; scripts/test builds them and runs this"]
async fn an_ordinary_openai_client_uses_every_installed_model() {
    use async_openai::config::OpenAIConfig;
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
    };
    use async_openai::types::embeddings::CreateEmbeddingRequestArgs;
    use async_openai::types::images::{CreateImageRequestArgs, Image, ImageModel, ImageSize};
    use base64::Engine as _;

    let dir = TempDir::new("real-endpoint-openai");
    let rt = world(&dir, quiet()).await;
    let base = open(&rt).await;
    let config = OpenAIConfig::new().with_api_base(&base).with_api_key("not-needed-on-loopback");
    let openai = async_openai::Client::with_config(config).with_http_client(client());

    let models = openai.models().list().await.unwrap();
    let ids: Vec<&str> = models.data.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in ["tiny", "tiny-b", "tiny-flux2"] {
        assert!(ids.contains(&id), "{id} in {ids:?}");
    }

    for model in ["tiny", "tiny-b"] {
        // Greedy and seeded, as in `chat`: a random-weight model sampled at llama-server's
        // default temperature may end at once or write only held-back partial UTF-8 bytes, and
        // then a stream carries no text (CI saw it once for tiny-b).
        let ask = CreateChatCompletionRequestArgs::default()
            .model(model)
            .messages([ChatCompletionRequestUserMessage::from("Tell me a story").into()])
            .max_completion_tokens(16u32)
            .temperature(0.0)
            .seed(1)
            .build()
            .unwrap();
        let reply = openai.chat().create(ask.clone()).await.unwrap();
        assert_eq!(reply.model, model);
        assert!(!reply.choices.is_empty());
        let mut stream = openai.chat().create_stream(ask).await.unwrap();
        let mut pieces = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            pieces += chunk.choices.iter().filter(|c| c.delta.content.is_some()).count();
        }
        assert!(pieces >= 1, "{model}: streamed pieces");
    }

    let ask = CreateEmbeddingRequestArgs::default().model("tiny").input("hello").build().unwrap();
    let got = openai.embeddings().create(ask).await.unwrap();
    assert_eq!(got.data[0].embedding.len(), 64);

    let ask = CreateImageRequestArgs::default()
        .model(ImageModel::Other("tiny-flux2".into()))
        .prompt("a lighthouse")
        .size(ImageSize::Other("64x64".into()))
        .build()
        .unwrap();
    let images = openai.images().generate(ask).await.unwrap();
    let Image::B64Json { b64_json, .. } = images.data[0].as_ref() else {
        panic!("base64 is the endpoint's default: {:?}", images.data[0])
    };
    let png = base64::engine::general_purpose::STANDARD.decode(b64_json.as_str()).unwrap();
    assert_eq!(decode_png(&png), (64, 64));
    rt.llm().stop().await.unwrap();
    rt.diffusion().stop().await.unwrap();
}

/// "Stop an idle text model after N minutes": the model the endpoint started is stopped once
/// no request came for that long (a minute is a second here), and the next request starts it
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the real llama-server; scripts/test builds it and runs this"]
async fn an_idle_text_model_is_stopped_and_the_next_request_starts_it() {
    let dir = TempDir::new("real-endpoint-idle");
    let config = EndpointConfig { idle_minute: Duration::from_secs(1), ..quiet() };
    let rt = world(&dir, config).await;
    let settings = EndpointSettings { idle_unload_mins: Some(2), ..Default::default() };
    let base = rt.endpoint().set(settings).await.unwrap().base_url.unwrap();
    let mut rx = rt.events().subscribe();
    let (s, _) = json_of(post(&base, "/chat/completions", &chat("tiny", 2, false)).await).await;
    assert_eq!(s, 200);
    let started = Instant::now();
    until_llm(&mut rx, ServerState::Stopped).await;
    let idle = started.elapsed();
    assert!(idle >= Duration::from_secs(2), "not before the idle time: {idle:?}");
    assert!(idle < Duration::from_secs(8), "{idle:?}");
    let (s, _) = json_of(post(&base, "/chat/completions", &chat("tiny", 2, false)).await).await;
    assert_eq!(s, 200, "started again on demand");
    rt.llm().stop().await.unwrap();
}
