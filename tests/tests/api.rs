//! The API card in the real window: the endpoint is open when the app starts and the card shows
//! its URL; another program lists the models and chats with the tiny model through it (the LLM
//! starts on demand, installing llama-server from the release mirror); the card's log shows
//! both requests with their model and status, and the LLM tab shows the server it started.
//! Turning the endpoint off in the card closes the port.

use e2e::{launch_with_tiny_llama, live_group_members, live_processes_matching};
use testkit::http::FixtureServer;
use testkit::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn another_program_chats_through_the_api_and_the_card_shows_it() {
    let server = FixtureServer::start().await;
    let dir = TempDir::new("e2e-api");
    let app = launch_with_tiny_llama(&server, dir.path()).await;
    app.click("#tab-btn-llm").await;
    let base = app.wait_text("#api-url", |t| t.starts_with("http://127.0.0.1:")).await;
    assert!(base.ends_with("/v1"), "{base}");
    assert_eq!(app.wait_text("#api-state", |t| !t.is_empty()).await, "On");

    let client = runtime::net::local_client().unwrap();
    let models = client.get(format!("{base}/models")).send().await.unwrap();
    assert_eq!(models.status().as_u16(), 200);
    let models: serde_json::Value = serde_json::from_slice(&models.bytes().await.unwrap()).unwrap();
    let id = models["data"][0]["id"].as_str().expect("the tiny model is listed").to_owned();
    let chat = serde_json::json!({
        "model": id,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 4,
    });
    let reply = client
        .post(format!("{base}/chat/completions"))
        .header("content-type", "application/json")
        .body(chat.to_string())
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    let body = String::from_utf8_lossy(&reply.bytes().await.unwrap()).into_owned();
    assert_eq!(status, 200, "{body}");

    // Both requests in the card's log, newest first, with the model and what happened.
    let log = app.wait_text("#api-log", |t| t.contains("/v1/chat/completions")).await;
    assert!(log.contains("GET /v1/models") && log.contains(&id), "{log}");
    let first = app.wait_text(".api-request", |t| !t.is_empty()).await;
    assert!(first.contains("POST /v1/chat/completions") && first.contains("200"), "{first}");
    assert!(first.contains("started"), "the start it made is said: {first}");
    app.wait_text("#llm-state", |t| t == "Running").await;
    app.script("document.getElementById('api-log').scrollIntoView()").await;
    app.screenshot("api-1-request-logged").await;

    // Off in the card: the port closes, and the card says so.
    app.click("#api-settings summary").await;
    app.click("#api-enabled").await;
    app.click("#api-save").await;
    app.wait_text("#api-state", |t| t == "Off").await;
    let refused = client.get(format!("{base}/models")).send().await;
    assert!(refused.is_err(), "nothing listens once it is off");

    app.click("#llm-stop").await;
    app.wait_text("#llm-state", |t| t == "Stopped").await;
    let left = live_processes_matching(&dir.join("home/binaries").display().to_string());
    assert!(left.is_empty(), "llama-server left running: {left:?}");
    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
