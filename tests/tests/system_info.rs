//! The System Info tab shows this machine as the operating system reports it.

use e2e::{live_group_members, App};
use std::process::Command;

fn nproc() -> u32 {
    let out = Command::new("nproc").output().expect("nproc");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("nproc prints a number")
}

fn mem_total_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kib * 1024
}

/// Whether the OS shows any GPU: a DRM card or an NVIDIA device node.
fn machine_has_gpu() -> bool {
    let drm_card = std::fs::read_dir("/sys/class/drm")
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.strip_prefix("card").is_some_and(|r| r.chars().all(|c| c.is_ascii_digit()))
            })
        })
        .unwrap_or(false);
    drm_card || std::path::Path::new("/dev/nvidia0").exists()
}

#[tokio::test]
#[ignore = "real window: run scripts/test"]
async fn system_tab_shows_this_machine() {
    let app = App::launch().await;

    // System Info is the first tab: it detects on its own, no click needed.
    let cores = app.wait_visible("#cpu-cores").await;
    let logical = cores.attr("data-logical").await.unwrap().unwrap();
    assert_eq!(logical.parse::<u32>().unwrap(), nproc(), "logical cores vs nproc");
    let cores_text = cores.text().await.unwrap();
    assert!(cores_text.contains(&format!("{} logical", nproc())), "{cores_text}");

    let total = mem_total_bytes();
    let mem = app.wait_visible("#mem-total").await;
    assert_eq!(mem.attr("data-bytes").await.unwrap().unwrap(), total.to_string());
    assert_eq!(mem.text().await.unwrap(), ipc::format::bytes(total));
    let avail = app.wait_visible("#mem-available").await;
    let avail: u64 = avail.attr("data-bytes").await.unwrap().unwrap().parse().unwrap();
    assert!(avail > 0 && avail <= total, "available {avail} of {total}");

    if machine_has_gpu() {
        app.wait_visible(".gpu-card").await;
    } else {
        let none = app.wait_visible("#no-gpu").await;
        assert_eq!(none.text().await.unwrap(), "No GPU detected — models will run on the CPU.");
        assert_eq!(app.wait_text("#rec-backend", |t| !t.is_empty()).await, "CPU");
    }
    let threads = app.wait_text("#rec-threads", |t| !t.is_empty()).await;
    let threads: u32 = threads.parse().unwrap();
    assert!((1..=nproc()).contains(&threads), "recommended threads {threads}");
    let ram_fit = app.wait_text("#rec-ram-fit", |t| !t.is_empty()).await;
    assert!(ram_fit.contains("at Q4_K_M"), "{ram_fit}");

    // Refresh asks again and the figures stay on screen.
    app.click("#system-refresh").await;
    app.wait_visible("#mem-total").await;
    app.screenshot("system-info").await;

    let group = app.finish().await;
    let left = live_group_members(group);
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
