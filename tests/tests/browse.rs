//! Finding a model and its fit before downloading it (#17), in the real window: search a name on
//! a Hugging Face fixture shaped as the Hub (the tree in pages, each file's `resolve` a redirect
//! to storage with `x-linked-etag`), open the repo, see a badge per quantisation read from the
//! headers alone (a model far too big for any machine says so), move the context slider and see
//! the badges weighed again without a request, then download an entry (split in two shards)
//! with its vision projector ticked, every file verified against the repo tree's SHA-256, and
//! find it installed with the same badge and marked as reading images.

use e2e::{live_group_members, App, LaunchOptions};
use gguf::fixtures::{tiny_llama, zero_model, TinyLlama, ZeroArch, ZeroModel};
use testkit::http::{FixtureServer, Route};
use testkit::hub::{serve_repo, storage_path, HubFile};

const REPO: &str = "acme/Tiny-GGUF";

/// A header-only llama of width `n_embd` and `n_layer` blocks trained for `n_ctx` tokens: the
/// start of the file (header and 1 MiB), the header's length, the whole file's length.
fn header_only(n_embd: u64, n_layer: u64, n_ctx: u64) -> (Vec<u8>, u64, u64) {
    let w = zero_model(ZeroModel {
        arch: ZeroArch::Llama,
        n_vocab: 32000,
        n_embd,
        n_layer,
        n_head: n_embd / 128,
        n_head_kv: 8,
        head_dim: 128,
        n_ff: n_embd * 4,
        n_ctx,
    });
    let (mut bytes, _) = w.header_bytes();
    let header = gguf::read_header(&bytes[..], gguf::Limits::default()).unwrap().header_bytes;
    bytes.resize(bytes.len() + (1 << 20), 0);
    (bytes, header, w.file_len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "real window: run scripts/test"]
async fn find_a_model_see_how_it_fits_and_download_it() {
    let server = FixtureServer::start().await;
    let tiny = tiny_llama(TinyLlama::default()).to_bytes();
    // 2 GiB of weights and 256 KiB of KV cache a token, trained for 262144 tokens: in RAM at
    // 8k anywhere; the whole trained context (64 GiB of cache) on almost no machine.
    let (long, long_header, long_size) = header_only(1024, 64, 262_144);
    // 1.3 TB of weights: too big everywhere.
    let (huge, huge_header, huge_size) = header_only(16384, 200, 4096);
    // The small model split in two shards, with a vision projector beside it.
    let shard2 = gguf::fixtures::split_shard(1, 2, 20_000).to_bytes();
    let projector = gguf::fixtures::tiny_projector(10_000).to_bytes();
    let files = [
        HubFile::whole("Tiny-Q2_K-00001-of-00002.gguf", tiny.clone()),
        HubFile::whole("Tiny-Q2_K-00002-of-00002.gguf", shard2.clone()),
        HubFile::start("Tiny-Q8_0.gguf", long, long_size),
        HubFile::start("Tiny-F16.gguf", huge, huge_size),
        HubFile::whole("mmproj-Tiny-F16.gguf", projector.clone()),
    ];
    // As the Hub serves it: the tree in pages, each file's `resolve` a redirect to storage.
    serve_repo(&server, REPO, "main", &files, 3);
    server.add(
        "/api/models?search=tiny&filter=gguf&sort=downloads&direction=-1&limit=30",
        Route::bytes(
            format!(r#"[{{"id": "{REPO}", "downloads": 1234, "likes": 5}}]"#).into_bytes(),
        ),
    );

    let env = vec![("HF_ENDPOINT".to_owned(), server.url(""))];
    let app = App::launch_with(LaunchOptions { env, ..Default::default() }).await;
    app.click("#tab-btn-models").await;
    app.wait_visible("#browse-text").await.send_keys("tiny").await.unwrap();
    app.click("#browse-search").await;
    app.click(&format!("#browse-hits button[data-repo='{REPO}']")).await;

    // A badge per entry, from the headers alone.
    let badge = |quant: &str| format!("tr.browse-entry[data-quant='{quant}'] .badge.fit");
    assert_eq!(app.wait_text(&badge("Q2_K"), |t| !t.is_empty()).await, "CPU");
    let big = app.wait_text(&badge("F16"), |t| !t.is_empty()).await;
    assert_eq!(big, "Too big");
    for (name, header) in [("Tiny-Q8_0.gguf", long_header), ("Tiny-F16.gguf", huge_header)] {
        let sent = server.sent(&storage_path(&files, name));
        assert!(
            sent <= header + 64 * 1024,
            "{name}: {sent} bytes fetched for a {header}-byte header"
        );
    }
    // At 8k tokens the long-context model fits in RAM whole: the best fit.
    let why = "tr.browse-entry[data-quant='Q8_0'] td.small";
    let at_8k = app.wait_text(why, |t| t.contains("8192 tokens")).await;
    let best = "tr.best-fit";
    assert_eq!(
        app.wait_visible(best).await.attr("data-quant").await.unwrap().as_deref(),
        Some("Q8_0")
    );
    app.screenshot("browse-1-badges").await;

    // The slider to its top: weighed again, with no request to the fixture.
    let q8 = storage_path(&files, "Tiny-Q8_0.gguf");
    let asked_before = server.seen(&q8).len();
    app.script(
        "const s = document.querySelector('#browse-context'); s.value = s.max; \
         s.dispatchEvent(new Event('input', { bubbles: true }));",
    )
    .await;
    app.wait_text("#browse-context-value", |t| t == "262144").await;
    let at_top = app.wait_text(why, |t| t != at_8k && t.contains("262144")).await;
    assert_eq!(server.seen(&q8).len(), asked_before);
    let download = if at_top.contains("only") {
        // Not the whole context here: the best fit moves to the file that has its whole one,
        // and that is the one downloaded.
        app.wait_text("tr.best-fit code", |t| t == "Q2_K").await;
        "tr.best-fit button"
    } else {
        "tr.browse-entry[data-quant='Q2_K'] button"
    };
    app.screenshot("browse-2-long-context").await;

    // Download it from the view with its vision projector ticked: every file verified against
    // the tree's SHA-256, installed.
    app.script(
        "const s = document.querySelector('#browse-projector'); s.value = '0'; \
         s.dispatchEvent(new Event('change', { bubbles: true }));",
    )
    .await;
    app.wait_visible(download).await.click().await.unwrap();
    app.wait_visible("#browse-queued").await;
    app.wait_text(".dl-row .badge.state-done", |t| t == "done").await;
    app.wait_visible("tr.model-row[data-id='tiny-q2-k']").await;
    // Listed with the same badge, weighed against this machine now.
    let listed =
        app.wait_text("tr.model-row[data-id='tiny-q2-k'] .badge.fit", |t| !t.is_empty()).await;
    assert_eq!(listed, "CPU");
    app.wait_visible("tr.model-row[data-id='tiny-q2-k'] .m-vision").await;
    let folder = app.genai_home().join("models/llm/tiny-q2-k");
    for (name, bytes) in [
        ("Tiny-Q2_K-00001-of-00002.gguf", &tiny),
        ("Tiny-Q2_K-00002-of-00002.gguf", &shard2),
        ("mmproj-Tiny-F16.gguf", &projector),
    ] {
        let on_disk = std::fs::read(folder.join(name)).unwrap();
        assert!(on_disk == *bytes, "{name}: the file on disk is the served file");
    }
    app.screenshot("browse-3-downloaded").await;

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
