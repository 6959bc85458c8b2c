//! The OpenAI-compatible endpoint's answers that need no server running: the model list,
//! OpenAI's error shape for an unknown model, a model of the other kind, bad fields, a body
//! over the limit, a wrong method, an unknown route, a non-loopback Host or a foreign Origin;
//! the bearer token when it listens off loopback; settings kept and a taken port named. The
//! routes that start real servers are in `real_endpoint.rs`.

use ipc::endpoint::EndpointSettings;
use ipc::models::{ModelInfo, ModelKind};
use ipc::StorageRootSource;
use runtime::endpoint::EndpointConfig;
use runtime::system::SystemProbe;
use runtime::{EventBus, Runtime, StorageRoot};
use serde_json::{json, Value};
use std::sync::Arc;
use testkit::TempDir;

async fn runtime(dir: &TempDir) -> Runtime {
    let rt = Runtime::open(
        StorageRoot::new(dir.join("home"), StorageRootSource::Env),
        EventBus::default(),
        Arc::new(SystemProbe::real()),
    )
    .unwrap();
    for (id, name, kind) in [
        ("tiny", "Tiny", ModelKind::Llm),
        ("tiny-b", "Tiny B", ModelKind::Llm),
        ("flux", "Flux", ModelKind::Diffusion),
    ] {
        let folder = match kind {
            ModelKind::Llm => rt.storage().llm_models(),
            ModelKind::Diffusion => rt.storage().diffusion_models(),
        };
        let path = folder.join(format!("{id}.gguf"));
        std::fs::write(&path, b"GGUF").unwrap();
        let info = ModelInfo::local_file(id, name, kind, &path.display().to_string(), 4);
        rt.models().register(&info).await.unwrap();
    }
    rt.endpoint().configure(EndpointConfig {
        default_port: 0,
        body_limit: 4096,
        ..Default::default()
    });
    rt
}

async fn open(rt: &Runtime) -> String {
    let st = rt.endpoint().open().await;
    assert!(st.running, "{st:?}");
    st.base_url.unwrap()
}

fn client() -> reqwest::Client {
    runtime::net::local_client().unwrap()
}

async fn post(base: &str, route: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{route}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, json_of(r).await)
}

async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// OpenAI's error object: message, type, param, code.
fn error_of(v: &Value) -> (&str, &str, Option<&str>) {
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (e["type"].as_str().unwrap(), e["code"].as_str().unwrap(), e["param"].as_str())
}

#[tokio::test]
async fn models_are_listed_and_bad_requests_get_openai_errors_naming_the_field() {
    let dir = TempDir::new("endpoint-errors");
    let rt = runtime(&dir).await;
    let base = open(&rt).await;
    assert!(base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"), "{base}");

    let list = client().get(format!("{base}/models")).send().await.unwrap();
    let list = json_of(list).await;
    let ids: Vec<(&str, &str, bool)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (m["id"].as_str().unwrap(), m["kind"].as_str().unwrap(), m["loaded"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(list["object"], "list");
    assert_eq!(ids.len(), 3, "{list}");
    assert!(
        ids.contains(&("tiny", "text", false)) && ids.contains(&("flux", "image", false)),
        "{list}"
    );
    assert_eq!(ids[2].1, "image", "text models first: {list}");

    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let (s, v) = post(&base, "/chat/completions", chat("nope")).await;
    assert_eq!(
        (s, error_of(&v)),
        (404, ("invalid_request_error", "model_not_found", Some("model")))
    );
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("tiny") && m.contains("tiny-b") && !m.contains("flux"),
        "names the text models: {m}"
    );
    let (s, v) = post(&base, "/chat/completions", chat("flux")).await;
    assert_eq!((s, error_of(&v).1), (400, "model_not_supported"));
    assert!(v["error"]["message"].as_str().unwrap().contains("/v1/images/generations"), "{v}");
    let (s, v) = post(&base, "/embeddings", json!({"model": 7, "input": "x"})).await;
    assert_eq!((s, error_of(&v).2), (400, Some("model")));

    let (s, v) = post(
        &base,
        "/images/generations",
        json!({"model": "flux", "prompt": "a cat", "size": "100x64"}),
    )
    .await;
    assert_eq!((s, error_of(&v)), (400, ("invalid_request_error", "invalid_value", Some("size"))));
    let (s, v) = post(&base, "/images/generations", json!({"model": "flux"})).await;
    assert_eq!(
        (s, error_of(&v)),
        (400, ("invalid_request_error", "missing_required_parameter", Some("prompt")))
    );
    let (s, v) =
        post(&base, "/images/generations", json!({"model": "tiny", "prompt": "a cat"})).await;
    assert_eq!((s, error_of(&v).1), (400, "model_not_supported"));

    let r = client()
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body("{\"model\": \"tiny\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(error_of(&json_of(r).await).1, "invalid_json");
    let big = json!({"model": "tiny", "prompt": "x".repeat(8000)});
    let (s, v) = post(&base, "/completions", big).await;
    assert_eq!((s, error_of(&v).1), (413, "request_too_large"));

    let r = client().get(format!("{base}/chat/completions")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST, OPTIONS");
    let r = client().get(format!("{base}/audio/speech")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(error_of(&json_of(r).await).1, "unknown_url");
    let r = client().get(format!("{base}/files/img-0-0.png")).send().await.unwrap();
    assert_eq!(r.status(), 404, "an image URL nobody made");

    // DNS rebinding and drive-by pages: refused before any route runs.
    let r =
        client().get(format!("{base}/models")).header("host", "evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(error_of(&json_of(r).await).0 == "permission_error");
    let r = client()
        .get(format!("{base}/models"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client()
        .get(format!("{base}/models"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], "http://localhost:3000");

    // Every request is in the log, with what went wrong.
    let log = rt.endpoint().status().requests;
    let not_found = log.iter().find(|r| r.status == 404 && r.route == "POST /v1/chat/completions");
    assert!(
        not_found.is_some_and(|r| r.note.as_deref().is_some_and(|n| n.contains("nope"))),
        "{log:?}"
    );
    assert!(log.iter().any(|r| r.status == 413), "{log:?}");
    rt.endpoint().close().await;
    assert!(!rt.endpoint().status().running);
}

#[tokio::test]
async fn off_loopback_it_wants_a_token_and_settings_are_kept() {
    let dir = TempDir::new("endpoint-settings");
    let rt = runtime(&dir).await;
    // Another address without a token is refused before anything is saved.
    let open_lan = EndpointSettings { host: Some("0.0.0.0".into()), ..Default::default() };
    let e = rt.endpoint().set(open_lan.clone()).await.unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");
    assert!(!rt.storage().config().join("endpoint.json").exists());

    let lan = EndpointSettings { token: Some("s3cret-token".into()), wait_secs: 9, ..open_lan };
    let st = rt.endpoint().set(lan.clone()).await.unwrap();
    assert!(st.running, "{st:?}");
    let url = format!("http://127.0.0.1:{}/v1/models", st.port.unwrap());
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(error_of(&json_of(r).await).1, "invalid_api_key");
    let r = client().get(&url).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The settings outlive the app: a new runtime on the same folder opens the same way.
    rt.endpoint().close().await;
    let again = runtime(&dir).await;
    assert_eq!(again.endpoint().status().settings, lan);
    let off = EndpointSettings { enabled: false, ..lan };
    let st = again.endpoint().set(off).await.unwrap();
    assert!(!st.running && st.port.is_none(), "{st:?}");
    let st = again.endpoint().open().await;
    assert!(!st.running, "off stays off at launch");
}

#[tokio::test]
async fn a_taken_port_is_named_and_the_default_moves_on() {
    let dir = TempDir::new("endpoint-port");
    let rt = runtime(&dir).await;
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = rt
        .endpoint()
        .set(EndpointSettings { port: Some(port), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.to_ipc().code, ipc::ErrorCode::PortInUse, "{e}");
    let st = rt.endpoint().status();
    assert!(!st.running && st.error.is_some(), "the window can say why: {st:?}");
    // With no port set, a taken default moves to the next free one and says so.
    rt.endpoint().configure(EndpointConfig { default_port: port, ..Default::default() });
    let st = rt.endpoint().set(EndpointSettings::default()).await.unwrap();
    assert!(st.running && st.port != Some(port), "{st:?}");
    assert!(st.port_note.as_deref().is_some_and(|n| n.contains(&port.to_string())), "{st:?}");
}

/// Every request looks models up, so the endpoint reads the registry (a folder and every
/// model's JSON) again only when a registry folder changed: a model registered after the list
/// was read is found at once; while nothing changed, the list read before is used.
#[tokio::test]
async fn the_model_list_is_read_again_only_when_the_registry_changed() {
    use std::time::{Duration, SystemTime};
    let dir = TempDir::new("endpoint-listed");
    let rt = runtime(&dir).await;
    let base = open(&rt).await;
    let ids = || async {
        let v = json_of(client().get(format!("{base}/models")).send().await.unwrap()).await;
        let mut ids: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().into())
            .collect();
        ids.sort();
        ids
    };
    // The folders unchanged for an hour, as when the app has been open a while.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for folder in [rt.storage().llm_models(), rt.storage().diffusion_models()] {
        std::fs::File::open(&folder).unwrap().set_modified(hour_ago).unwrap();
    }
    assert_eq!(ids().await, ["flux", "tiny", "tiny-b"]);

    // A record changed in place (the store never does this: it writes by rename) leaves the
    // folder's time alone: the list read before is still used, which shows it is not re-read.
    let record = rt.storage().llm_models().join("tiny-b.json");
    let text = std::fs::read_to_string(&record).unwrap().replace("\"tiny-b\"", "\"tiny-c\"");
    std::fs::write(&record, text).unwrap();
    assert_eq!(ids().await, ["flux", "tiny", "tiny-b"]);

    // Registering a model moves the folder's time: the registry is read again, at once.
    let path = rt.storage().llm_models().join("late.gguf");
    std::fs::write(&path, b"GGUF").unwrap();
    let info =
        ModelInfo::local_file("late", "Late", ModelKind::Llm, &path.display().to_string(), 4);
    rt.models().register(&info).await.unwrap();
    assert_eq!(ids().await, ["flux", "late", "tiny", "tiny-c"]);
    // So does deleting one.
    rt.models().delete("late").await.unwrap();
    assert_eq!(ids().await, ["flux", "tiny", "tiny-c"]);
    rt.endpoint().close().await;
}
