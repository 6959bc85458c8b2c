//! Download throughput against curl, side by side: 1 GiB from the loopback fixture server, once
//! with our downloader (writing the .part, hashing SHA-256 as it goes, verifying, renaming) and
//! once with `curl -o`, alternating, five rounds each. Prints the ratio of throughputs.
//!
//! cargo bench -p runtime --bench download_throughput [-- SIZE_MIB]

use runtime::download::{Control, DownloadConfig, DownloadSpec, Downloader, Outcome};
use std::time::{Duration, Instant};
use testkit::http::{Body, FixtureServer, Route};

fn main() {
    let mib: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    let len = mib << 20;
    // The server runs on a thread and runtime of its own, so it serves the same way whichever
    // client (curl or ours) is measured.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let srt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        srt.block_on(async {
            let s = FixtureServer::start().await;
            s.add("/big.bin", Route::new(Body::Pattern(len)));
            tx.send(s.url("/big.bin")).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let url = rx.recv().unwrap();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("genai-bench-dl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dl = Downloader::new(DownloadConfig::default()).unwrap();

    let ours = |round: u32| -> Duration {
        let dest = dir.join(format!("ours-{round}.bin"));
        let spec = DownloadSpec {
            url: url.clone(),
            dest: dest.clone(),
            expected_sha256: None,
            bearer_token: None,
        };
        let t = Instant::now();
        let r = rt.block_on(dl.download(&spec, &Control::default(), |_| {})).unwrap();
        let took = t.elapsed();
        assert!(matches!(r, Outcome::Done(ref d) if d.bytes == len));
        std::fs::remove_file(dest).unwrap();
        took
    };
    let curl = |round: u32| -> Duration {
        let dest = dir.join(format!("curl-{round}.bin"));
        let t = Instant::now();
        let st = std::process::Command::new("curl")
            .args(["-sS", "-o"])
            .arg(&dest)
            .arg(&url)
            .status()
            .unwrap();
        let took = t.elapsed();
        assert!(st.success(), "curl failed");
        assert_eq!(std::fs::metadata(&dest).unwrap().len(), len);
        std::fs::remove_file(dest).unwrap();
        took
    };

    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..5 {
        a.push(ours(round));
        b.push(curl(round));
    }
    a.sort();
    b.sort();
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let (ours_med, curl_med) = (a[2], b[2]);
    println!("size: {mib} MiB from 127.0.0.1, 5 rounds each, alternating");
    println!(
        "ours (write + SHA-256 + verify + rename): median {:.0} MiB/s ({:.2} s)",
        rate(ours_med),
        ours_med.as_secs_f64()
    );
    println!("curl -o: median {:.0} MiB/s ({:.2} s)", rate(curl_med), curl_med.as_secs_f64());
    println!(
        "ratio ours / curl throughput: {:.2} (target >= 0.90)",
        curl_med.as_secs_f64() / ours_med.as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
