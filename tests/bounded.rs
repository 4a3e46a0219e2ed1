//! alertprof bounded under hostile input: profiles that say too much, clients that go away.

mod support;

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::IntoResponse;
use serde_json::{Value, json};
use support::profiles::{deep_stacks, inlined_bomb, profile};
use support::{Running, client, fake_target_with_request, payload};

const RUNNING: &str = "alertprof_analyses_running";

/// A target serving a heap profile per path: `/bomb` (a kilobyte that expands to 250
/// million frames), `/deep` (5,000 samples of 5,000-frame stacks), anything else small.
async fn target() -> String {
    let (bomb, deep) = (inlined_bomb(1000, 250_000), deep_stacks(5000, 5000));
    let small = profile(&["main.main", "main.work"], &[(&[2, 1], [1, 10])]);
    let addr = fake_target_with_request(move |request: Request| {
        let body = match request.uri().path() {
            path if path.starts_with("/bomb") => bomb.clone(),
            path if path.starts_with("/deep") => deep.clone(),
            _ => small.clone(),
        };
        async move { body.into_response() }
    })
    .await;
    format!("http://{addr}")
}

fn config(target: &str) -> String {
    format!(
        "storage: {{dir: \"{{data}}\"}}\ngate: {{max_in_flight: 1}}\ntargets:\n\
         - {{name: bomb, pprof_url: \"{target}/bomb\", alert_labels: {{job: bomb}}}}\n\
         - {{name: deep, pprof_url: \"{target}/deep\", alert_labels: {{job: deep}}}}\n\
         - {{name: small, pprof_url: \"{target}/small\", alert_labels: {{job: small}}}}\n\
         rules: [{{name: heap, alert_labels: {{alertname: Heap}}, capture: [heap], cooldown: 0s}}]\n"
    )
}

async fn alert(running: &Running, job: &str) {
    let (status, _) = running.post_alerts(&payload(&[(json!({"alertname": "Heap", "job": job}), job)])).await;
    assert_eq!(status, 200);
}

/// The decision that captured `target`, once there is one.
async fn captured(running: &Running, target: &str, within: Duration) -> Value {
    let decision = support::eventually(&format!("a decision on {target}"), within, async || {
        let decisions = running.get_json("/api/v1/decisions").await;
        decisions.as_array().unwrap().iter().find(|d| d["target"] == target).cloned()
    })
    .await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    decision
}

/// Profiles that say too much are kept, and their analysis says why it was cut short; a
/// long analysis holds no capture's place, so another target is captured meanwhile (with
/// one place in flight); the flame graph of a profile of 250 million frames answers within
/// seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_profiles_are_kept_and_bounded() {
    let target = target().await;
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(&config(&target), data.path()).await;

    alert(&running, "deep").await;
    running.wait_metric(RUNNING, Duration::from_secs(20), |n| n == 1.0).await;
    alert(&running, "small").await;
    captured(&running, "small", Duration::from_secs(10)).await;
    assert_eq!(running.metric(RUNNING).await, 1.0, "the deep profile is still being analyzed");
    let deep = captured(&running, "deep", Duration::from_secs(60)).await;
    let id = deep["captures"][0].as_str().unwrap();
    let meta = running.get_json(&format!("/api/v1/captures/{id}")).await;
    let cut = meta["summary"]["cut_short"].as_str().unwrap();
    assert!(cut.contains("stacks deeper than 2048 frames were cut to their leaf end"), "{cut}");
    // Every stack, unless a loaded machine made the walk outlast its time budget (20 s):
    // then the rest are left out, and it says so.
    assert!(cut.starts_with("5000 stacks ") || cut.ends_with("took over 20s, and were left out"), "{cut}");

    alert(&running, "bomb").await;
    let bomb = captured(&running, "bomb", Duration::from_secs(30)).await;
    let id = bomb["captures"][0].as_str().unwrap();
    let meta = running.get_json(&format!("/api/v1/captures/{id}")).await;
    assert_eq!(meta["summary"]["top"][0]["function"], "main.f");
    assert!(meta["summary"]["cut_short"].as_str().unwrap().contains("cut to their leaf end"), "{meta}");
    let asked = Instant::now();
    let graph =
        client().get(running.url(&format!("/api/v1/captures/{id}/flamegraph.svg"))).send().await.unwrap();
    assert_eq!(graph.status(), 200);
    let svg = graph.text().await.unwrap();
    // Within the analysis's time budget (20 s), not the time 250 million frames would take.
    assert!(asked.elapsed() < Duration::from_secs(30), "took {:?}", asked.elapsed());
    assert!(svg.contains("cut short: 1 stacks deeper than 2048 frames"));
    running.stop().await;
}

/// A client that asks for a long analysis and goes away stops it: the work ends within a
/// moment, not when its own time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_stops_its_analysis() {
    let target = target().await;
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(&config(&target), data.path()).await;
    alert(&running, "deep").await;
    let deep = captured(&running, "deep", Duration::from_secs(60)).await;
    let id = deep["captures"][0].as_str().unwrap().to_string();
    assert_eq!(running.metric(RUNNING).await, 0.0);

    // The diff of the capture with itself walks it twice: seconds of work.
    let url = running.url(&format!("/api/v1/captures/{id}/diff?base={id}"));
    let asking = tokio::spawn(async move { client().get(url).send().await });
    running.wait_metric(RUNNING, Duration::from_secs(10), |n| n == 1.0).await;
    asking.abort();
    let left = Instant::now();
    running.wait_metric(RUNNING, Duration::from_secs(5), |n| n == 0.0).await;
    assert!(left.elapsed() < Duration::from_secs(3), "the analysis went on for {:?}", left.elapsed());
    running.stop().await;
}

/// Opens `count` connections that send the start of a request and then nothing more.
async fn half_sent(
    addr: std::net::SocketAddr,
    count: usize,
    start: &'static [u8],
) -> Vec<tokio::net::TcpStream> {
    let mut connections = Vec::new();
    for _ in 0..count {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, start).await.unwrap();
        connections.push(stream);
    }
    connections
}

/// Reads what the server sends until it closes the connection; `None` if it has not
/// within `within`.
async fn until_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<String> {
    let mut answer = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(stream, &mut answer);
    match tokio::time::timeout(within, read).await {
        Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
        Err(_) => None,
    }
}

/// Connections that never finish their headers are closed after `http.header_timeout`,
/// those past `http.max_connections` wait their turn and are closed too, and the service
/// answers throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    let data = tempfile::tempdir().unwrap();
    let config = "storage: {dir: \"{data}\"}\nhttp: {header_timeout: 1s, max_connections: 8}\n";
    let running = Running::start(config, data.path()).await;
    let started = Instant::now();
    let mut slow = half_sent(running.addr, 20, b"POST /api/v1/alerts HTTP/1.1\r\nHost: alertprof\r\n").await;
    for stream in &mut slow {
        assert!(until_closed(stream, Duration::from_secs(10)).await.is_some(), "still open after 10 s");
    }
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert_eq!(running.get_text("/-/ready").await, "alertprof is Ready.\n");
    running.stop().await;
}

/// A body that trickles is cut off after `http.body_timeout`, with 408 and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_is_cut_off() {
    let data = tempfile::tempdir().unwrap();
    let running = Running::start("storage: {dir: \"{data}\"}\nhttp: {body_timeout: 1s}\n", data.path()).await;
    let start =
        b"POST /api/v1/alerts HTTP/1.1\r\nHost: alertprof\r\nContent-Length: 1000\r\n\r\n{\"alerts\": [";
    let mut slow = half_sent(running.addr, 1, start).await;
    let answer = until_closed(&mut slow[0], Duration::from_secs(10)).await.expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("payload not received within http.body_timeout (1s)"), "{answer}");
    assert_eq!(running.metric("alertprof_webhook_requests_total{code=\"408\"}").await, 1.0);
    running.stop().await;
}

/// Ten alerts in one payload for a queue of four all end in captures: the payload is taken
/// at once and its jobs go in as the queue drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_larger_than_the_queue_gets_in() {
    let target = target().await;
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ngate: {{queue_size: 4}}\n\
         targets: [{{name: small, pprof_url: \"{target}/small\", alert_labels: {{job: small}}}}]\n\
         rules: [{{name: heap, alert_labels: {{alertname: Heap}}, capture: [heap], cooldown: 0s}}]\n"
    );
    let running = Running::start(&config, data.path()).await;
    let alerts: Vec<(Value, String)> =
        (0..10).map(|n| (json!({"alertname": "Heap", "job": "small"}), format!("fp{n}"))).collect();
    let alerts: Vec<(Value, &str)> =
        alerts.iter().map(|(labels, fp)| (labels.clone(), fp.as_str())).collect();
    let (status, answer) = running.post_alerts(&payload(&alerts)).await;
    assert_eq!((status, answer), (200, json!({"accepted": 10, "ignored": 0})));
    let captured = "alertprof_decisions_total{outcome=\"captured\"}";
    running.wait_metric(captured, Duration::from_secs(30), |n| n == 10.0).await;
    running.stop().await;
}

/// Forty first requests at once for a flame graph not drawn yet all get the whole graph.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_flame_graph_requests_at_once() {
    let target = target().await;
    let data = tempfile::tempdir().unwrap();
    let running = Running::start(&config(&target), data.path()).await;
    alert(&running, "small").await;
    let decision = captured(&running, "small", Duration::from_secs(10)).await;
    let url = running
        .url(&format!("/api/v1/captures/{}/flamegraph.svg", decision["captures"][0].as_str().unwrap()));
    let asks: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let answer = client().get(url).send().await.unwrap();
                (answer.status().as_u16(), answer.bytes().await.unwrap())
            })
        })
        .collect();
    let mut graphs = Vec::new();
    for ask in asks {
        graphs.push(ask.await.unwrap());
    }
    assert!(
        graphs.iter().all(|(status, svg)| *status == 200 && svg.starts_with(b"<?xml")),
        "an empty or failed graph"
    );
    assert!(graphs.windows(2).all(|pair| pair[0].1 == pair[1].1), "the same graph every time");
    running.stop().await;
}
