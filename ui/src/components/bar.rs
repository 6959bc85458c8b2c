use leptos::prelude::*;

/// The bar both kinds share: a track, a fill `pct` wide, and a caption.
fn bar(pct: f64, fill_class: &'static str, role: &'static str, label: String) -> impl IntoView {
    let pct = pct.clamp(0.0, 100.0);
    view! {
        <div class="bar" role=role aria-valuemin="0" aria-valuemax="100"
            aria-valuenow=format!("{pct:.0}") aria-label=label.clone()>
            <div class=fill_class style:width=format!("{pct:.1}%")></div>
        </div>
        <div class="bar-caption">{label}</div>
    }
}

/// How full something is (memory, VRAM): `used` of `total`, amber from 70%, red from 90%.
#[component]
pub fn UsageBar(used: u64, total: u64, #[prop(into)] label: String) -> impl IntoView {
    let pct = ipc::format::percent(used, total);
    let class = match pct {
        p if p >= 90.0 => "bar-fill high",
        p if p >= 70.0 => "bar-fill mid",
        _ => "bar-fill",
    };
    bar(pct, class, "meter", label)
}

/// Progress of a task: accent while running, green when complete.
#[component]
pub fn ProgressBar(percent: f64, #[prop(into)] label: String) -> impl IntoView {
    let class = if percent >= 100.0 { "progress-fill done" } else { "progress-fill" };
    bar(percent, class, "progressbar", label)
}
