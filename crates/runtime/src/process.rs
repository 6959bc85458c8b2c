//! Child processes the app starts: llama-server, sd-cli image runs and the runtime checks.
//!
//! [`Supervised`] is the one core they share. Every child runs in its own process group with
//! stdin closed, so one signal stops it and anything it started, and it can never hang waiting for
//! input. Output is read line by line, splitting on `\n` and on `\r` (sd-cli redraws its progress
//! bar with carriage returns), through a bounded queue; the last lines stay in a ring ([`Tail`]);
//! the lines printed on the way out are drained after the exit; a readiness probe is raced
//! against the exit, a stop request and a deadline ([`Supervised::wait_ready`]). Why a child
//! failed is decided by the pure [`classify_failure`] from its tail and exit.

mod failure;
pub mod pidfile;

pub use failure::{classify_failure, failure_message, Program};

use crate::{Result, RuntimeError};
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The most of one line kept; longer lines are cut (a binary spewing without newlines).
const MAX_LINE: usize = 8 << 10;
/// Lines read but not yet taken; a reader waits (and so does the child's pipe) when it is full.
pub const LINE_QUEUE: usize = 1024;
/// Lines kept for an error message or a crash report.
pub const TAIL_LINES: usize = 20;
/// How long lines printed on the way out are still collected after the exit.
const DRAIN: Duration = Duration::from_millis(200);

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

/// Starts `cmd`. A program written a moment ago can be "busy" (ETXTBSY) while a child that
/// another thread is forking still holds a copy of the writing descriptor, until that child's own
/// exec closes it; the start is then tried again for up to about half a second rather than the
/// fresh runtime build being called broken.
pub fn spawn(mut cmd: Command, program: &Path) -> Result<Child> {
    let mut tries = 0u64;
    loop {
        match cmd.spawn() {
            Err(e) if is_text_busy(&e) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10 * tries));
            }
            r => return r.map_err(|e| RuntimeError::io("starting", program, e)),
        }
    }
}

fn is_text_busy(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::ETXTBSY);
    #[cfg(not(unix))]
    return false;
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// Takes the child's stdout and stderr and sends their lines, as they come, on one bounded
/// channel. The channel closes when both streams end.
pub fn lines(child: &mut Child) -> mpsc::Receiver<(Stream, String)> {
    let (tx, rx) = mpsc::channel(LINE_QUEUE);
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
    tx: mpsc::Sender<(Stream, String)>,
) {
    let mut buf = [0u8; 8192];
    let mut split = LineSplitter::default();
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut batch = Vec::new();
        split.push(&buf[..n], |l| batch.push(l));
        for l in batch {
            if tx.send((stream, l)).await.is_err() {
                return; // nobody listens any more
            }
        }
    }
    let mut last = None;
    split.finish(|l| last = Some(l));
    if let Some(l) = last {
        let _ = tx.send((stream, l)).await;
    }
}

/// The last lines a child printed.
#[derive(Debug, Clone)]
pub struct Tail {
    lines: VecDeque<String>,
    cap: usize,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Self { lines: VecDeque::with_capacity(cap), cap: cap.max(1) }
    }

    pub fn push(&mut self, line: &str) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_owned());
    }

    /// Every line kept, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// The last `n` lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(n)).cloned().collect()
    }

    /// The last `n` lines on one line (`a | b | c`), or "no output".
    pub fn joined(&self, n: usize) -> String {
        let t = self.last(n).join(" | ");
        if t.is_empty() {
            "no output".to_owned()
        } else {
            t
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl ExitInfo {
    pub fn from_status(status: Option<ExitStatus>) -> Self {
        #[cfg(unix)]
        let signal = {
            use std::os::unix::process::ExitStatusExt;
            status.and_then(|s| s.signal())
        };
        #[cfg(not(unix))]
        let signal = None;
        Self { code: status.and_then(|s| s.code()), signal }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }

    /// "exited with code 1", "was killed by signal 9 (SIGKILL)", …
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (_, Some(s)) => match signal_name(s) {
                Some(name) => format!("was killed by signal {s} ({name})"),
                None => format!("was killed by signal {s}"),
            },
            (Some(c), _) => format!("exited with code {c}"),
            _ => "exited".to_owned(),
        }
    }
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(s)) => write!(f, "signal {s}"),
            (Some(c), _) => write!(f, "exit code {c}"),
            _ => write!(f, "an unknown status"),
        }
    }
}

fn signal_name(s: i32) -> Option<&'static str> {
    Some(match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// What a supervised child did next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Line(Stream, String),
    /// It exited; the lines it printed on the way out came before this. Every later call
    /// answers the same.
    Exited(ExitInfo),
}

/// What a line tells [`Supervised::wait_ready`].
#[derive(Debug)]
pub enum Flow<E> {
    Continue,
    /// Probe now rather than at the next poll (the log says it listens).
    ProbeNow,
    /// Stop waiting with this reason (a GPU error line).
    Stop(E),
}

/// How [`Supervised::wait_ready`] ended. The child is still running unless `Exited`.
#[derive(Debug)]
pub enum Ready<E> {
    Ready,
    Exited(ExitInfo),
    /// The deadline passed.
    TimedOut,
    /// `on_line` or the stop future asked to stop waiting.
    Stopped(E),
}

/// When a load counts as stuck: the log quiet for `quiet`, or `max` since the spawn, whichever
/// comes first.
#[derive(Debug, Clone, Copy)]
pub struct LoadDeadline {
    pub quiet: Duration,
    pub max: Duration,
}

impl LoadDeadline {
    /// A fixed time from the spawn, log or not.
    pub fn fixed(d: Duration) -> Self {
        Self { quiet: d, max: d }
    }

    pub fn at(&self, spawned: Instant, last_line: Instant) -> Instant {
        (last_line.max(spawned) + self.quiet).min(spawned + self.max)
    }
}

/// A running child under the conventions above; dropping it kills its process group.
pub struct Supervised {
    child: Child,
    program: PathBuf,
    pid: u32,
    lines: mpsc::Receiver<(Stream, String)>,
    open: bool,
    tail: Tail,
    exited: Option<ExitInfo>,
    drain_until: Option<tokio::time::Instant>,
    spawned_at: Instant,
    last_line: Instant,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("program", &self.program)
            .field("pid", &self.pid)
            .field("exited", &self.exited)
            .finish_non_exhaustive()
    }
}

impl Supervised {
    pub fn spawn(
        program: &Path,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    ) -> Result<Self> {
        Self::spawn_with_env(program, args, &[])
    }

    /// [`Self::spawn`] with these variables added to the child's environment.
    pub fn spawn_with_env(
        program: &Path,
        args: impl IntoIterator<Item = impl AsRef<OsStr>>,
        env: &[(String, String)],
    ) -> Result<Self> {
        let mut cmd = command(program, args);
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        let mut child = spawn(cmd, program)?;
        let lines = lines(&mut child);
        let now = Instant::now();
        Ok(Self {
            pid: child.id().unwrap_or(0),
            child,
            program: program.to_owned(),
            lines,
            open: true,
            tail: Tail::new(TAIL_LINES),
            exited: None,
            drain_until: None,
            spawned_at: now,
            last_line: now,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn tail(&self) -> &Tail {
        &self.tail
    }

    pub fn spawned_at(&self) -> Instant {
        self.spawned_at
    }

    /// The next line, or the exit once the lines printed on the way out are drained.
    /// Cancel-safe: usable as a `select!` branch.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(info) = self.exited {
                if self.open {
                    let until = *self
                        .drain_until
                        .get_or_insert_with(|| tokio::time::Instant::now() + DRAIN);
                    match tokio::time::timeout_at(until, self.lines.recv()).await {
                        Ok(Some((s, l))) => return self.took(s, l),
                        _ => self.open = false,
                    }
                    continue;
                }
                return Event::Exited(info);
            }
            tokio::select! {
                line = self.lines.recv(), if self.open => match line {
                    Some((s, l)) => return self.took(s, l),
                    None => self.open = false,
                },
                status = self.child.wait() => {
                    self.exited = Some(ExitInfo::from_status(status.ok()));
                    signal_group(self.pid, libc_sig::KILL); // leftovers of the group, if any
                }
            }
        }
    }

    /// The lines already read and not yet taken, without waiting (a long-lived child's output
    /// that belongs to what just ended, before the next request).
    pub fn ready_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok((s, l)) = self.lines.try_recv() {
            if let Event::Line(_, l) = self.took(s, l) {
                out.push(l);
            }
        }
        out
    }

    fn took(&mut self, stream: Stream, line: String) -> Event {
        self.tail.push(&line);
        self.last_line = Instant::now();
        Event::Line(stream, line)
    }

    /// Asks the process group to stop (SIGTERM) and kills it (SIGKILL) if it has not exited
    /// after `grace`. The lines still coming are left for [`Self::next`].
    pub async fn terminate(&mut self, grace: Duration) -> Result<ExitInfo> {
        if let Some(info) = self.exited {
            return Ok(info);
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            return Ok(self.ended(Some(status)));
        }
        signal_group(self.pid, libc_sig::TERM);
        if let Ok(Ok(status)) = tokio::time::timeout(grace, self.child.wait()).await {
            return Ok(self.ended(Some(status)));
        }
        self.kill().await
    }

    /// Kills the process group at once (a hung or stopped process ignores SIGTERM).
    pub async fn kill(&mut self) -> Result<ExitInfo> {
        if let Some(info) = self.exited {
            return Ok(info);
        }
        signal_group(self.pid, libc_sig::KILL);
        let _ = self.child.start_kill();
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(status)) => Ok(self.ended(Some(status))),
            _ => Err(RuntimeError::Internal(format!(
                "{} (pid {}) did not exit after SIGKILL",
                self.program.display(),
                self.pid
            ))),
        }
    }

    fn ended(&mut self, status: Option<ExitStatus>) -> ExitInfo {
        signal_group(self.pid, libc_sig::KILL);
        let info = ExitInfo::from_status(status);
        self.exited = Some(info);
        info
    }

    /// Reads lines until the child exits (or until the drain after a stop ends).
    pub async fn drain(&mut self, mut on_line: impl FnMut(&str)) -> ExitInfo {
        loop {
            match self.next().await {
                Event::Line(_, l) => on_line(&l),
                Event::Exited(info) => return info,
            }
        }
    }

    /// Waits until `probe` answers true, racing it against the exit, the `stop` future, what
    /// `on_line` says of each line, and `deadline`. Probes start after 100 ms and back off to
    /// one a second; one probe is in flight at a time.
    pub async fn wait_ready<E, P, F>(
        &mut self,
        mut probe: P,
        deadline: LoadDeadline,
        mut on_line: impl FnMut(&str) -> Flow<E>,
        stop: impl Future<Output = E>,
    ) -> Ready<E>
    where
        P: FnMut() -> F,
        F: Future<Output = bool>,
    {
        tokio::pin!(stop);
        let mut delay = Duration::from_millis(100);
        let mut next_probe = tokio::time::Instant::now() + delay;
        let mut in_flight: Option<Pin<Box<F>>> = None;
        loop {
            let until =
                tokio::time::Instant::from_std(deadline.at(self.spawned_at, self.last_line));
            tokio::select! {
                ev = self.next() => match ev {
                    Event::Line(_, l) => match on_line(&l) {
                        Flow::Continue => {}
                        Flow::ProbeNow => next_probe = tokio::time::Instant::now(),
                        Flow::Stop(e) => return Ready::Stopped(e),
                    },
                    Event::Exited(info) => return Ready::Exited(info),
                },
                ok = async { in_flight.as_mut().expect("guarded").as_mut().await }, if in_flight.is_some() => {
                    in_flight = None;
                    if ok {
                        return Ready::Ready;
                    }
                    delay = (delay * 3 / 2).min(Duration::from_secs(1));
                    next_probe = tokio::time::Instant::now() + delay;
                }
                _ = tokio::time::sleep_until(next_probe), if in_flight.is_none() => {
                    in_flight = Some(Box::pin(probe()));
                }
                _ = tokio::time::sleep_until(until) => return Ready::TimedOut,
                e = &mut stop => return Ready::Stopped(e),
            }
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.exited.is_none() {
            signal_group(self.pid, libc_sig::KILL);
        }
    }
}

mod libc_sig {
    #[cfg(unix)]
    pub const TERM: i32 = libc::SIGTERM;
    #[cfg(unix)]
    pub const KILL: i32 = libc::SIGKILL;
    #[cfg(not(unix))]
    pub const TERM: i32 = 15;
    #[cfg(not(unix))]
    pub const KILL: i32 = 9;
}

fn signal_group(pid: u32, sig: i32) {
    #[cfg(unix)]
    if pid > 0 {
        // SAFETY: kill(2) with a negative pid signals that process group; the group is the
        // child's own (process_group(0)), so nothing else is hit.
        unsafe {
            libc::kill(-(pid as i32), sig);
        }
    }
    #[cfg(not(unix))]
    let _ = (pid, sig);
}

/// Stops a child started with [`command`] the same way as [`Supervised::terminate`] (for
/// callers that hold a bare [`Child`], such as the benchmarks' bare baseline).
pub async fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    let pid = child.id().unwrap_or(0);
    if let Ok(Some(status)) = child.try_wait() {
        signal_group(pid, libc_sig::KILL);
        return Ok(status);
    }
    signal_group(pid, libc_sig::TERM);
    if let Ok(Ok(status)) = tokio::time::timeout(grace, child.wait()).await {
        signal_group(pid, libc_sig::KILL);
        return Ok(status);
    }
    signal_group(pid, libc_sig::KILL);
    let _ = child.start_kill();
    match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
        Ok(Ok(status)) => Ok(status),
        _ => Err(RuntimeError::Internal(format!("process {pid} did not exit after SIGKILL"))),
    }
}

/// Whether `path` is a file this user may run.
pub fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Whether a process is still running; a zombie waiting to be reaped counts as gone (the
/// container's init may never reap an orphan), and so does nothing at all.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// What a short-lived command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// `None` when it was stopped for running past the timeout.
    pub status: Option<ExitInfo>,
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
    let mut child = Supervised::spawn(program, args)?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, child.next()).await {
            Ok(Event::Line(_, line)) => {
                on_line(&line);
                out.push(line);
            }
            Ok(Event::Exited(info)) => return Ok(Output { status: Some(info), lines: out }),
            Err(_) => {
                child.kill().await?;
                child.drain(|l| out.push(l.to_owned())).await;
                return Ok(Output { status: None, lines: out });
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn sh() -> &'static Path {
        Path::new("/bin/sh")
    }

    #[tokio::test]
    async fn splits_on_carriage_returns_and_times_out() {
        let out =
            run(sh(), &["-c", "printf 'a\\rb\\nc'; echo err >&2"], Duration::from_secs(5), |_| {})
                .await
                .unwrap();
        assert!(out.success());
        let mut lines = out.lines.clone();
        lines.sort();
        assert_eq!(lines, ["a", "b", "c", "err"]);

        let started = std::time::Instant::now();
        let out = run(sh(), &["-c", "echo before; sleep 30"], Duration::from_millis(300), |_| {})
            .await
            .unwrap();
        assert!(out.status.is_none(), "stopped, not finished");
        assert_eq!(out.lines, ["before"]);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_program_still_open_for_writing_starts_once_it_is_closed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("genai-busy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fresh.sh");
        std::fs::write(&path, "#!/bin/sh\necho started\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // What a fork in another thread does: a writing descriptor still open for a moment.
        let held = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let err = std::process::Command::new(&path).output().unwrap_err();
        assert!(is_text_busy(&err), "the race this guards against: {err}");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            drop(held);
        });
        let out = run(&path, &[], Duration::from_secs(5), |_| {}).await.unwrap();
        assert_eq!(out.lines, ["started"]);
        closer.join().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn stdin_is_closed() {
        // `cat` with an open stdin would wait forever.
        let out = run(Path::new("/bin/cat"), &[], Duration::from_secs(5), |_| {}).await.unwrap();
        assert!(out.success());
    }

    #[tokio::test]
    async fn the_lines_printed_on_the_way_out_come_before_the_exit() {
        let mut child =
            Supervised::spawn(sh(), ["-c", "echo one; echo two >&2; printf three; exit 3"])
                .unwrap();
        let mut got = Vec::new();
        let info = child.drain(|l| got.push(l.to_owned())).await;
        got.sort();
        assert_eq!(got, ["one", "three", "two"]);
        assert_eq!(info, ExitInfo { code: Some(3), signal: None });
        assert_eq!(info.describe(), "exited with code 3");
        assert_eq!(child.tail().lines().len(), 3);
        // Asked again, the same answer.
        assert_eq!(child.next().await, Event::Exited(info));
    }

    #[tokio::test]
    async fn a_flood_of_lines_arrives_whole_and_in_order_through_the_bounded_queue() {
        let n = LINE_QUEUE * 5;
        let script = format!("i=0; while [ $i -lt {n} ]; do echo $i; i=$((i+1)); done");
        let mut child = Supervised::spawn(sh(), ["-c", &script]).unwrap();
        // A slow reader: the child waits on its pipe rather than lines being dropped.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut seen = 0usize;
        let info = child
            .drain(|l| {
                assert_eq!(l, seen.to_string());
                seen += 1;
            })
            .await;
        assert!(info.success());
        assert_eq!(seen, n);
        assert_eq!(child.tail().last(2), [(n - 2).to_string(), (n - 1).to_string()]);
        assert_eq!(child.tail().lines().len(), TAIL_LINES, "the tail is a ring");
    }

    #[tokio::test]
    async fn wait_ready_races_the_probe_the_exit_the_stop_and_the_deadline() {
        let never = || async { false };
        let quick = LoadDeadline::fixed(Duration::from_secs(10));
        let no_stop = std::future::pending::<()>;

        // Ready when the probe says so (here: once the child printed "up").
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut child = Supervised::spawn(sh(), ["-c", "sleep 0.3; echo up; sleep 30"]).unwrap();
        let flag = up.clone();
        let r = child
            .wait_ready(
                || {
                    let f = flag.clone();
                    async move { f.load(std::sync::atomic::Ordering::SeqCst) }
                },
                quick,
                |l| {
                    if l == "up" {
                        up.store(true, std::sync::atomic::Ordering::SeqCst);
                        Flow::ProbeNow
                    } else {
                        Flow::<()>::Continue
                    }
                },
                no_stop(),
            )
            .await;
        assert!(matches!(r, Ready::Ready), "{r:?}");
        let pid = child.pid();
        assert!(is_running(pid));
        drop(child);
        for _ in 0..100 {
            if !is_running(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!is_running(pid), "dropping the handle ends the child");

        // The exit, with its last words, wins over a probe that never succeeds.
        let mut child =
            Supervised::spawn(sh(), ["-c", "echo loading; echo boom >&2; exit 2"]).unwrap();
        let r = child.wait_ready(never, quick, |_| Flow::<()>::Continue, no_stop()).await;
        assert!(matches!(r, Ready::Exited(ExitInfo { code: Some(2), .. })), "{r:?}");
        let mut tail = child.tail().lines();
        tail.sort();
        assert_eq!(tail, ["boom", "loading"]);

        // A line can stop the wait (a GPU error line), and so can the stop future.
        let mut child = Supervised::spawn(sh(), ["-c", "echo 'CUDA error'; sleep 30"]).unwrap();
        let r = child
            .wait_ready(
                never,
                quick,
                |l| if l.contains("CUDA") { Flow::Stop(1) } else { Flow::Continue },
                std::future::pending::<i32>(),
            )
            .await;
        assert!(matches!(r, Ready::Stopped(1)), "{r:?}");
        child.terminate(Duration::from_secs(1)).await.unwrap();
        let mut child = Supervised::spawn(sh(), ["-c", "sleep 30"]).unwrap();
        let r = child
            .wait_ready(never, quick, |_| Flow::Continue, async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                "stop"
            })
            .await;
        assert!(matches!(r, Ready::Stopped("stop")), "{r:?}");
        let info = child.terminate(Duration::from_secs(1)).await.unwrap();
        assert_eq!(info.signal, Some(libc::SIGTERM));

        // A quiet log moves no deadline; a talking one does, up to the maximum.
        let started = Instant::now();
        let mut child = Supervised::spawn(sh(), ["-c", "sleep 30"]).unwrap();
        let quiet = LoadDeadline { quiet: Duration::from_millis(300), max: Duration::from_secs(5) };
        let r = child.wait_ready(never, quiet, |_| Flow::<()>::Continue, no_stop()).await;
        assert!(matches!(r, Ready::TimedOut), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        let started = Instant::now();
        let mut child =
            Supervised::spawn(sh(), ["-c", "while true; do echo tick; sleep 0.1; done"]).unwrap();
        let talking =
            LoadDeadline { quiet: Duration::from_millis(300), max: Duration::from_millis(900) };
        let r = child.wait_ready(never, talking, |_| Flow::<()>::Continue, no_stop()).await;
        assert!(matches!(r, Ready::TimedOut), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(850), "the log moved the deadline");
    }

    #[tokio::test]
    async fn terminate_takes_the_whole_group_and_kill_takes_a_stopped_one() {
        let dir = std::env::temp_dir().join(format!("genai-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("grandchild.pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let mut child = Supervised::spawn(sh(), ["-c", &script]).unwrap();
        let mut waited = 0;
        while !pidfile.exists() || std::fs::read_to_string(&pidfile).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            waited += 1;
            assert!(waited < 250, "grandchild never started");
        }
        let grandchild: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        child.terminate(Duration::from_secs(2)).await.unwrap();
        let gone = |pid: u32| async move {
            for _ in 0..100 {
                if !is_running(pid) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            false
        };
        assert!(gone(grandchild).await, "the grandchild outlived the stop");

        // A stopped (SIGSTOP) process: kill ends it at once.
        let mut child = Supervised::spawn(sh(), ["-c", "sleep 60"]).unwrap();
        let pid = child.pid();
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        let started = Instant::now();
        let info = child.kill().await.unwrap();
        assert_eq!(info.signal, Some(libc::SIGKILL));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(gone(pid).await);
        let _ = std::fs::remove_dir_all(dir);
    }
}
