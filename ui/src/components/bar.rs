use leptos::prelude::*;

/// The bar both kinds share: a track, a fill `pct` wide, and a caption. Reactive: a new figure
/// changes the fill's width and the caption's text in place (no element is made again, and no
/// transition animates it: each animated frame is a repaint, which is what an idle window costs).
fn bar(
    pct: Signal<f64>,
    fill_class: Signal<&'static str>,
    role: &'static str,
    label: Signal<String>,
) -> impl IntoView {
    let pct = move || pct.get().clamp(0.0, 100.0);
    view! {
        <div class="bar" role=role aria-valuemin="0" aria-valuemax="100"
            aria-valuenow=move || format!("{:.0}", pct()) aria-label=move || label.get()>
            <div class=move || fill_class.get() style:width=move || format!("{:.1}%", pct())></div>
        </div>
        <div class="bar-caption">{move || label.get()}</div>
    }
}

/// How full something is (memory, VRAM): `used` of `total`, amber from 70%, red from 90%.
#[component]
pub fn UsageBar(
    #[prop(into)] used: Signal<u64>,
    #[prop(into)] total: Signal<u64>,
    #[prop(into)] label: Signal<String>,
) -> impl IntoView {
    let pct = Signal::derive(move || ipc::format::percent(used.get(), total.get()));
    let class = Signal::derive(move || match pct.get() {
        p if p >= 90.0 => "bar-fill high",
        p if p >= 70.0 => "bar-fill mid",
        _ => "bar-fill",
    });
    bar(pct, class, "meter", label)
}

/// Progress of a task: accent while running, green when complete.
#[component]
pub fn ProgressBar(percent: f64, #[prop(into)] label: String) -> impl IntoView {
    let class = if percent >= 100.0 { "progress-fill done" } else { "progress-fill" };
    bar(Signal::stored(percent), Signal::stored(class), "progressbar", Signal::stored(label))
}
