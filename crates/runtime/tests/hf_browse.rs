//! The browse view's Hugging Face calls against a loopback fixture with the Hub API's shapes:
//! the GGUF model search, a repo's tree grouped into quantisation entries, the token sent only
//! to the Hub's host, and the Hub's refusals (no such repo, rate limiting) as clear errors.

use ipc::models::HfSort as Sort;
use ipc::ErrorCode;
use runtime::models::browse::group;
use runtime::models::hf::HfAccess;
use runtime::models::hf_api::{client, search, tree};
use testkit::http::{FixtureServer, Route};

fn access(server: &FixtureServer, token: Option<&str>) -> HfAccess {
    HfAccess {
        endpoint: server.url("").trim_end_matches('/').to_owned(),
        token: token.map(str::to_owned),
    }
}

fn json(text: &str) -> Route {
    Route::bytes(text.as_bytes().to_vec()).header("content-type", "application/json")
}

#[tokio::test]
async fn search_and_tree_as_the_hub_answers_them() {
    let server = FixtureServer::start().await;
    let http = client().unwrap();
    server.add(
        "/api/models?search=qwen3+8b&filter=gguf&sort=downloads&direction=-1&limit=20",
        json(
            r#"[{"_id": "1", "id": "Qwen/Qwen3-8B-GGUF", "downloads": 120000, "likes": 300,
                 "lastModified": "2026-05-01T00:00:00.000Z", "gated": false, "tags": ["gguf"]},
                {"id": "acme/Qwen3-8B-Gated-GGUF", "downloads": 5, "gated": "manual"}]"#,
        ),
    );
    let hits =
        search(&http, &access(&server, Some("hf_secret")), " qwen3 8b ", Sort::Downloads, 20)
            .await
            .unwrap();
    let got: Vec<(&str, u64, bool)> =
        hits.iter().map(|h| (h.id.as_str(), h.downloads, h.gated())).collect();
    assert_eq!(got, [("Qwen/Qwen3-8B-GGUF", 120000, false), ("acme/Qwen3-8B-Gated-GGUF", 5, true)]);
    // The token goes to the Hub's host.
    let seen = &server
        .gets("/api/models?search=qwen3+8b&filter=gguf&sort=downloads&direction=-1&limit=20")[0];
    assert_eq!(seen.header("authorization"), Some("Bearer hf_secret"));

    let sha = "ab".repeat(32);
    server.add(
        "/api/models/Qwen/Qwen3-8B-GGUF/tree/refs%2Fpr%2F1?recursive=true",
        json(&format!(
            r#"[{{"type": "file", "oid": "1", "size": 900, "path": "README.md"}},
                {{"type": "file", "oid": "2", "size": 135, "path": "Qwen3-8B-Q4_K_M.gguf",
                  "lfs": {{"oid": "{sha}", "size": 5027783488, "pointerSize": 135}}}},
                {{"type": "file", "oid": "3", "size": 135, "path": "Qwen3-8B-Q8_0.gguf",
                  "lfs": {{"oid": "{sha}", "size": 8709518624, "pointerSize": 135}}}}]"#
        )),
    );
    let files =
        tree(&http, &access(&server, None), "Qwen/Qwen3-8B-GGUF", "refs/pr/1").await.unwrap();
    let repo = group(&files);
    let entries: Vec<(Option<&str>, u64)> =
        repo.entries.iter().map(|e| (e.quant.as_deref(), e.bytes)).collect();
    assert_eq!(entries, [(Some("Q4_K_M"), 5027783488), (Some("Q8_0"), 8709518624)]);
    assert_eq!(repo.entries[0].files[0].sha256.as_deref(), Some(sha.as_str()));
}

#[tokio::test]
async fn the_hubs_refusals_become_errors_with_remedies() {
    let server = FixtureServer::start().await;
    let http = client().unwrap();
    let a = access(&server, None);
    server.add(
        "/api/models/acme/nothing-GGUF/tree/main?recursive=true",
        json(r#"{"error": "Repository not found"}"#)
            .with_status(401)
            .header("x-error-code", "RepoNotFound"),
    );
    let e = tree(&http, &a, "acme/nothing-GGUF", "").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ModelNotFound, "{e}");
    assert!(e.to_string().contains("no repository acme/nothing-GGUF"), "{e}");

    server.add(
        "/api/models?search=x&filter=gguf&sort=lastModified&direction=-1&limit=5",
        json(r#"{"error": "rate limited"}"#).with_status(429).header("retry-after", "12"),
    );
    let e = search(&http, &a, "x", Sort::Recent, 5).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Network, "{e}");
    assert!(e.to_ipc().remedy.contains("Wait 12 s"), "{:?}", e.to_ipc());

    // A name that is not owner/name is refused before any request; an answer that is not the
    // API's shape is an error, not a panic.
    let before = server.seen("/api/models/not-a-repo/tree/main?recursive=true").len();
    assert_eq!(
        tree(&http, &a, "not-a-repo", "").await.unwrap_err().code(),
        ErrorCode::InvalidInput
    );
    assert_eq!(server.seen("/api/models/not-a-repo/tree/main?recursive=true").len(), before);
    server.add("/api/models/acme/html/tree/main?recursive=true", Route::bytes(b"<html>".to_vec()));
    let e = tree(&http, &a, "acme/html", "main").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Network, "{e}");
}
