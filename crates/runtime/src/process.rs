//! Child processes the app starts (runtime checks now, servers and image jobs later).
//!
//! Every child runs in its own process group with stdin closed, so one signal stops it and
//! anything it started, and a check can never hang waiting for input. Output is read line by
//! line, splitting on `\n` and on `\r` (sd-cli redraws its progress bar with carriage returns).

use crate::{Result, RuntimeError};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The most of one line kept; longer lines are cut (a binary spewing without newlines).
const MAX_LINE: usize = 8 << 10;

/// A command with the conventions above: own process group, stdin closed, output piped, killed
/// if its handle is dropped.
pub fn command(program: &Path, args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

pub fn spawn(mut cmd: Command, program: &Path) -> Result<Child> {
    cmd.spawn().map_err(|e| RuntimeError::io("starting", program, e))
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Takes the child's stdout and stderr and sends their lines, as they come, on one channel. The
/// channel closes when both streams end.
pub fn lines(child: &mut Child) -> mpsc::UnboundedReceiver<(Stream, String)> {
    let (tx, rx) = mpsc::unbounded_channel();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, Stream::Stdout, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, Stream::Stderr, tx));
    }
    rx
}

/// Splits a byte stream into lines on `\n` and on `\r` (progress bars redraw with `\r`),
/// trimming the end of each and dropping empty ones; a line over `MAX_LINE` bytes is cut.
#[derive(Debug, Default)]
pub struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8], mut out: impl FnMut(String)) {
        for &b in bytes {
            if b == b'\n' || b == b'\r' {
                self.flush(&mut out);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    /// The last line, when the stream ended without a line break.
    pub fn finish(&mut self, mut out: impl FnMut(String)) {
        self.flush(&mut out);
    }

    fn flush(&mut self, out: &mut impl FnMut(String)) {
        let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        self.line.clear();
        if !text.is_empty() {
            out(text);
        }
    }
}

async fn read_lines(
    mut r: impl AsyncRead + Unpin,
    stream: Stream,
    tx: mpsc::UnboundedSender<(Stream, String)>,
) {
    let mut buf = [0u8; 8192];
    let mut split = LineSplitter::default();
    let send = |text: String| {
        let _ = tx.send((stream, text));
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        split.push(&buf[..n], send);
    }
    split.finish(send);
}

/// Asks the child's process group to stop (SIGTERM), and kills it (SIGKILL) if it has not
/// exited after `grace`. Returns how it ended.
pub async fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        signal_group(child, Signal::Kill); // leftovers of the group, if any
        return Ok(status);
    }
    signal_group(child, Signal::Term);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        signal_group(child, Signal::Kill);
        return Ok(status);
    }
    signal_group(child, Signal::Kill);
    let _ = child.start_kill();
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        _ => Err(RuntimeError::Internal(format!(
            "process {} did not exit after SIGKILL",
            child.id().unwrap_or(0)
        ))),
    }
}

#[derive(Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

fn signal_group(child: &Child, signal: Signal) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let sig = match signal {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) with a negative pid signals that process group; the group is the
        // child's own (process_group(0)), so nothing else is hit.
        unsafe {
            libc::kill(-(pid as i32), sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (child, signal);
}

/// Whether a process is still running; a zombie waiting to be reaped counts as gone (the
/// container's init may never reap an orphan).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// What a short-lived command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None` when it was stopped for running past the timeout.
    pub status: Option<ExitStatus>,
    /// stdout and stderr lines, interleaved as they came.
    pub lines: Vec<String>,
}

impl Output {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `program args` to the end, or stops it after `timeout`.
pub async fn run(
    program: &Path,
    args: &[&str],
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Output> {
    let mut child = spawn(command(program, args), program)?;
    let mut rx = lines(&mut child);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, line))) => {
                on_line(&line);
                out.push(line);
            }
            Ok(None) => break,
            Err(_) => {
                terminate(&mut child, Duration::from_secs(1)).await?;
                return Ok(Output { status: None, lines: out });
            }
        }
    }
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => return Err(RuntimeError::io("waiting for", program, e)),
        Err(_) => {
            terminate(&mut child, Duration::from_secs(1)).await?;
            None
        }
    };
    Ok(Output { status, lines: out })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_on_carriage_returns_and_times_out() {
        let sh = Path::new("/bin/sh");
        let out =
            run(sh, &["-c", "printf 'a\\rb\\nc'; echo err >&2"], Duration::from_secs(5), |_| {})
                .await
                .unwrap();
        assert!(out.success());
        let mut lines = out.lines.clone();
        lines.sort();
        assert_eq!(lines, ["a", "b", "c", "err"]);

        let started = std::time::Instant::now();
        let out = run(sh, &["-c", "sleep 30"], Duration::from_millis(300), |_| {}).await.unwrap();
        assert!(out.status.is_none(), "stopped, not finished");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        // `cat` with an open stdin would wait forever.
        let out = run(Path::new("/bin/cat"), &[], Duration::from_secs(5), |_| {}).await.unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn terminate_takes_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("genai-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let mut child =
            spawn(command(Path::new("/bin/sh"), ["-c", &script]), Path::new("sh")).unwrap();
        let mut waited = 0;
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
            assert!(waited < 250, "grandchild never started");
        }
        let grandchild: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        terminate(&mut child, Duration::from_secs(2)).await.unwrap();
        let mut gone = false;
        for _ in 0..100 {
            if !is_running(grandchild as u32) {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the grandchild outlived the stop");
        let _ = std::fs::remove_dir_all(dir);
    }
}
