//! `alertprof capture` on a large profile: it is streamed to disk and moved into place,
//! never held in memory. Alone in its test binary, so the peak memory of the children it
//! waited for is the capture's alone.

mod support;

use std::process::Command;

use axum::body::{Body, Bytes};
use axum::response::IntoResponse;

/// Size of the goroutine dump served: far more than the capture may hold in memory.
const DUMP: usize = 256 << 20;
/// The most the capture may take, all of it.
const MAX_RSS: u64 = 100 << 20;

/// The highest resident set of any child process this test waited for, in bytes.
fn children_peak_rss() -> u64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the pointer it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) }, 0);
    usage.ru_maxrss as u64 * 1024
}

/// A 256 MiB goroutine dump is captured with well under 100 MiB of memory, kept whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_profile_is_moved_not_read() {
    let addr = support::fake_target(|| async {
        let chunk =
            Bytes::from([b"goroutine 1 [running]:\n".as_slice(), &vec![b'x'; (1 << 20) - 23]].concat());
        let chunks =
            futures_util::stream::iter((0..DUMP >> 20).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
        Body::from_stream(chunks).into_response()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{addr}");
    let output = tokio::task::spawn_blocking({
        let dir = dir.path().to_path_buf();
        move || {
            Command::new(env!("CARGO_BIN_EXE_alertprof"))
                .args(["capture", &url, "--profile", "goroutine_text", "--out", "profiles"])
                .current_dir(dir)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let files = support::files_in(&dir.path().join("profiles"));
    assert_eq!(files.len(), 1, "{files:?}");
    let kept = dir.path().join("profiles").join(&files[0]);
    assert_eq!(std::fs::metadata(&kept).unwrap().len(), DUMP as u64);
    let peak = children_peak_rss();
    assert!(peak < MAX_RSS, "the capture took {} MiB", peak >> 20);
}
