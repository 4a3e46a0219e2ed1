use std::fs;
use std::sync::mpsc;

use super::*;

fn d(key: &str) -> DedupeKey {
    DedupeKey::from_stored(key.to_string())
}

fn c(rule: &str, target: &str) -> CooldownKey<'static> {
    CooldownKey::from_stored(rule.to_string(), target.to_string())
}

use crate::testing::at;

const LONG: Duration = Duration::from_secs(1_000_000_000);

fn lines_in(dir: &Path) -> usize {
    fs::read_to_string(state_file(dir)).unwrap().lines().count()
}

/// Runs `work` on its own thread and fails if it has not finished within `within`: a
/// deadlock fails the test instead of hanging it.
fn within<T: Send + 'static>(within: Duration, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || done_tx.send(work()).ok());
    done_rx.recv_timeout(within).expect("did not finish: blocked")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Dedupe and cooldown refuse with the right reason, and both survive a reopen.
#[tokio::test]
async fn dedupe_and_cooldown_persist() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::open(dir.path(), LONG, 4).unwrap());
    let cooldown = Duration::from_secs(300);
    assert_eq!(gate.admit(Some(&d("a")), &c("r", "t"), cooldown, at(0)).await.unwrap(), None);
    assert_eq!(
        gate.admit(Some(&d("a")), &c("r", "t"), cooldown, at(1)).await.unwrap(),
        Some(Refusal::Duplicate { first_seen: at(0) })
    );
    assert_eq!(
        gate.admit(Some(&d("b")), &c("r", "t"), cooldown, at(1)).await.unwrap(),
        Some(Refusal::Cooldown { until: at(300) })
    );
    // Another target is not in this rule's cooldown.
    assert_eq!(gate.admit(Some(&d("c")), &c("r", "u"), cooldown, at(1)).await.unwrap(), None);
    // After the cooldown the rule may capture again.
    assert_eq!(gate.admit(Some(&d("d")), &c("r", "t"), cooldown, at(301)).await.unwrap(), None);
    drop(gate);

    // Reopened: the dedupe key and the latest cooldown are still there.
    let reopened = Gate::open(dir.path(), LONG, 4).unwrap();
    assert_eq!(
        reopened.check(Some(&d("a")), &c("x", "y"), at(2)),
        Some(Refusal::Duplicate { first_seen: at(0) })
    );
    assert_eq!(reopened.check(None, &c("r", "t"), at(302)), Some(Refusal::Cooldown { until: at(601) }));
    assert_eq!(reopened.check(None, &c("r", "t"), at(601)), None);
}

/// A line of bytes that are not UTF-8 in the middle of the log is skipped; the keys after
/// it are kept, also after the log is rewritten.
#[test]
fn garbled_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let mut content = Entry::Dedupe { dedupe: "before".into(), at: now }.line();
    content.extend_from_slice(b"\xff\xfe{\"dedupe\": \x80}\n");
    content.extend(Entry::Dedupe { dedupe: "after".into(), at: now }.line());
    fs::write(state_file(dir.path()), content).unwrap();
    for _ in 0..2 {
        let gate = Gate::open(dir.path(), Duration::from_secs(3600), 1).unwrap();
        for key in ["before", "after"] {
            assert!(
                matches!(gate.check(Some(&d(key)), &c("r", "t"), now), Some(Refusal::Duplicate { .. })),
                "{key}"
            );
        }
    }
}

/// A log line cut short by a crash is skipped and the rest is kept.
#[test]
fn torn_line_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let now = Utc::now();
    let good = Entry::Dedupe { dedupe: "kept".into(), at: now }.line();
    let mut content = good.clone();
    content.extend_from_slice(&good[..good.len() / 2]);
    fs::write(state_file(dir.path()), content).unwrap();
    let gate = Gate::open(dir.path(), Duration::from_secs(3600), 1).unwrap();
    assert!(matches!(gate.check(Some(&d("kept")), &c("r", "t"), now), Some(Refusal::Duplicate { .. })));
}

/// A log whose appends wait until told to go on, as a slow disk's fsync does.
struct SlowLog {
    started_tx: Mutex<mpsc::Sender<()>>,
    go_rx: Mutex<mpsc::Receiver<io::Result<()>>>,
}

use std::io;

impl StateLog for SlowLog {
    fn append(&self, _lines: &[u8]) -> io::Result<()> {
        self.started_tx.lock().unwrap().send(()).ok();
        self.go_rx.lock().unwrap().recv().unwrap()
    }

    fn rewrite(&self, snapshot: &mut dyn FnMut() -> Vec<u8>) -> io::Result<()> {
        snapshot();
        Ok(())
    }
}

fn slow_gate() -> (Arc<Gate>, mpsc::Receiver<()>, mpsc::Sender<io::Result<()>>) {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let log = SlowLog { started_tx: Mutex::new(started_tx), go_rx: Mutex::new(go_rx) };
    let gate = Gate::with_log(Arc::new(log), Vec::new(), LONG, 4, Limits::default());
    (Arc::new(gate), started_rx, go_tx)
}

/// While an admission's record is being written (fsync can take long), the async thread
/// stays free and `check`, which the webhook asks for every alert, answers at once: the
/// new record already refuses its duplicate, other alerts pass. All on one async thread,
/// as a busy runtime would be.
#[test]
fn admission_writes_without_blocking_intake() {
    within(Duration::from_secs(10), || {
        runtime().block_on(async {
            let (gate, started_rx, go_tx) = slow_gate();
            let admitting = tokio::spawn({
                let gate = gate.clone();
                async move { gate.admit(Some(&d("a")), &c("r", "t"), Duration::from_secs(60), at(0)).await }
            });
            // Let the admission run until its write has started.
            while started_rx.try_recv().is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(
                gate.check(Some(&d("a")), &c("x", "y"), at(1)),
                Some(Refusal::Duplicate { first_seen: at(0) })
            );
            assert_eq!(gate.check(Some(&d("b")), &c("r2", "t"), at(1)), None);
            go_tx.send(Ok(())).unwrap();
            assert_eq!(admitting.await.unwrap().unwrap(), None);
        })
    });
}

/// A record that cannot be written is taken back: the job is refused with the reason, and
/// the same alert may be admitted once the disk is back.
#[test]
fn failed_write_is_taken_back() {
    within(Duration::from_secs(10), || {
        runtime().block_on(async {
            let (gate, _started_rx, go_tx) = slow_gate();
            go_tx.send(Err(io::Error::other("disk full"))).unwrap();
            let error =
                gate.admit(Some(&d("a")), &c("r", "t"), Duration::from_secs(60), at(0)).await.unwrap_err();
            assert_eq!(error.to_string(), "cannot record gate state: disk full");
            assert_eq!(gate.check(Some(&d("a")), &c("r", "t"), at(1)), None);
            go_tx.send(Ok(())).unwrap();
            assert_eq!(
                gate.admit(Some(&d("a")), &c("r", "t"), Duration::from_secs(60), at(2)).await.unwrap(),
                None
            );
            assert!(gate.check(Some(&d("a")), &c("r", "t"), at(3)).is_some());
        })
    });
}

/// Dedupe keys and cooldowns that have expired are forgotten while running, and the log is
/// compacted to what is live, not only at start.
#[tokio::test]
async fn expired_state_is_pruned_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(3600);
    let gate = Arc::new(Gate::open(dir.path(), ttl, 4).unwrap());
    for n in 0..100 {
        let key = format!("alert-{n}");
        gate.admit(Some(&d(&key)), &c(&format!("r{n}"), "t"), Duration::from_secs(60), at(n)).await.unwrap();
    }
    assert_eq!(gate.size().dedupe_keys, 100);
    assert_eq!(gate.size().cooldowns, 100);
    assert_eq!(lines_in(dir.path()), 200);

    // Two hours on: everything has expired; one new admission stays.
    gate.admit(Some(&d("fresh")), &c("r", "t"), Duration::from_secs(60), at(7200)).await.unwrap();
    gate.maintain(at(7200)).await;
    let size = gate.size();
    assert_eq!((size.dedupe_keys, size.cooldowns), (1, 1));
    assert_eq!(lines_in(dir.path()), 2);
    drop(gate);
    let reopened = Gate::open(dir.path(), ttl, 4).unwrap();
    assert!(reopened.check(Some(&d("fresh")), &c("x", "y"), at(7201)).is_some());
    assert_eq!(reopened.size().dedupe_keys, 1);
}

/// However many distinct alerts arrive within the TTL, the gate keeps at most its bound of
/// dedupe keys (the oldest go first), and the log is compacted as it grows.
#[tokio::test]
async fn dedupe_keys_and_log_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (log, entries) = FileLog::open(dir.path()).unwrap();
    let limits = Limits { max_dedupe_keys: 50, compact_after: 20 };
    let gate = Arc::new(Gate::with_log(Arc::new(log), entries, LONG, 4, limits));
    for n in 0..500 {
        let key = format!("alert-{n}");
        gate.admit(Some(&d(&key)), &c("r", "t"), Duration::ZERO, at(n)).await.unwrap();
        assert!(gate.size().dedupe_keys <= 50);
        assert!(lines_in(dir.path()) <= 50 + 20 + 1, "log of {} lines", lines_in(dir.path()));
    }
    assert!(gate.check(Some(&d("alert-499")), &c("r", "t"), at(500)).is_some());
    assert!(gate.check(Some(&d("alert-0")), &c("r", "t"), at(500)).is_none(), "the oldest was forgotten");
}

/// The CPU-profiler slots of templated targets (one per host and port) are forgotten once
/// released; one still waited for is kept, and still serializes.
#[tokio::test]
async fn exclusive_slots_are_forgotten_when_free() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::open(dir.path(), LONG, 4).unwrap());
    for n in 0..1000 {
        let slot = gate.exclusive(&format!("pods@10.0.{}.{}:6060", n / 256, n % 256), ProfileKind::Cpu).await;
        drop(slot);
    }
    assert_eq!(gate.size().slots, 0);

    let held = gate.exclusive("pods@10.0.0.1:6060", ProfileKind::Cpu).await;
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.exclusive("pods@10.0.0.1:6060", ProfileKind::Cpu).await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "a second CPU profile waits");
    drop(held);
    assert_eq!(gate.size().slots, 1, "still waited for");
    drop(waiter.await.unwrap());
    assert_eq!(gate.size().slots, 0);
}

/// A TTL and a cooldown past the end of time are valid config: they refuse for good, and
/// nothing overflows.
#[tokio::test]
async fn durations_past_the_end_of_time() {
    let dir = tempfile::tempdir().unwrap();
    let forever = Duration::from_secs(u64::MAX / 1000);
    let gate = Arc::new(Gate::open(dir.path(), forever, 4).unwrap());
    assert_eq!(gate.admit(Some(&d("a")), &c("r", "t"), forever, at(0)).await.unwrap(), None);
    assert!(matches!(
        gate.check(Some(&d("a")), &c("x", "y"), at(1_000_000_000)),
        Some(Refusal::Duplicate { .. })
    ));
    assert!(matches!(gate.check(None, &c("r", "t"), at(1_000_000_000)), Some(Refusal::Cooldown { .. })));
    gate.maintain(at(1_000_000_000)).await;
    assert_eq!(gate.size().dedupe_keys, 1);
}
