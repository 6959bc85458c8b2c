//! Running sd-cli for the images of one job: one process per image (seeds seed, seed+1, …),
//! progress from its output, cancel that ends the process group at once, the PNG read back and
//! its temporary file removed.

use super::args::{build_args, SdImage};
use super::progress::{Snapshot, Tracker};
use crate::process;
use crate::{Result, RuntimeError};
use ipc::ErrorCode;
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
        let mut child = process::Supervised::spawn(exe, build_args(&image))?;
        on_progress(tracker.snapshot());
        let info = loop {
            tokio::select! {
                ev = child.next() => match ev {
                    process::Event::Line(_, l) => {
                        on_line(&l);
                        if tracker.feed(&l) {
                            on_progress(tracker.snapshot());
                        }
                    }
                    process::Event::Exited(info) => break info,
                },
                changed = cancel.changed() => {
                    if changed.is_err() || *cancel.borrow() {
                        child.kill().await?;
                        let _ = tokio::fs::remove_file(&out).await;
                        return Err(RuntimeError::Cancelled);
                    }
                }
            }
        };
        if !info.success() {
            let _ = tokio::fs::remove_file(&out).await;
            let program = process::Program::SdCli;
            let code = process::classify_failure(&child.tail().lines(), Some(info), program);
            let during = format!("on image {} of {count}", i + 1);
            return Err(RuntimeError::ServerFailed {
                code,
                message: process::failure_message(program, Some(info), &during, child.tail()),
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
