use super::ModelsState;
use leptos::prelude::*;

/// llama.cpp's `general.file_type` values people see most.
fn file_type_name(t: u64) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        38 => "MXFP4",
        _ => return format!("type {t}"),
    };
    name.to_owned()
}

fn opt(v: Option<u64>) -> String {
    v.map(|n| n.to_string()).unwrap_or_else(|| "—".into())
}

#[component]
pub fn GgufModal() -> impl IntoView {
    let state = expect_context::<ModelsState>();
    move || {
        state.info.get().map(|m| {
            let g = m.gguf.clone().unwrap_or_default();
            view! {
                <div class="modal-backdrop" on:click=move |_| state.info.set(None)>
                    <div id="gguf-modal" class="modal" role="dialog" aria-label="GGUF details"
                        on:click=|ev| ev.stop_propagation()>
                        <h3 class="card-title">{format!("GGUF details — {}", m.name)}</h3>
                        <dl class="stats">
                            <dt>"Architecture"</dt><dd id="gguf-arch">{g.architecture.clone().unwrap_or_else(|| "—".into())}</dd>
                            <dt>"Layers"</dt><dd id="gguf-layers">{opt(g.block_count)}</dd>
                            <dt>"Context length"</dt><dd id="gguf-context">{opt(g.context_length)}</dd>
                            <dt>"File type"</dt><dd>{g.file_type.map(file_type_name).unwrap_or_else(|| "—".into())}</dd>
                        </dl>
                        <details>
                            <summary>"Advanced"</summary>
                            <dl class="stats">
                                <dt>"Name"</dt><dd>{g.name.clone().unwrap_or_else(|| "—".into())}</dd>
                                <dt>"GGUF version"</dt><dd>{g.version}</dd>
                                <dt>"Tensors"</dt><dd>{g.tensor_count}</dd>
                                <dt>"Metadata keys"</dt><dd>{g.kv_count}</dd>
                                <dt>"Embedding length"</dt><dd>{opt(g.embedding_length)}</dd>
                                <dt>"Feed-forward length"</dt><dd>{opt(g.feed_forward_length)}</dd>
                                <dt>"Attention heads"</dt><dd>{opt(g.head_count)}</dd>
                                <dt>"KV heads"</dt><dd>{opt(g.head_count_kv)}</dd>
                                <dt>"Experts"</dt><dd>{opt(g.expert_count)}</dd>
                                <dt>"SHA-256"</dt><dd class="mono">{m.sha256.clone().unwrap_or_else(|| "—".into())}</dd>
                            </dl>
                        </details>
                        <details>
                            <summary>"Raw metadata"</summary>
                            <table class="table raw">
                                {g.raw.iter().map(|(k, v)| view! { <tr><td class="mono">{k.clone()}</td><td class="mono">{v.clone()}</td></tr> }).collect_view()}
                            </table>
                        </details>
                        <div class="toolbar">
                            <button id="gguf-close" class="btn" on:click=move |_| state.info.set(None)>"Close"</button>
                        </div>
                    </div>
                </div>
            }
        })
    }
}
