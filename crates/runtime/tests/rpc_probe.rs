//! Probing RPC workers (#18) against loopback stand-ins for the fault paths a real worker cannot
//! be made to show: a worker of another protocol version is told apart before any launch, a
//! closed port is unreachable in well under 2 s, a worker busy with another client is said to
//! be busy (and the probe lets go in time), and one that speaks another protocol is not taken
//! for a worker. The stand-in checks every request's bytes as llama.cpp's worker reads them.

use ipc::rpc::{RpcDevice, RpcVersion, WorkerState};
use runtime::rpc::probe::{probe, PROBE_LIMIT};

// llama.cpp's values (ggml/src/ggml-rpc/ggml-rpc.cpp, build 11434), written out here rather
// than taken from the code under test, so a wrong constant there fails here.
const HELLO: u8 = 14;
const DEVICE_COUNT: u8 = 15;
const GET_DEVICE_MEMORY: u8 = 11;
/// `RPC_CONN_CAPS_SIZE`.
const CONN_CAPS: usize = 24;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OURS: RpcVersion = RpcVersion { major: 7, minor: 0, patch: 0 };

#[derive(Clone)]
enum Behaviour {
    /// Answers as a worker of `version` with these devices (free, total).
    Worker { version: RpcVersion, devices: Vec<(u64, u64)> },
    /// Takes the connection and says nothing (serving another client).
    Silent,
    /// Reads the HELLO and closes (an older protocol's worker).
    CloseOnHello,
    /// Answers as a web server would.
    Http,
}

/// Reads one request, checking its layout; answers its command and payload.
async fn read_request(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let size = u64::from_le_bytes(head[1..].try_into().unwrap());
    let want = match head[0] {
        HELLO => CONN_CAPS as u64,
        DEVICE_COUNT => 0,
        GET_DEVICE_MEMORY => 4,
        other => panic!("unexpected command {other}"),
    };
    assert_eq!(size, want, "command {}: payload of {size} bytes", head[0]);
    let mut payload = vec![0u8; size as usize];
    s.read_exact(&mut payload).await.ok()?;
    Some((head[0], payload))
}

async fn answer(s: &mut TcpStream, payload: &[u8]) {
    let mut out = (payload.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    s.write_all(&out).await.unwrap();
}

async fn serve(mut s: TcpStream, b: Behaviour) {
    match b {
        Behaviour::Silent => tokio::time::sleep(Duration::from_secs(30)).await,
        Behaviour::CloseOnHello => {
            let mut buf = [0u8; 33];
            let _ = s.read_exact(&mut buf).await;
        }
        Behaviour::Http => {
            let mut buf = [0u8; 33];
            let _ = s.read_exact(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        }
        Behaviour::Worker { version, devices } => {
            let Some((HELLO, caps)) = read_request(&mut s).await else { panic!("no HELLO first") };
            assert_eq!(caps, [0; CONN_CAPS]);
            let mut hello = vec![version.major, version.minor, version.patch, 0];
            hello.extend_from_slice(&[0; CONN_CAPS]);
            answer(&mut s, &hello).await;
            while let Some((command, payload)) = read_request(&mut s).await {
                match command {
                    DEVICE_COUNT => answer(&mut s, &(devices.len() as u32).to_le_bytes()).await,
                    GET_DEVICE_MEMORY => {
                        let i = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
                        // Past the last device the real worker closes the connection.
                        let Some((free, total)) = devices.get(i) else { return };
                        let mut m = free.to_le_bytes().to_vec();
                        m.extend_from_slice(&total.to_le_bytes());
                        answer(&mut s, &m).await;
                    }
                    other => panic!("unexpected command {other}"),
                }
            }
        }
    }
}

/// A stand-in worker on a loopback port.
async fn worker(b: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, b.clone()));
        }
    });
    address
}

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn a_ready_worker_tells_its_devices_and_their_memory() {
    let devices = vec![(10 * GIB, 12 * GIB), (15 * GIB, 16 * GIB)];
    let at = worker(Behaviour::Worker { version: OURS, devices }).await;
    let p = probe(&at, OURS, PROBE_LIMIT).await;
    assert_eq!(
        p.state,
        WorkerState::Ready {
            version: OURS,
            devices: vec![
                RpcDevice { index: 0, free_bytes: 10 * GIB, total_bytes: 12 * GIB },
                RpcDevice { index: 1, free_bytes: 15 * GIB, total_bytes: 16 * GIB },
            ]
        }
    );
    assert_eq!(p.address, at);
    // An older patch or minor version of the same major speaks with us too.
    let older = RpcVersion { major: 7, minor: 0, patch: 0 };
    let newer_client = RpcVersion { major: 7, minor: 2, patch: 1 };
    let at = worker(Behaviour::Worker { version: older, devices: vec![(GIB, GIB)] }).await;
    assert!(matches!(probe(&at, newer_client, PROBE_LIMIT).await.state, WorkerState::Ready { .. }));
}

#[tokio::test]
async fn another_protocol_version_is_refused_naming_both() {
    for theirs in
        [RpcVersion { major: 6, minor: 1, patch: 0 }, RpcVersion { major: 7, minor: 1, patch: 0 }]
    {
        let at = worker(Behaviour::Worker { version: theirs, devices: vec![(GIB, GIB)] }).await;
        let p = probe(&at, OURS, PROBE_LIMIT).await;
        assert_eq!(p.state, WorkerState::WrongVersion { worker: theirs, ours: OURS });
    }
    // A worker too old to read this HELLO closes the connection: not taken for a worker.
    let at = worker(Behaviour::CloseOnHello).await;
    let WorkerState::NotRpc { why } = probe(&at, OURS, PROBE_LIMIT).await.state else { panic!() };
    assert!(why.contains("older llama.cpp"), "{why}");
    let at = worker(Behaviour::Http).await;
    assert!(matches!(probe(&at, OURS, PROBE_LIMIT).await.state, WorkerState::NotRpc { .. }));
}

#[tokio::test]
async fn a_closed_port_is_unreachable_in_under_two_seconds() {
    let free = runtime::net::free_port().unwrap();
    let started = Instant::now();
    let p = probe(&format!("127.0.0.1:{free}"), OURS, PROBE_LIMIT).await;
    assert!(matches!(p.state, WorkerState::Unreachable { .. }), "{p:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let p = probe("not an address", OURS, PROBE_LIMIT).await;
    assert!(matches!(p.state, WorkerState::Unreachable { .. }), "{p:?}");
}

#[tokio::test]
async fn a_busy_worker_is_said_busy_and_let_go_in_time() {
    let at = worker(Behaviour::Silent).await;
    let started = Instant::now();
    let p = probe(&at, OURS, Duration::from_millis(300)).await;
    assert_eq!(p.state, WorkerState::Busy);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "{took:?}");
}

/// The local worker's tensor cache over its cap is trimmed oldest-first; files llama.cpp did
/// not write stay.
#[test]
fn a_cache_over_its_cap_is_trimmed_oldest_first() {
    use runtime::rpc::cache::trim;
    use std::time::SystemTime;
    let dir = testkit::TempDir::new("rpc-cache");
    let now = SystemTime::now();
    let write = |name: &str, kib: usize, age_s: u64| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        f.set_len((kib * 1024) as u64).unwrap();
        f.set_modified(now - Duration::from_secs(age_s)).unwrap();
    };
    write("00000000000000a1", 400, 300);
    write("00000000000000b2", 300, 200);
    write("00000000000000c3", 200, 100);
    write("notes.txt", 900, 900);
    let done = trim(dir.path(), 600 * 1024).unwrap();
    assert_eq!((done.removed, done.freed_bytes, done.kept_bytes), (1, 400 * 1024, 500 * 1024));
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["00000000000000b2", "00000000000000c3", "notes.txt"]);
    // Under the cap: nothing more goes; a folder not made yet is an empty cache.
    assert_eq!(trim(dir.path(), 600 * 1024).unwrap().removed, 0);
    assert_eq!(trim(&dir.join("none"), 0).unwrap(), Default::default());
}
