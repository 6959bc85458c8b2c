//! Running sd-cli for the images of one job: one process per image (seeds seed, seed+1, …),
//! progress from its output, cancel that ends the process group at once, the PNG read back and
//! its temporary file removed.

use super::args::{build_args, SdImage};
use super::progress::{Snapshot, Tracker};
use crate::process;
use crate::{Result, RuntimeError};
use ipc::ErrorCode;
use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One finished image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageOut {
    pub png: Vec<u8>,
    pub seed: i64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone)]
pub struct JobOut {
    pub images: Vec<ImageOut>,
    pub time_taken: Duration,
}

/// Runs `count` images of `base` (seed + i each) with `exe`, writing outputs in `temp_dir`.
/// `cancel` set to true ends the running sd-cli at once and answers [`RuntimeError::Cancelled`].
pub async fn run(
    exe: &Path,
    base: &SdImage,
    count: u32,
    temp_dir: &Path,
    mut cancel: watch::Receiver<bool>,
    mut on_progress: impl FnMut(Snapshot),
    mut on_line: impl FnMut(&str),
) -> Result<JobOut> {
    super::args::validate(base)?;
    let started = Instant::now();
    let count = count.max(1);
    let mut tracker = Tracker::new(base.steps, count);
    let mut images = Vec::new();
    tokio::fs::create_dir_all(temp_dir)
        .await
        .map_err(|e| RuntimeError::io("creating folder", temp_dir, e))?;
    for i in 0..count {
        if *cancel.borrow() {
            return Err(RuntimeError::Cancelled);
        }
        if i > 0 {
            tracker.next_image();
        }
        let out = temp_dir.join(format!("sd-{}-{}-{i}.png", std::process::id(), crate::now_ms()));
        let image = SdImage {
            seed: base.seed.wrapping_add(i as i64),
            output: out.display().to_string(),
            ..base.clone()
        };
        let mut child = process::spawn(process::command(exe, build_args(&image)), exe)?;
        let mut lines = process::lines(&mut child);
        let mut tail: VecDeque<String> = VecDeque::new();
        on_progress(tracker.snapshot());
        let mut open = true;
        let status = loop {
            tokio::select! {
                line = lines.recv(), if open => match line {
                    Some((_, l)) => {
                        on_line(&l);
                        if tracker.feed(&l) {
                            on_progress(tracker.snapshot());
                        }
                        if tail.len() == 20 {
                            tail.pop_front();
                        }
                        tail.push_back(l);
                    }
                    None => open = false,
                },
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        process::terminate(&mut child, Duration::from_millis(200)).await?;
                        let _ = tokio::fs::remove_file(&out).await;
                        return Err(RuntimeError::Cancelled);
                    }
                }
                status = child.wait() => {
                    break status.map_err(|e| RuntimeError::io("waiting for", exe, e))?;
                }
            }
        };
        while let Ok(Some((_, l))) =
            tokio::time::timeout(Duration::from_millis(100), lines.recv()).await
        {
            on_line(&l);
            tracker.feed(&l);
            tail.push_back(l);
        }
        if !status.success() {
            let _ = tokio::fs::remove_file(&out).await;
            let text = tail.iter().cloned().collect::<Vec<_>>().join("\n");
            let code = if crate::binaries::scan::out_of_memory(&text) {
                ErrorCode::InsufficientMemory
            } else {
                ErrorCode::ServerCrashed
            };
            let last: Vec<&String> = tail.iter().rev().take(3).collect();
            return Err(RuntimeError::ServerFailed {
                code,
                message: format!(
                    "sd-cli {status} on image {} of {count}: {}",
                    i + 1,
                    last.into_iter().rev().map(String::as_str).collect::<Vec<_>>().join(" | ")
                ),
            });
        }
        let png = tokio::fs::read(&out).await.map_err(|e| RuntimeError::io("reading", &out, e))?;
        let _ = tokio::fs::remove_file(&out).await;
        if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
            return Err(RuntimeError::ServerFailed {
                code: ErrorCode::ServerCrashed,
                message: format!("sd-cli wrote {} bytes that are not a PNG", png.len()),
            });
        }
        images.push(ImageOut { png, seed: image.seed, width: image.width, height: image.height });
    }
    Ok(JobOut { images, time_taken: started.elapsed() })
}
