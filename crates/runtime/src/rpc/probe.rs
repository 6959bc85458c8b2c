//! Asks a worker who it is and what memory it lends, in llama.cpp's RPC protocol
//! (`ggml/src/ggml-rpc/ggml-rpc.cpp`): a request is `u8 command | u64 size | payload`, an answer
//! `u64 size | payload`, little-endian. HELLO must come first (the worker closes the connection
//! otherwise); then DEVICE_COUNT, and GET_DEVICE_MEMORY per device. A worker serves one client
//! at a time (a probe that lingers would stall the llama-server using it), so the whole probe is
//! bounded in time and the connection closed at once.

use ipc::rpc::{RpcDevice, RpcVersion, WorkerProbe, WorkerState};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const GET_DEVICE_MEMORY: u8 = 11;
pub const HELLO: u8 = 14;
pub const DEVICE_COUNT: u8 = 15;
/// The capabilities a HELLO carries (`RPC_CONN_CAPS_SIZE`): all zero asks for plain TCP.
pub const CONN_CAPS: usize = 24;
/// A HELLO answer: major, minor, patch, padding, then the worker's capabilities.
pub const HELLO_ANSWER: usize = 4 + CONN_CAPS;
/// The most devices one worker is asked about (llama.cpp allows 16 servers of a few each).
pub const MAX_DEVICES: u32 = 64;
/// How long a probe may take in all, by default: the bound for a closed port.
pub const PROBE_LIMIT: Duration = Duration::from_millis(1500);

/// How long a probe that gave up keeps its connection to take the worker's late answer.
pub const LINGER: Duration = Duration::from_secs(600);

/// Keeps a connection whose answer is still due until the worker has sent it, then closes it.
/// llama.cpp's worker writes an answer in two sends and does not ignore SIGPIPE: closing while
/// an answer is due (a probe that timed out on a worker busy with another client) would kill
/// the worker when it answers, up to ten minutes later.
pub fn linger(mut stream: TcpStream) {
    tokio::spawn(async move {
        let mut buf = [0u8; 256];
        let take = async {
            // The first bytes, whenever they come; then whatever follows within a moment.
            if !matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
            {
                if n == 0 {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, take).await;
        let _ = stream.shutdown().await;
    });
}

/// One request's bytes.
pub fn request(command: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.push(command);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The version a HELLO answer's payload carries.
pub fn hello_version(payload: &[u8]) -> Option<RpcVersion> {
    (payload.len() == HELLO_ANSWER).then(|| RpcVersion {
        major: payload[0],
        minor: payload[1],
        patch: payload[2],
    })
}

/// Why a probe stopped short, before it is told as a state.
enum Stop {
    /// The worker answered with this many bytes where `want` were due.
    Size {
        got: u64,
        want: u64,
    },
    Io(std::io::Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e)
    }
}

/// Sends one request and reads its answer, which must be `want` bytes long.
async fn ask(
    stream: &mut TcpStream,
    command: u8,
    payload: &[u8],
    want: u64,
) -> Result<Vec<u8>, Stop> {
    stream.write_all(&request(command, payload)).await?;
    let mut size = [0u8; 8];
    stream.read_exact(&mut size).await?;
    let got = u64::from_le_bytes(size);
    if got != want {
        return Err(Stop::Size { got, want });
    }
    let mut answer = vec![0u8; want as usize];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

/// HELLO, then the devices and their memory, on a connected stream.
async fn converse(stream: &mut TcpStream, ours: RpcVersion) -> Result<WorkerState, Stop> {
    let hello = ask(stream, HELLO, &[0u8; CONN_CAPS], HELLO_ANSWER as u64).await?;
    let Some(version) = hello_version(&hello) else {
        return Ok(WorkerState::NotRpc { why: "a HELLO answer of the wrong length".into() });
    };
    if !ours.accepts(version) {
        return Ok(WorkerState::WrongVersion { worker: version, ours });
    }
    let count = ask(stream, DEVICE_COUNT, &[], 4).await?;
    let count = u32::from_le_bytes(count[..4].try_into().unwrap_or_default());
    if count > MAX_DEVICES {
        return Ok(WorkerState::NotRpc { why: format!("it claims {count} devices") });
    }
    let mut devices = Vec::new();
    for index in 0..count {
        let m = ask(stream, GET_DEVICE_MEMORY, &index.to_le_bytes(), 16).await?;
        let word = |at: usize| u64::from_le_bytes(m[at..at + 8].try_into().unwrap_or_default());
        devices.push(RpcDevice { index, free_bytes: word(0), total_bytes: word(8) });
    }
    Ok(WorkerState::Ready { version, devices })
}

/// What the worker at `address` (`host:port`) is, found within `limit`, for a client of
/// protocol `ours`.
pub async fn probe(address: &str, ours: RpcVersion, limit: Duration) -> WorkerProbe {
    let started = Instant::now();
    let state = probe_state(address, ours, limit, started).await;
    WorkerProbe {
        address: address.to_owned(),
        state,
        took_ms: started.elapsed().as_millis() as u64,
    }
}

async fn probe_state(
    address: &str,
    ours: RpcVersion,
    limit: Duration,
    started: Instant,
) -> WorkerState {
    let unreachable = |why: String| WorkerState::Unreachable { why };
    if let Err(why) = check_address(address) {
        return unreachable(why);
    }
    let mut stream = match tokio::time::timeout(limit, TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return unreachable(e.to_string()),
        Err(_) => return unreachable(format!("no answer to a connection in {limit:?}")),
    };
    let _ = stream.set_nodelay(true);
    let left = limit.saturating_sub(started.elapsed());
    let state = match tokio::time::timeout(left, converse(&mut stream, ours)).await {
        Ok(Ok(state)) => state,
        // It took the connection and said nothing: it is serving another client. Its answer
        // will come when it is free, and is taken then.
        Err(_) => {
            linger(stream);
            return WorkerState::Busy;
        }
        Ok(Err(Stop::Size { got, want })) => WorkerState::NotRpc {
            why: format!("an answer of {got} bytes where llama.cpp's protocol sends {want}"),
        },
        // A worker of an older protocol closes the connection at a HELLO it cannot read.
        Ok(Err(Stop::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            WorkerState::NotRpc {
                why: "it closed the connection at HELLO: a worker of a much older llama.cpp \
                      build (RPC protocol before 4.0), or not an RPC worker"
                    .into(),
            }
        }
        Ok(Err(Stop::Io(e))) => unreachable(e.to_string()),
    };
    let _ = stream.shutdown().await;
    state
}

/// The protocol version the worker at `address` speaks (its answer to HELLO alone), within
/// `limit`; `None` when it does not answer as a worker.
pub async fn version(address: &str, limit: Duration) -> Option<RpcVersion> {
    let started = Instant::now();
    let mut stream = tokio::time::timeout(limit, TcpStream::connect(address)).await.ok()?.ok()?;
    let left = limit.saturating_sub(started.elapsed());
    let hello = ask(&mut stream, HELLO, &[0; CONN_CAPS], HELLO_ANSWER as u64);
    match tokio::time::timeout(left, hello).await {
        Ok(answer) => {
            let _ = stream.shutdown().await;
            hello_version(&answer.ok()?)
        }
        Err(_) => {
            linger(stream);
            None
        }
    }
}

/// `host:port` as llama.cpp's `--rpc` reads it (split at the first `:`, so an IPv4 address or
/// a host name, not IPv6), or why not.
pub fn check_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.split_once(':') else {
        return Err(format!("{address:?} is not host:port"));
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['[', ']', ',']) {
        return Err(format!("{address:?} names no host (an IPv4 address or a host name)"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{port:?} is not a port (1 to 65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes llama.cpp's worker expects, as its source lays them out.
    #[test]
    fn requests_are_laid_out_as_the_worker_reads_them() {
        let hello = request(HELLO, &[0; CONN_CAPS]);
        assert_eq!(hello.len(), 33);
        assert_eq!(&hello[..9], &[0x0e, 24, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(request(DEVICE_COUNT, &[]), [0x0f, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            request(GET_DEVICE_MEMORY, &2u32.to_le_bytes()),
            [0x0b, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]
        );
        let mut answer = vec![7, 0, 1, 0];
        answer.extend_from_slice(&[0; CONN_CAPS]);
        assert_eq!(hello_version(&answer), Some(RpcVersion { major: 7, minor: 0, patch: 1 }));
        assert_eq!(hello_version(&answer[..4]), None);
    }

    #[test]
    fn addresses_are_host_and_port() {
        for ok in ["127.0.0.1:50052", "gpu-box.local:1", "192.168.1.20:65535"] {
            assert!(check_address(ok).is_ok(), "{ok}");
        }
        let bad =
            ["127.0.0.1", ":50052", "host:0", "host:70000", "host:port", "a b:1", "[::1]:50052"];
        for bad in bad {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}
