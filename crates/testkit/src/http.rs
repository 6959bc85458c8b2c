//! A small HTTP/1.1 file server on 127.0.0.1 that can misbehave on purpose: ignore `Range`,
//! drop the connection at byte N, stall, answer an error status, or send a wrong checksum header.
//! Hand-written on tokio so each fault is exact (a framework would buffer or retry for us).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What a file's bytes are.
#[derive(Clone, Debug)]
pub enum Body {
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes of a fixed pattern (byte i is i mod 251), without holding them in memory.
    Pattern(u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Pattern(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes `start..end` into `out`.
    fn fill(&self, start: u64, out: &mut Vec<u8>, n: usize) {
        out.clear();
        match self {
            Body::Bytes(b) => out.extend_from_slice(&b[start as usize..start as usize + n]),
            Body::Pattern(_) => {
                // Copy from a precomputed run of the pattern: byte-by-byte generation would make
                // this server, not the client under test, the bottleneck of a throughput test.
                static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                let table =
                    TABLE.get_or_init(|| (0..(1 << 20) + 251).map(|i| (i % 251) as u8).collect());
                let mut at = start;
                while out.len() < n {
                    let phase = (at % 251) as usize;
                    let take = (n - out.len()).min(1 << 20);
                    out.extend_from_slice(&table[phase..phase + take]);
                    at += take as u64;
                }
            }
        }
    }

    /// All bytes of a pattern body, for computing its checksum in a test.
    pub fn pattern_bytes(len: u64) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }
}

/// One misbehaviour, used up by one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after sending this many body bytes of the response.
    DropAfter(u64),
    /// Send this many body bytes, then send nothing more while keeping the connection open.
    StallAfter(u64),
    /// Answer with this status and no body.
    Status(u16),
}

#[derive(Clone, Debug)]
pub struct Route {
    pub body: Body,
    /// Honour `Range` requests (206); when false, always send the whole file (200).
    pub ranges: bool,
    /// Extra response headers (an `ETag`, a wrong `x-linked-etag`, ...).
    pub headers: Vec<(String, String)>,
    /// Faults for the next requests, one per request, in order.
    pub faults: VecDeque<Fault>,
    /// Answer 302 to this location (with `headers`) instead of serving `body`.
    pub redirect: Option<String>,
    /// Answer this status with `headers` and the whole body (an API's error), ignoring `Range`.
    pub status: Option<u16>,
}

impl Route {
    pub fn new(body: Body) -> Self {
        Self {
            body,
            ranges: true,
            headers: Vec::new(),
            faults: VecDeque::new(),
            redirect: None,
            status: None,
        }
    }

    /// A redirect, as Hugging Face's `resolve` URLs answer (set headers with [`Route::header`]).
    pub fn redirect(location: &str) -> Self {
        Self { redirect: Some(location.to_owned()), ..Self::bytes(Vec::new()) }
    }

    pub fn bytes(bytes: Vec<u8>) -> Self {
        Self::new(Body::Bytes(Arc::new(bytes)))
    }

    /// An answer with this status (and `headers`), body as given: an API's refusal.
    pub fn with_status(mut self, code: u16) -> Self {
        self.status = Some(code);
        self
    }

    pub fn without_ranges(mut self) -> Self {
        self.ranges = false;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn fault(mut self, f: Fault) -> Self {
        self.faults.push_back(f);
        self
    }
}

/// What a request asked for, for assertions.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
    /// Body bytes handed to the socket, by path.
    sent: HashMap<String, u64>,
    /// Added before every answer: a distant server's round trip.
    latency: Duration,
}

/// The server; it stops when dropped.
pub struct FixtureServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FixtureServer {
    /// Binds 127.0.0.1 on a free port. Needs a tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn add(&self, path: &str, route: Route) {
        self.state.lock().unwrap().routes.insert(path.to_owned(), route);
    }

    /// Waits `latency` before answering each request from now on (a distant server's round
    /// trip, for benchmarks).
    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    /// Queues a fault for the next request to `path`.
    pub fn add_fault(&self, path: &str, fault: Fault) {
        if let Some(r) = self.state.lock().unwrap().routes.get_mut(path) {
            r.faults.push_back(fault);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// GET requests seen so far for `path` (the transfers, without pre-flight HEADs).
    pub fn gets(&self, path: &str) -> Vec<Seen> {
        self.seen(path).into_iter().filter(|s| s.method == "GET").collect()
    }

    /// Body bytes sent so far for `path`, over every request (what a client fetched, whether
    /// or not it read them all).
    pub fn sent(&self, path: &str) -> u64 {
        self.state.lock().unwrap().sent.get(path).copied().unwrap_or(0)
    }

    /// Requests seen so far for `path`.
    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.state.lock().unwrap().seen.iter().filter(|s| s.path == path).cloned().collect()
    }
}

/// `bytes=N-` or `bytes=N-M` against a body of `len` bytes: the inclusive range, or `None` when
/// it cannot be satisfied.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = match b.trim() {
        "" => len.checked_sub(1)?,
        e => e.parse::<u64>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

async fn serve(sock: TcpStream, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(sock);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).await? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let (route, fault) = {
        let mut st = state.lock().unwrap();
        st.seen.push(Seen { method: method.clone(), path: path.clone(), headers: headers.clone() });
        match st.routes.get_mut(&path) {
            Some(r) => {
                // Faults stand for a failing transfer: a HEAD (a client's pre-flight) passes.
                let fault = if method == "HEAD" { None } else { r.faults.pop_front() };
                (Some(r.clone()), fault)
            }
            None => (None, None),
        }
    };
    let mut sock = reader.into_inner();
    let Some(route) = route else {
        return respond_status(&mut sock, 404).await;
    };
    if let Some(Fault::Status(code)) = fault {
        return respond_status(&mut sock, code).await;
    }
    if let Some(location) = &route.redirect {
        let mut head =
            format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n");
        for (k, v) in &route.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        return sock.write_all(head.as_bytes()).await;
    }

    let len = route.body.len();
    let range = headers.get("range").filter(|_| route.ranges && route.status.is_none());
    let (status, start, end) = match range {
        None => (200, 0, len),
        Some(r) => match parse_range(r, len) {
            Some((s, e)) => (206, s, e + 1),
            None => {
                let head = format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                return sock.write_all(head.as_bytes()).await;
            }
        },
    };
    let status = route.status.unwrap_or(status);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n",
        match status {
            200 => "OK",
            206 => "Partial Content",
            _ => "Fixture",
        },
        end - start
    );
    if route.ranges {
        head.push_str("Accept-Ranges: bytes\r\n");
    }
    if status == 206 {
        head.push_str(&format!("Content-Range: bytes {start}-{}/{len}\r\n", end - 1));
    }
    for (k, v) in &route.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await?;
    if method == "HEAD" {
        return Ok(());
    }

    let limit = match fault {
        Some(Fault::DropAfter(n)) | Some(Fault::StallAfter(n)) => (start + n).min(end),
        _ => end,
    };
    let mut at = start;
    let mut buf = Vec::with_capacity(256 * 1024);
    while at < limit {
        let n = (limit - at).min(256 * 1024) as usize;
        route.body.fill(at, &mut buf, n);
        // Written piece by piece so that what a client that leaves got is counted too.
        let mut off = 0;
        while off < buf.len() {
            let k = sock.write(&buf[off..]).await?;
            if k == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            off += k;
            *state.lock().unwrap().sent.entry(path.clone()).or_default() += k as u64;
        }
        at += n as u64;
    }
    sock.flush().await?;
    if let Some(Fault::StallAfter(_)) = fault {
        // Hold the connection open, silent, until the client gives up (or the test ends).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    Ok(())
}

async fn respond_status(sock: &mut TcpStream, code: u16) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {code} Fixture\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    sock.write_all(head.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some((0, 9)));
        assert_eq!(parse_range("bytes=4-5", 10), Some((4, 5)));
        assert_eq!(parse_range("bytes=4-99", 10), Some((4, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=0-", 0), None);
        assert_eq!(parse_range("items=0-", 10), None);
    }
}
