//! The queue on disk and the push worker, as a library, against the stand-in Pyroscope of
//! `support::pyroscope` that decodes every push with the vendored protos: the labels,
//! tenant, auth and profile sent; a Pyroscope down, busy, refusing or hanging; a restart;
//! the queue's bounds. (`tests/pyroscope_serve.rs` runs the same through the binary.)

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alertprof::config::{Credentials, PyroscopeConfig};
use alertprof::model::Secret;
use alertprof::pyroscope::{
    Backoff, EnqueueError, ProfileType, PushItem, PushMetrics, PushQueue, PushResult, PushSource, PushWorker,
    PyroscopeClient, QueueLimits,
};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use reqwest::Url;
use support::pyroscope::{Answer, Pyroscope, Received, connect_error, ok, taken};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BASIC: &str = "Basic YWxlcnRwcm9mOnMzY3JldA=="; // alertprof:s3cret
const WITHIN: Duration = Duration::from_secs(20);

/// A profile store, a queue and its counts, as the pipeline would have them.
struct Setup {
    store: tempfile::TempDir,
    data: tempfile::TempDir,
    metrics: PushMetrics,
    queue: PushQueue,
}

impl Setup {
    fn new(limits: QueueLimits) -> Setup {
        alertprof::init();
        let data = tempfile::tempdir().unwrap();
        let metrics = PushMetrics::default();
        let queue = PushQueue::open(&data.path().join(".pyroscope"), limits, metrics.clone()).unwrap();
        Setup { store: tempfile::tempdir().unwrap(), data, metrics, queue }
    }

    /// A new queue over the same directory, as after a restart.
    fn reopen(&mut self) {
        self.metrics = PushMetrics::default();
        let dir = self.data.path().join(".pyroscope");
        self.queue = PushQueue::open(&dir, QueueLimits::default(), self.metrics.clone()).unwrap();
    }

    /// A stored profile of capture `cap-{n}` (each one different) and its push.
    fn item(&self, n: usize) -> PushItem {
        let function = format!("main.work{n}");
        let profile = support::profiles::profile(&[&function, "main.main"], &[(&[1, 2], [3, 30])]);
        let file = self.store.path().join(format!("cap-{n}.pb.gz"));
        std::fs::write(&file, profile).unwrap();
        PushItem {
            source: PushSource::Capture(format!("cap-{n}")),
            profile_type: ProfileType::Cpu,
            service_name: "checkout".into(),
            alertname: Some("HighCPU".into()),
            rule: Some("cpu-spike".into()),
            instance: Some("10.0.0.7:6060".into()),
            labels: vec![("k8s.namespace".into(), "shop".into())],
            file,
            expires_at: chrono::Utc::now() + chrono::Duration::days(7),
        }
    }

    /// Queues `cap-{n}` for each n, then deletes each stored profile, as retention may.
    fn enqueue(&self, ns: impl IntoIterator<Item = usize>) -> Vec<Vec<u8>> {
        let mut profiles = Vec::new();
        for n in ns {
            let item = self.item(n);
            profiles.push(std::fs::read(&item.file).unwrap());
            self.queue.enqueue_blocking(&item).unwrap();
            std::fs::remove_file(&item.file).unwrap();
        }
        profiles
    }

    fn count(&self, result: PushResult) -> u64 {
        self.metrics.pushes(result)
    }

    fn start_worker(&self, addr: SocketAddr, timeout: Duration, backoff: Backoff) -> Worker {
        let config = PyroscopeConfig {
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            tenant: Some("team-a".into()),
            auth: Some(Credentials::Basic { username: "alertprof".into(), password: Secret::new("s3cret") }),
            ui_url: None,
            recorder: false,
        };
        let client = PyroscopeClient::new(&config).with_timeout(timeout);
        let cancel = CancellationToken::new();
        let worker = PushWorker::new(self.queue.clone(), client).with_backoff(backoff);
        Worker { cancel: cancel.clone(), task: tokio::spawn(worker.run(cancel)) }
    }

    fn files(&self) -> usize {
        std::fs::read_dir(self.queue.dir()).unwrap().count()
    }
}

struct Worker {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Worker {
    /// Cancels the worker and waits for it, which must be prompt.
    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the worker stops at once")
            .unwrap();
    }
}

fn quick() -> Backoff {
    Backoff {
        first: Duration::from_millis(20),
        max: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A port nothing listens on (yet).
async fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WITHIN;
    while !done() {
        assert!(Instant::now() < deadline, "not {what} after {WITHIN:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Everything a push must carry: the documented labels, the tenant, the auth, Connect's
/// headers, and the stored profile byte for byte, which decodes as the same profile.
fn check_push(received: &Received, profile: &[u8]) {
    let n = received.capture().strip_prefix("cap-").unwrap();
    let expected: BTreeMap<String, String> = [
        ("__name__", "process_cpu"),
        ("__delta__", "false"),
        ("service_name", "checkout"),
        ("alertprof_capture_id", &format!("cap-{n}")),
        ("alertname", "HighCPU"),
        ("alertprof_rule", "cpu-spike"),
        ("instance", "10.0.0.7:6060"),
        ("k8s_namespace", "shop"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(received.labels, expected);
    assert_eq!(received.series, 1);
    assert_eq!(received.header("x-scope-orgid"), Some("team-a"));
    assert_eq!(received.header("authorization"), Some(BASIC));
    assert_eq!(received.header("content-type"), Some("application/proto"));
    assert_eq!(received.header("connect-protocol-version"), Some("1"));
    assert_eq!(received.sample_id.len(), 36);
    assert_eq!(received.raw_profile, profile, "the stored bytes, as they are");
    let sent = alertprof::profile::decode_profile(received.raw_profile.as_slice(), 1 << 20).unwrap();
    let stored = alertprof::profile::decode_profile(profile, 1 << 20).unwrap();
    assert_eq!(sent, stored);
    assert!(sent.string_table.contains(&format!("main.work{n}")));
}

/// With Pyroscope down, pushes wait on disk (their stored profiles deleted meanwhile) and
/// are retried; once it is up on the same address, each arrives exactly once, whole, and
/// the queue is left empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_then_up_loses_nothing() {
    let setup = Setup::new(QueueLimits::default());
    let addr = closed_port().await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    let profiles = setup.enqueue(1..=5);
    wait_until("retried twice", || setup.count(PushResult::Retry) >= 2).await;
    assert_eq!(setup.queue.depth().entries, 5);
    assert_eq!(setup.metrics.queue_entries.get(), 5);
    assert_eq!(setup.files(), 10, "an entry and a profile each");

    let (pyroscope, _server) = Pyroscope::start(TcpListener::bind(addr).await.unwrap(), ok()).await;
    wait_until("all pushed", || setup.count(PushResult::Ok) == 5).await;
    let mut captures = pyroscope.captures();
    captures.sort();
    assert_eq!(captures, ["cap-1", "cap-2", "cap-3", "cap-4", "cap-5"], "each exactly once");
    for received in pyroscope.received() {
        let n: usize = received.capture()[4..].parse().unwrap();
        check_push(&received, &profiles[n - 1]);
    }
    assert_eq!(setup.queue.depth().entries, 0);
    assert_eq!((setup.metrics.queue_entries.get(), setup.metrics.queue_bytes.get()), (0, 0));
    assert_eq!(setup.files(), 0);
    assert_eq!(setup.count(PushResult::Rejected) + setup.count(PushResult::DroppedFull), 0);
    worker.stop().await;
}

/// Pushes pending when alertprof stops are taken up by the next queue over the same
/// directory, and all arrive, oldest first, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_pending_pushes() {
    let mut setup = Setup::new(QueueLimits::default());
    let addr = closed_port().await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    let profiles = setup.enqueue(1..=4);
    wait_until("retried", || setup.count(PushResult::Retry) >= 1).await;
    worker.stop().await;

    setup.reopen();
    assert_eq!(setup.queue.depth().entries, 4);
    assert_eq!(setup.metrics.queue_entries.get(), 4);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (pyroscope, _server) = Pyroscope::start(listener, ok()).await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    wait_until("all pushed", || setup.count(PushResult::Ok) == 4).await;
    assert_eq!(pyroscope.captures(), ["cap-1", "cap-2", "cap-3", "cap-4"]);
    for (received, profile) in pyroscope.received().iter().zip(&profiles) {
        check_push(received, profile);
    }
    assert_eq!(setup.files(), 0);
    worker.stop().await;
}

/// A push Pyroscope refuses (400 with a Connect error) is dropped at once, not retried,
/// with Connect's reason in the log; the next push goes on.
#[tokio::test]
async fn refused_pushes_are_dropped() {
    let logs = Logs::default();
    let _logging = tracing::subscriber::set_default(subscriber(logs.clone()));
    let setup = Setup::new(QueueLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer: Answer = Arc::new(|received, _| match received.capture() {
        "cap-1" => connect_error(StatusCode::BAD_REQUEST, "invalid_argument", "profile is too old"),
        _ => taken(),
    });
    let (pyroscope, _server) = Pyroscope::start(listener, answer).await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    setup.enqueue(1..=2);
    wait_until("both done", || setup.count(PushResult::Ok) + setup.count(PushResult::Rejected) == 2).await;
    worker.stop().await;
    assert_eq!(pyroscope.captures(), ["cap-1", "cap-2"], "cap-1 tried once only");
    assert_eq!((setup.count(PushResult::Rejected), setup.count(PushResult::Retry)), (1, 0));
    assert_eq!(setup.queue.depth().entries, 0);
    let logs = logs.text();
    let refused = logs.lines().find(|line| line.contains("Pyroscope refused a push")).expect("a log line");
    assert!(refused.contains("push=cap-1"), "{refused}");
    assert!(refused.contains("status=400"), "{refused}");
    assert!(refused.contains("invalid_argument: profile is too old"), "{refused}");
    assert!(!logs.contains("s3cret") && !logs.contains("YWxlcnRwcm9m"), "no secret in the logs");
}

/// 503 and 500 are retried with backoff; 429 too, not before its `Retry-After`; the push
/// then arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_or_failing_pyroscope_is_retried() {
    let setup = Setup::new(QueueLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer: Answer = Arc::new(|_, before| match before {
        0 => connect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "ingester ring not ready"),
        1 => {
            let mut busy =
                connect_error(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", "rate limited")?;
            busy.headers_mut().insert("retry-after", "1".parse().unwrap());
            Some(busy)
        }
        2 => Some((StatusCode::INTERNAL_SERVER_ERROR, "oops").into_response()),
        _ => taken(),
    });
    let (pyroscope, _server) = Pyroscope::start(listener, answer).await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    let profiles = setup.enqueue([1]);
    wait_until("pushed", || setup.count(PushResult::Ok) == 1).await;
    worker.stop().await;
    let received = pyroscope.received();
    assert_eq!(received.len(), 4);
    assert_eq!(setup.count(PushResult::Retry), 3);
    let after_429 = received[2].at - received[1].at;
    assert!(after_429 >= Duration::from_secs(1), "Retry-After: 1 honoured, waited {after_429:?}");
    let after_503 = received[1].at - received[0].at;
    assert!(after_503 < Duration::from_secs(1), "backoff alone is short here: {after_503:?}");
    check_push(&received[3], &profiles[0]);
}

/// A push whose answer never comes (Pyroscope hangs) times out and is pushed again: at
/// least once, not exactly once, and a repeat carries the same capture id and sample id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_pushed_again() {
    let setup = Setup::new(QueueLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer: Answer = Arc::new(|_, before| if before == 0 { None } else { taken() });
    let (pyroscope, _server) = Pyroscope::start(listener, answer).await;
    let worker = setup.start_worker(addr, Duration::from_millis(300), quick());
    setup.enqueue([1]);
    wait_until("pushed", || setup.count(PushResult::Ok) == 1).await;
    worker.stop().await;
    let received = pyroscope.received();
    assert_eq!(pyroscope.captures(), ["cap-1", "cap-1"]);
    assert_eq!(received[0].sample_id, received[1].sample_id);
    assert_eq!(setup.count(PushResult::Retry), 1);
}

/// Over either bound the oldest pushes are dropped and counted, never the caller blocked;
/// what is kept is the newest, and it all arrives. A profile over the byte bound alone is
/// refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_the_oldest() {
    let setup = Setup::new(QueueLimits { max_entries: 3, max_bytes: 1 << 30 });
    setup.enqueue(1..=5);
    assert_eq!(setup.queue.depth().entries, 3);
    assert_eq!(setup.count(PushResult::DroppedFull), 2);
    assert_eq!(setup.files(), 6);

    let one = setup.queue.depth().bytes / 3;
    let by_bytes = Setup::new(QueueLimits { max_entries: 100, max_bytes: 2 * one + one / 2 });
    by_bytes.enqueue(1..=4);
    assert_eq!(by_bytes.queue.depth().entries, 2);
    assert!(by_bytes.queue.depth().bytes <= 2 * one + one / 2);
    assert_eq!(by_bytes.count(PushResult::DroppedFull), 2);
    let tiny = Setup::new(QueueLimits { max_entries: 100, max_bytes: 10 });
    let error = tiny.queue.enqueue_blocking(&tiny.item(9)).unwrap_err();
    assert!(matches!(error, EnqueueError::TooLarge { max_bytes: 10, .. }), "{error}");
    assert_eq!((tiny.count(PushResult::DroppedFull), tiny.queue.depth().entries), (1, 0));

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (pyroscope, _server) = Pyroscope::start(listener, ok()).await;
    let worker = setup.start_worker(addr, Duration::from_secs(5), quick());
    wait_until("pushed", || setup.count(PushResult::Ok) == 3).await;
    worker.stop().await;
    assert_eq!(pyroscope.captures(), ["cap-3", "cap-4", "cap-5"]);
}

/// A push whose capture's retention has ended is dropped and counted: at once when it is
/// queued, and while it waits for a Pyroscope that stays down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_pushes_are_dropped() {
    let setup = Setup::new(QueueLimits::default());
    let past = PushItem { expires_at: chrono::Utc::now() - chrono::Duration::seconds(1), ..setup.item(1) };
    let error = setup.queue.enqueue_blocking(&past).unwrap_err();
    assert!(matches!(error, EnqueueError::Expired { .. }), "{error}");
    assert_eq!(setup.count(PushResult::DroppedExpired), 1);

    let worker = setup.start_worker(closed_port().await, Duration::from_secs(5), quick());
    let soon =
        PushItem { expires_at: chrono::Utc::now() + chrono::Duration::milliseconds(300), ..setup.item(2) };
    setup.queue.enqueue_blocking(&soon).unwrap();
    wait_until("dropped as expired", || setup.count(PushResult::DroppedExpired) == 2).await;
    assert!(setup.count(PushResult::Retry) >= 1);
    assert_eq!(setup.queue.depth().entries, 0);
    assert_eq!(setup.files(), 0);
    worker.stop().await;
}

/// Shutdown stops the worker at once, in the middle of a push to a Pyroscope that never
/// answers as in a long backoff; the push stays queued for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt() {
    let setup = Setup::new(QueueLimits::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hang: Answer = Arc::new(|_, _| None);
    let (pyroscope, _server) = Pyroscope::start(listener, hang).await;
    let worker = setup.start_worker(addr, Duration::from_secs(3600), quick());
    setup.enqueue([1]);
    wait_until("a push in flight", || pyroscope.received().len() == 1).await;
    worker.stop().await;
    assert_eq!(setup.queue.depth().entries, 1);

    let long = Backoff { first: Duration::from_secs(3600), ..quick() };
    let worker = setup.start_worker(closed_port().await, Duration::from_secs(5), long);
    wait_until("in backoff", || setup.count(PushResult::Retry) == 1).await;
    worker.stop().await;
    assert_eq!(setup.queue.depth().entries, 1);
    assert_eq!(setup.count(PushResult::Ok), 0);
}

/// The log lines written while a test runs, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

fn subscriber(logs: Logs) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::fmt().with_ansi(false).with_writer(move || logs.clone()).finish()
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
