//! How much one `memory_now` call costs (the UI polls it), against sysinfo's memory refresh,
//! the usual way Rust apps read memory, run side by side in this process.
//!
//! cargo bench -p runtime --bench memory_now

use runtime::system::SystemProbe;
use std::hint::black_box;
use std::time::{Duration, Instant};

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f(); // warm caches and the static facts
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let n = 20_000;
    let probe = SystemProbe::real();
    let ours = per_call(n, || {
        black_box(probe.memory_now().expect("memory_now"));
    });
    let mut sys = sysinfo::System::new().expect("sysinfo");
    let baseline = per_call(n, || {
        sys.refresh_memory();
        black_box(sys.available_memory());
    });
    let now = probe.memory_now().unwrap();
    println!(
        "memory_now: {:.1} µs per call ({n} calls; {} GPU(s) polled)",
        ours.as_secs_f64() * 1e6,
        now.gpus.len()
    );
    println!("sysinfo refresh_memory (baseline): {:.1} µs per call", baseline.as_secs_f64() * 1e6);
    println!("ratio memory_now / baseline: {:.2}", ours.as_secs_f64() / baseline.as_secs_f64());
    println!(
        "budget 1 ms per call: {}",
        if ours < Duration::from_millis(1) { "within" } else { "EXCEEDED" }
    );
}
