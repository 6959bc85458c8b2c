//! OpenAI's shapes for the local endpoint: its error object, the model list, the model a request
//! names, and an images request read into the app's own [`ImageRequest`]. Pure (no I/O) and
//! table-tested; the server glue answers with what these decide.

use ipc::diffusion::ImageRequest;
use ipc::models::{ModelInfo, ModelKind};
use serde_json::{json, Map, Value};

/// Most images one request may ask for (the job API's limit).
pub const MAX_IMAGES: u32 = 5;

/// An error as OpenAI's API answers it: `{"error": {"message", "type", "param", "code"}}` with
/// its HTTP status (and, for "wait and retry", the seconds to wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `not_found_error`, `server_error`, …
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// `Retry-After`, in seconds (503 while the LLM is away for an image).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, kind: &'static str, code: &'static str, message: String) -> Self {
        Self { status, message, kind, param: None, code: Some(code), retry_after: None }
    }

    /// A field with a value that cannot be used (400), naming the field.
    pub fn bad_field(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(400, "invalid_request_error", "invalid_value", message.into())
        }
    }

    /// A field the request needs and lacks (400).
    pub fn missing(param: &str) -> Self {
        Self {
            param: Some(param.to_owned()),
            ..Self::new(
                400,
                "invalid_request_error",
                "missing_required_parameter",
                format!("`{param}` is required"),
            )
        }
    }

    /// A body that is not a JSON object (400).
    pub fn not_json(detail: &str) -> Self {
        Self::new(
            400,
            "invalid_request_error",
            "invalid_json",
            format!("the body must be a JSON object: {detail}"),
        )
    }

    /// A model nobody installed (404), naming the ones of that kind that are.
    pub fn unknown_model(name: &str, installed: &[&str], kind: ModelKind) -> Self {
        let what = kind_word(kind);
        let have = if installed.is_empty() {
            format!("no {what} model is installed; download one in the Models tab")
        } else {
            format!("installed {what} models: {}", installed.join(", "))
        };
        Self {
            param: Some("model".into()),
            ..Self::new(
                404,
                "invalid_request_error",
                "model_not_found",
                format!("the model `{name}` does not exist here; {have}"),
            )
        }
    }

    /// A model of the other kind (an image model asked to chat, and so on) (400).
    pub fn wrong_kind(name: &str, is: ModelKind, route: &str) -> Self {
        let use_instead = match is {
            ModelKind::Llm => "/v1/chat/completions, /v1/completions or /v1/embeddings",
            ModelKind::Diffusion => "/v1/images/generations",
        };
        Self {
            param: Some("model".into()),
            ..Self::new(
                400,
                "invalid_request_error",
                "model_not_supported",
                format!(
                    "`{name}` is an {} model; {route} does not serve it (use {use_instead})",
                    kind_word(is)
                ),
            )
        }
    }

    /// A body over the endpoint's limit (413).
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "invalid_request_error",
            "request_too_large",
            format!("the body is over {} KiB", limit / 1024),
        )
    }

    /// Not now, try again in `secs` (503 with `Retry-After`).
    pub fn busy(message: impl Into<String>, secs: u32) -> Self {
        Self {
            retry_after: Some(secs),
            ..Self::new(503, "server_error", "model_unavailable", message.into())
        }
    }

    /// Something on this side failed (a server that would not start, an image job that
    /// failed): `status` 500 or 502, with what went wrong and what to do.
    pub fn server(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(status, "server_error", code, message.into())
    }

    /// The body OpenAI's clients read.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": self.param,
            "code": self.code,
        }})
    }
}

fn kind_word(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Llm => "text",
        ModelKind::Diffusion => "image",
    }
}

/// One entry of `GET /v1/models`: OpenAI's fields, plus `kind` (`text` / `image`), `loaded`
/// and the name the window shows.
pub fn model_entry(m: &ModelInfo, loaded: bool) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.downloaded_at_ms / 1000,
        "owned_by": "local",
        "kind": kind_word(m.kind),
        "loaded": loaded,
        "name": m.name,
    })
}

/// `GET /v1/models`: every installed model, text models first, each in the order given.
pub fn model_list(models: &[ModelInfo], loaded: &[&str]) -> Value {
    let mut data: Vec<&ModelInfo> = models.iter().collect();
    data.sort_by_key(|m| m.kind != ModelKind::Llm);
    let data: Vec<Value> =
        data.into_iter().map(|m| model_entry(m, loaded.contains(&m.id.as_str()))).collect();
    json!({"object": "list", "data": data})
}

/// The installed model a request names, for a route that serves `kind`: by id, else by the
/// window's name (any case). `None` (no `model` field) picks the only model of that kind, or
/// the loaded one when there are several.
pub fn resolve<'a>(
    name: Option<&str>,
    models: &'a [ModelInfo],
    kind: ModelKind,
    loaded: &[&str],
    route: &str,
) -> Result<&'a ModelInfo, ApiError> {
    let of_kind: Vec<&ModelInfo> = models.iter().filter(|m| m.kind == kind).collect();
    let ids: Vec<&str> = of_kind.iter().map(|m| m.id.as_str()).collect();
    let Some(name) = name else {
        return match of_kind.as_slice() {
            [only] => Ok(only),
            _ => of_kind
                .iter()
                .find(|m| loaded.contains(&m.id.as_str()))
                .copied()
                .ok_or_else(|| ApiError::missing("model")),
        };
    };
    let found = models
        .iter()
        .find(|m| m.id == name)
        .or_else(|| models.iter().find(|m| m.name.eq_ignore_ascii_case(name)));
    match found {
        Some(m) if m.kind == kind => Ok(m),
        Some(m) => Err(ApiError::wrong_kind(name, m.kind, route)),
        None => Err(ApiError::unknown_model(name, &ids, kind)),
    }
}

/// `size` as OpenAI writes it, `"WxH"`, each side a multiple of 64 from 64 to 2048 (what
/// sd.cpp's path accepts).
pub fn parse_size(s: &str) -> Result<(u32, u32), ApiError> {
    let bad = |why: &str| ApiError::bad_field("size", format!("size {s:?} {why}"));
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(|| bad("is not WIDTHxHEIGHT"))?;
    let side = |v: &str| v.trim().parse::<u32>().ok();
    let (Some(w), Some(h)) = (side(w), side(h)) else { return Err(bad("is not WIDTHxHEIGHT")) };
    for v in [w, h] {
        if !(64..=2048).contains(&v) || v % 64 != 0 {
            return Err(bad("needs sides that are multiples of 64 from 64 to 2048"));
        }
    }
    Ok((w, h))
}

/// How the images come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    /// The PNG in the answer, base64 (the default here: nothing to fetch afterwards).
    B64Json,
    /// A URL on the endpoint that serves the PNG for a limited time.
    Url,
}

/// A `POST /v1/images/generations` body, read.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagesAsk {
    pub model: Option<String>,
    pub request: ImageRequest,
    pub format: ResponseFormat,
}

/// Reads OpenAI's images request (`model`, `prompt`, `n`, `size`, `response_format`) and the
/// app's extras (`negative_prompt`, `steps`, `cfg_scale`, `seed`, `sampler`). Fields OpenAI has
/// and sd.cpp does not (`quality`, `style`, `user`, …) are accepted and ignored; a field of the
/// wrong type or out of range is a 400 naming it.
pub fn parse_images(body: &Value) -> Result<ImagesAsk, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::not_json("not an object"))?;
    let model = opt_str(obj, "model")?.map(str::to_owned);
    let prompt = opt_str(obj, "prompt")?.unwrap_or_default();
    if prompt.trim().is_empty() {
        return Err(ApiError::missing("prompt"));
    }
    let n = opt_uint(obj, "n")?.unwrap_or(1);
    if !(1..=u64::from(MAX_IMAGES)).contains(&n) {
        return Err(ApiError::bad_field("n", format!("n must be 1 to {MAX_IMAGES}, not {n}")));
    }
    let (width, height) = match opt_str(obj, "size")? {
        None | Some("auto") => (None, None),
        Some(s) => {
            let (w, h) = parse_size(s)?;
            (Some(w), Some(h))
        }
    };
    let format = match opt_str(obj, "response_format")? {
        None | Some("b64_json") => ResponseFormat::B64Json,
        Some("url") => ResponseFormat::Url,
        Some(other) => {
            return Err(ApiError::bad_field(
                "response_format",
                format!("response_format must be \"b64_json\" or \"url\", not {other:?}"),
            ))
        }
    };
    let steps = opt_uint(obj, "steps")?;
    if let Some(s) = steps.filter(|s| !(1..=150).contains(s)) {
        return Err(ApiError::bad_field("steps", format!("steps must be 1 to 150, not {s}")));
    }
    let cfg_scale = match obj.get("cfg_scale") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64().filter(|x| (0.0..=30.0).contains(x)) {
            Some(x) => Some(x as f32),
            None => return Err(ApiError::bad_field("cfg_scale", "cfg_scale must be 0 to 30")),
        },
    };
    let seed = match obj.get("seed") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(s) => Some(s),
            None => return Err(ApiError::bad_field("seed", "seed must be a whole number")),
        },
    };
    let request = ImageRequest {
        prompt: prompt.to_owned(),
        negative_prompt: opt_str(obj, "negative_prompt")?.map(str::to_owned),
        width,
        height,
        steps: steps.map(|s| s as u32),
        cfg_scale,
        seed,
        sampler: opt_str(obj, "sampler")?.map(str::to_owned),
        count: Some(n as u32),
        usage_mode: None,
    };
    Ok(ImagesAsk { model, request, format })
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad_field(key, format!("`{key}` must be a string"))),
    }
}

fn opt_uint(obj: &Map<String, Value>, key: &str) -> Result<Option<u64>, ApiError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_field(key, format!("`{key}` must be a whole number"))),
    }
}

/// One made image as the answer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageData {
    B64(String),
    Url(String),
}

/// The `POST /v1/images/generations` answer: OpenAI's `created` and `data`, and per image the
/// seed it was made with (an extra; clients ignore it).
pub fn images_answer(created_s: u64, images: &[(ImageData, i64)]) -> Value {
    let data: Vec<Value> = images
        .iter()
        .map(|(d, seed)| match d {
            ImageData::B64(b) => json!({"b64_json": b, "seed": seed}),
            ImageData::Url(u) => json!({"url": u, "seed": seed}),
        })
        .collect();
    json!({"created": created_s, "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, name: &str, kind: ModelKind) -> ModelInfo {
        ModelInfo {
            downloaded_at_ms: 1_765_000_000_000,
            ..ModelInfo::local_file(id, name, kind, &format!("/m/{id}.gguf"), 1)
        }
    }

    fn installed() -> Vec<ModelInfo> {
        vec![
            model("sdxl", "SDXL Turbo", ModelKind::Diffusion),
            model("qwen3-4b", "Qwen3 4B", ModelKind::Llm),
            model("llama-3b", "Llama 3.2 3B", ModelKind::Llm),
        ]
    }

    #[test]
    fn errors_have_openai_s_shape_and_name_the_field() {
        let e = ApiError::bad_field("size", "size \"12x12\" needs sides that are multiples of 64");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.body(),
            json!({"error": {
                "message": "size \"12x12\" needs sides that are multiples of 64",
                "type": "invalid_request_error",
                "param": "size",
                "code": "invalid_value",
            }})
        );
        let e = ApiError::busy("the LLM is paused for an image", 5);
        assert_eq!(
            (e.status, e.retry_after, e.body()["error"]["param"].clone()),
            (503, Some(5), Value::Null)
        );
        assert_eq!(ApiError::too_large(1 << 20).status, 413);
        assert_eq!(
            ApiError::missing("prompt").body()["error"]["code"],
            "missing_required_parameter"
        );
    }

    #[test]
    fn the_model_list_has_every_model_with_its_kind_and_whether_it_is_loaded() {
        let list = model_list(&installed(), &["llama-3b"]);
        assert_eq!(list["object"], "list");
        let rows: Vec<(String, String, bool)> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(
                    (m["object"].as_str(), m["created"].as_u64()),
                    (Some("model"), Some(1_765_000_000))
                );
                (
                    m["id"].as_str().unwrap().to_owned(),
                    m["kind"].as_str().unwrap().to_owned(),
                    m["loaded"].as_bool().unwrap(),
                )
            })
            .collect();
        let row = |id: &str, kind: &str, loaded| (id.to_owned(), kind.to_owned(), loaded);
        assert_eq!(
            rows,
            [
                row("qwen3-4b", "text", false),
                row("llama-3b", "text", true),
                row("sdxl", "image", false)
            ]
        );
    }

    #[test]
    fn a_request_s_model_is_found_by_id_or_name_and_of_the_right_kind() {
        let ms = installed();
        let chat = "/v1/chat/completions";
        let found = |name: Option<&str>, kind, loaded: &[&str]| {
            resolve(name, &ms, kind, loaded, chat)
                .map(|m| m.id.clone())
                .map_err(|e| (e.status, e.message))
        };
        type Case<'a> =
            (Option<&'a str>, ModelKind, &'a [&'a str], Result<&'a str, (u16, &'a str)>);
        let cases: &[Case] = &[
            (Some("qwen3-4b"), ModelKind::Llm, &[], Ok("qwen3-4b")),
            (Some("QWEN3 4b"), ModelKind::Llm, &[], Ok("qwen3-4b")),
            (
                Some("gpt-4o"),
                ModelKind::Llm,
                &[],
                Err((404, "the model `gpt-4o` does not exist here; installed text models: qwen3-4b, llama-3b")),
            ),
            (
                Some("sdxl"),
                ModelKind::Llm,
                &[],
                Err((400, "`sdxl` is an image model; /v1/chat/completions does not serve it (use /v1/images/generations)")),
            ),
            // No model named: the only one of its kind, else the loaded one.
            (None, ModelKind::Diffusion, &[], Ok("sdxl")),
            (None, ModelKind::Llm, &["llama-3b"], Ok("llama-3b")),
            (None, ModelKind::Llm, &[], Err((400, "`model` is required"))),
        ];
        for (name, kind, loaded, want) in cases {
            let want = (*want).map(str::to_owned).map_err(|(s, m)| (s, m.to_owned()));
            assert_eq!(found(*name, *kind, loaded), want, "{name:?} {kind:?}");
        }
        let none = resolve(Some("x"), &[], ModelKind::Diffusion, &[], "/v1/images/generations");
        assert!(none
            .unwrap_err()
            .message
            .ends_with("no image model is installed; download one in the Models tab"));
    }

    #[test]
    fn sizes_are_width_x_height_in_steps_of_64() {
        let cases: &[(&str, Option<(u32, u32)>)] = &[
            ("512x512", Some((512, 512))),
            ("1024X768", Some((1024, 768))),
            ("64x2048", Some((64, 2048))),
            ("500x500", None),
            ("0x512", None),
            ("4096x512", None),
            ("512", None),
            ("axb", None),
            ("", None),
        ];
        for (s, want) in cases {
            let got = parse_size(s);
            assert_eq!(got.as_ref().ok().copied(), *want, "{s:?}");
            if let Err(e) = got {
                assert_eq!((e.status, e.param.as_deref()), (400, Some("size")), "{s:?}");
            }
        }
    }

    #[test]
    fn an_images_request_reads_openai_s_fields_and_the_app_s_extras() {
        let ask = parse_images(&json!({
            "model": "sdxl", "prompt": "a lighthouse", "n": 2, "size": "768x512",
            "response_format": "url", "quality": "hd", "style": "vivid", "user": "me",
            "negative_prompt": "fog", "steps": 4, "cfg_scale": 1.5, "seed": 42, "sampler": "euler",
        }))
        .unwrap();
        assert_eq!(ask.model.as_deref(), Some("sdxl"));
        assert_eq!(ask.format, ResponseFormat::Url);
        let r = ask.request;
        assert_eq!(
            (r.prompt.as_str(), r.count, r.width, r.height),
            ("a lighthouse", Some(2), Some(768), Some(512))
        );
        assert_eq!(
            (r.negative_prompt.as_deref(), r.steps, r.cfg_scale, r.seed),
            (Some("fog"), Some(4), Some(1.5), Some(42))
        );
        assert_eq!(r.sampler.as_deref(), Some("euler"));

        // The least a client sends: one image, the model's own size, base64 back.
        let ask = parse_images(&json!({"prompt": "a cat"})).unwrap();
        assert_eq!((ask.model, ask.format), (None, ResponseFormat::B64Json));
        assert_eq!(
            (ask.request.count, ask.request.width, ask.request.steps),
            (Some(1), None, None)
        );
        assert_eq!(
            parse_images(&json!({"prompt": "a cat", "size": "auto"})).unwrap().request.width,
            None
        );
    }

    #[test]
    fn a_bad_images_request_names_its_field() {
        let cases: &[(Value, u16, Option<&str>)] = &[
            (json!({}), 400, Some("prompt")),
            (json!({"prompt": "   "}), 400, Some("prompt")),
            (json!({"prompt": 7}), 400, Some("prompt")),
            (json!({"prompt": "x", "n": 0}), 400, Some("n")),
            (json!({"prompt": "x", "n": 6}), 400, Some("n")),
            (json!({"prompt": "x", "n": "two"}), 400, Some("n")),
            (json!({"prompt": "x", "size": "100x100"}), 400, Some("size")),
            (json!({"prompt": "x", "response_format": "png"}), 400, Some("response_format")),
            (json!({"prompt": "x", "steps": 0}), 400, Some("steps")),
            (json!({"prompt": "x", "steps": 151}), 400, Some("steps")),
            (json!({"prompt": "x", "cfg_scale": 31}), 400, Some("cfg_scale")),
            (json!({"prompt": "x", "seed": 1.5}), 400, Some("seed")),
            (json!({"prompt": "x", "model": 3}), 400, Some("model")),
            (json!(["prompt"]), 400, None),
        ];
        for (body, status, param) in cases {
            let e = parse_images(body).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (*status, *param), "{body}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn the_images_answer_has_created_and_one_entry_per_image() {
        let a = images_answer(
            1_765_000_000,
            &[
                (ImageData::B64("iVBOR".into()), 7),
                (ImageData::Url("http://127.0.0.1:8090/v1/files/a.png".into()), 8),
            ],
        );
        assert_eq!(
            a,
            json!({"created": 1_765_000_000u64, "data": [
                {"b64_json": "iVBOR", "seed": 7},
                {"url": "http://127.0.0.1:8090/v1/files/a.png", "seed": 8},
            ]})
        );
    }
}
