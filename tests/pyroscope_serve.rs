//! Kept profiles pushed to Pyroscope, as users run it: the compiled `alertprof serve` with a
//! `pyroscope` section (every key of it, and a target's `service_name`), the Go demo target,
//! and the stand-in Pyroscope of `support::pyroscope`, which decodes each push with the
//! vendored protos. Pyroscope down then up, a restart with pushes pending, refusals and
//! failures, the recorder's segments, a reload; the links in Grafana and on the page.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};
use support::grafana::Grafana;
use support::pyroscope::{Answer, Pyroscope, Received, connect_error, ok, taken};
use support::{Demo, Serve, client, closed_port, eventually, files_in, payload};

const WITHIN: Duration = Duration::from_secs(60);

/// One firing `Spike` alert for the demo target, starting now.
fn spike(fingerprint: &str) -> Value {
    let mut body = payload(&[(json!({"alertname": "Spike", "job": "demo"}), fingerprint)]);
    body["alerts"][0]["startsAt"] = json!(chrono::Utc::now().to_rfc3339());
    body
}

/// Posts a `Spike` alert and waits for its decision, which must have captured; returns it.
async fn capture(serve: &Serve, fingerprint: &str) -> Value {
    let answer =
        client().post(format!("{}/api/v1/alerts", serve.base)).json(&spike(fingerprint)).send().await;
    assert_eq!(answer.unwrap().status(), 200);
    let decision = eventually(&format!("the decision on {fingerprint}"), WITHIN, async || {
        let decisions = serve.get("/api/v1/decisions?limit=1000").await;
        let found = decisions.as_array().unwrap().iter().find(|d| d["fingerprint"] == fingerprint).cloned();
        found.ok_or_else(|| decisions.to_string())
    })
    .await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    decision
}

/// The capture ids of a decision, by kind.
async fn by_kind(serve: &Serve, decision: &Value) -> Vec<(String, String)> {
    let mut ids = Vec::new();
    for id in decision["captures"].as_array().unwrap() {
        let meta = serve.get(&format!("/api/v1/captures/{}", id.as_str().unwrap())).await;
        ids.push((meta["kind"].as_str().unwrap().to_string(), meta["id"].as_str().unwrap().to_string()));
    }
    ids
}

async fn metric(serve: &Serve, series: &str) -> f64 {
    support::metric(&serve.get_raw("/metrics").await.text().await.unwrap(), series)
}

/// Waits until a series of alertprof's /metrics satisfies `ok`.
async fn wait_metric(serve: &Serve, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    eventually(series, WITHIN, async || {
        let value = metric(serve, series).await;
        if ok(value) { Ok(value) } else { Err(value.to_string()) }
    })
    .await
}

fn pushes(result: &str) -> String {
    format!("alertprof_pyroscope_pushes_total{{result=\"{result}\"}}")
}

/// Waits until the stand-in got pushes that `enough` says are all, and returns them.
async fn wait_received(
    pyroscope: &Pyroscope,
    what: &str,
    enough: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    eventually(what, WITHIN, async || {
        let received = pyroscope.received();
        if enough(&received) { Ok(received) } else { Err(format!("{:?}", labels_of(&received))) }
    })
    .await
}

fn labels_of(received: &[Received]) -> Vec<&std::collections::BTreeMap<String, String>> {
    received.iter().map(|r| &r.labels).collect()
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The config's `pyroscope:` section and the rest, the demo as the target `demo`.
fn config(demo: &Demo, pyroscope: &str, target_extra: &str, rules: &str) -> String {
    format!(
        "external_url: http://alertprof.example:9731\nstorage: {{dir: data}}\n{pyroscope}\
         targets:\n{}{target_extra}rules:\n{rules}",
        demo.target()
    )
}

/// With Pyroscope down, the kept heap and goroutine profiles wait on disk under
/// `storage.dir` (the goroutine text dump is no profile.proto and is not queued); once it
/// is up at the same address, each arrives once, whole, with the documented labels, the
/// tenant and basic auth, under the target's `service_name`. The Grafana annotation and
/// the capture's page link each pushed profile's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_then_up_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let (grafana, grafana_addr) = Grafana::start("glsa_pyro", 0, false).await;
    std::fs::write(dir.path().join("grafana-token"), "glsa_pyro\n").unwrap();
    std::fs::write(dir.path().join("pyroscope-password"), "s3cret-pw\n").unwrap();
    let down = closed_port();
    let section = format!(
        "grafana: {{url: \"http://{grafana_addr}\", token_file: grafana-token}}\n\
         pyroscope:\n  url: {}\n  tenant: team-a\n  \
         basic_auth: {{username: alertprof, password_file: pyroscope-password}}\n  \
         ui_url: http://pyroscope.example:4040/\n",
        down.url()
    );
    let rules =
        "  - {name: spike, alert_labels: {alertname: Spike}, capture: [heap, goroutine, goroutine_text]}\n";
    let serve =
        Serve::start(dir.path(), &config(&demo, &section, "    service_name: checkout\n", rules), None).await;

    let decision = capture(&serve, "down-then-up").await;
    let ids = by_kind(&serve, &decision).await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    wait_metric(&serve, &pushes("retry"), |n| n >= 1.0).await;
    assert_eq!(metric(&serve, "alertprof_pyroscope_queue_entries").await, 2.0, "heap and goroutine wait");
    let queue = dir.path().join("data/.pyroscope");
    assert_eq!(files_in(&queue).len(), 4, "an entry and a profile each: {:?}", files_in(&queue));

    let (pyroscope, _server) = Pyroscope::start(down.open(), ok()).await;
    wait_metric(&serve, &pushes("ok"), |n| n == 2.0).await;
    let received = pyroscope.received();
    assert_eq!(received.len(), 2, "each once: {:?}", labels_of(&received));
    for (kind, id) in ids.iter().filter(|(kind, _)| kind != "goroutine_text") {
        let push = received.iter().find(|r| r.capture() == id).unwrap_or_else(|| panic!("{id} not pushed"));
        let name = if kind == "heap" { "memory" } else { "goroutine" };
        let instance = demo.addr.to_string();
        let expected = labels(&[
            ("__name__", name),
            ("__delta__", "false"),
            ("service_name", "checkout"),
            ("alertprof_capture_id", id),
            ("alertname", "Spike"),
            ("alertprof_rule", "spike"),
            ("instance", &instance),
        ]);
        assert_eq!(push.labels, expected);
        assert_eq!(push.header("x-scope-orgid"), Some("team-a"));
        let basic = base64::engine::general_purpose::STANDARD.encode("alertprof:s3cret-pw");
        assert_eq!(push.header("authorization"), Some(format!("Basic {basic}").as_str()));
        assert_eq!(push.header("content-type"), Some("application/proto"));
        assert_eq!(push.header("connect-protocol-version"), Some("1"));
        let stored = serve.get_raw(&format!("/api/v1/captures/{id}/profile")).await.bytes().await.unwrap();
        assert_eq!(push.raw_profile, stored.to_vec(), "{kind}: the stored profile, byte for byte");
        assert!(!push.profile().sample.is_empty(), "{kind}");
        let meta = serve.get(&format!("/api/v1/captures/{id}")).await;
        assert_eq!(meta["pyroscope"], json!({"service_name": "checkout"}), "{meta}");
    }
    assert_eq!(metric(&serve, "alertprof_pyroscope_queue_entries").await, 0.0);
    assert_eq!(metric(&serve, "alertprof_pyroscope_queue_bytes").await, 0.0);
    assert!(files_in(&queue).is_empty(), "{:?}", files_in(&queue));
    links_to_views(&serve, &grafana, &ids).await;
    let status = serve.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(dir.path().join("alertprof.log")).unwrap();
    assert!(!log.contains("s3cret-pw") && !log.contains("glsa_pyro"), "a secret in the log:\n{log}");
}

/// The annotation and the page of each pushed capture link its view in Pyroscope's UI
/// (its type, service and capture id); the goroutine text dump's link none.
async fn links_to_views(serve: &Serve, grafana: &Grafana, ids: &[(String, String)]) {
    let annotations = eventually("three annotations", WITHIN, async || {
        let annotations = grafana.annotations.lock().unwrap().clone();
        if annotations.len() == 3 { Ok(annotations) } else { Err(format!("{annotations:?}")) }
    })
    .await;
    for (kind, id) in ids {
        let view = format!("alertprof_capture_id%3D%22{id}%22");
        let text = annotations
            .iter()
            .map(|a| a["text"].as_str().unwrap())
            .find(|text| text.contains(&format!("/api/v1/captures/{id}/profile")))
            .unwrap_or_else(|| panic!("no annotation of {id}: {annotations:?}"));
        let page = serve.get_raw(&format!("/captures/{id}")).await.text().await.unwrap();
        if kind == "goroutine_text" {
            assert!(!text.contains("Open in Pyroscope") && !page.contains("pyroscope-link"), "{text}");
            continue;
        }
        let link = "<a href=\"http://pyroscope.example:4040/?query=";
        assert!(
            text.contains(link) && text.contains(&view) && text.contains(">Open in Pyroscope</a>"),
            "{text}"
        );
        assert!(text.contains("&amp;from="), "escaped as HTML: {text}");
        assert!(page.contains("id=\"pyroscope-link\"") && page.contains(&view), "{page}");
        assert!(page.contains("service <code>checkout</code>"), "{page}");
    }
}

/// Pushes pending when alertprof stops (SIGTERM, Pyroscope down) stay on disk; the next
/// start takes them up and pushes them, with the bearer token, once each, with what it
/// captures after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_pending_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    std::fs::write(dir.path().join("pyroscope-token"), "pyro-token\n").unwrap();
    let down = closed_port();
    let section = format!("pyroscope: {{url: {}, bearer_token_file: pyroscope-token}}\n", down.url());
    let rules = "  - {name: spike, alert_labels: {alertname: Spike}, capture: [heap], cooldown: 0s}\n";
    let text = config(&demo, &section, "", rules);
    let serve = Serve::start(dir.path(), &text, None).await;
    let before = capture(&serve, "before-restart").await;
    wait_metric(&serve, &pushes("retry"), |n| n >= 1.0).await;
    assert_eq!(metric(&serve, "alertprof_pyroscope_queue_entries").await, 1.0);
    let status = serve.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let queue = dir.path().join("data/.pyroscope");
    assert_eq!(files_in(&queue).len(), 2, "{:?}", files_in(&queue));

    let (pyroscope, _server) = Pyroscope::start(down.open(), ok()).await;
    let serve = Serve::start(dir.path(), &text, None).await;
    serve.wait_log("Pushes to Pyroscope taken up from the queue.", WITHIN).await;
    let after = capture(&serve, "after-restart").await;
    let ids: Vec<String> =
        [&before, &after].iter().map(|d| d["captures"][0].as_str().unwrap().to_string()).collect();
    wait_received(&pyroscope, "both pushes", |r| r.len() >= 2).await;
    wait_metric(&serve, "alertprof_pyroscope_queue_entries", |n| n == 0.0).await;
    let mut captures = pyroscope.captures();
    captures.sort();
    assert_eq!(captures, ids, "each once");
    for push in pyroscope.received() {
        assert_eq!(push.header("authorization"), Some("Bearer pyro-token"));
        assert_eq!(push.header("x-scope-orgid"), None, "no tenant configured");
        assert_eq!((push.label("service_name"), push.label("__name__")), (Some("demo"), Some("memory")));
    }
}

/// A push Pyroscope refuses with a 4xx is dropped at once and logged with Connect's reason;
/// a 503, then a 429 with `Retry-After`, are retried (not before it says) until taken. A
/// `perf` capture, where this host allows perf events, is pushed as `process_cpu`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_dropped_failures_retried() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let perf = match alertprof::perf::check_access() {
        Ok(()) => ", perf",
        Err(error) => {
            eprintln!("SKIPPED the perf capture: perf events are unavailable on this host: {error}");
            ""
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let answer: Answer = Arc::new(|push, before| match (push.label("__name__"), before) {
        (Some("memory"), _) => {
            connect_error(StatusCode::BAD_REQUEST, "invalid_argument", "profile is too old")
        }
        (Some("goroutine"), 0) => {
            connect_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "ring not ready")
        }
        (Some("goroutine"), 1) => {
            let mut busy = connect_error(StatusCode::TOO_MANY_REQUESTS, "resource_exhausted", "slow down")?;
            busy.headers_mut().insert("retry-after", "2".parse().unwrap());
            Some(busy)
        }
        _ => taken(),
    });
    let (pyroscope, _server) = Pyroscope::start(listener, answer).await;
    let section = format!("pyroscope: {{url: \"{url}\"}}\n");
    let rules = format!(
        "  - {{name: spike, alert_labels: {{alertname: Spike}}, capture: [heap, goroutine{perf}], seconds: 1}}\n"
    );
    let serve = Serve::start(dir.path(), &config(&demo, &section, "", &rules), None).await;
    demo.get("/burn?seconds=10&workers=1").await;
    let decision = capture(&serve, "refused").await;
    let ids = by_kind(&serve, &decision).await;
    let id = |kind: &str| ids.iter().find(|(k, _)| k == kind).unwrap().1.clone();
    let taken_count = if perf.is_empty() { 1.0 } else { 2.0 };
    wait_metric(&serve, &pushes("ok"), |n| n == taken_count).await;
    assert_eq!(metric(&serve, &pushes("rejected")).await, 1.0);
    assert_eq!(metric(&serve, &pushes("retry")).await, 2.0);
    assert_eq!(metric(&serve, "alertprof_pyroscope_queue_entries").await, 0.0);
    let received = pyroscope.received();
    let of = |id: &str| received.iter().filter(|r| r.capture() == id).collect::<Vec<_>>();
    assert_eq!(of(&id("heap")).len(), 1, "a refused push is not tried again");
    let goroutine = of(&id("goroutine"));
    assert_eq!(goroutine.len(), 3, "503, 429, taken");
    assert!(goroutine.iter().all(|r| r.sample_id == goroutine[0].sample_id), "the same sample on every try");
    let after_429 = goroutine[2].at - goroutine[1].at;
    assert!(after_429 >= Duration::from_secs(2), "Retry-After: 2 honoured, tried again after {after_429:?}");
    if !perf.is_empty() {
        let pushed = of(&id("perf"));
        assert_eq!(pushed.len(), 1);
        assert_eq!(pushed[0].label("__name__"), Some("process_cpu"));
        assert_eq!(pushed[0].label("instance"), None, "perf samples a process, not an endpoint");
        assert!(!pushed[0].profile().sample.is_empty());
    }
    let line = serve.wait_log("Pyroscope refused a push", WITHIN).await;
    assert!(line.contains(&format!("push={}", id("heap"))), "{line}");
    assert!(line.contains("status=400") && line.contains("invalid_argument: profile is too old"), "{line}");
}

/// With `pyroscope.recorder: true`, the recorder's segments go to Pyroscope as the target's
/// continuous series (no capture id, no `__delta__`), and a capture merged from them over
/// its lookback as a profile of its own, linked in Grafana's Profiles Drilldown. A reload
/// that changes the section restarts the pushes with it: the new tenant from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_segments_and_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (pyroscope, _server) = Pyroscope::start(listener, ok()).await;
    let section = |tenant: &str| {
        format!(
            "pyroscope: {{url: \"{url}\", tenant: {tenant}, recorder: true, \
             ui_url: \"http://grafana.example/a/grafana-pyroscope-app\"}}\n"
        )
    };
    let recorder = "    recorder: {cpu: 1s, heap: 1s, goroutine: off, keep: 1m}\n";
    let rules =
        "  - {name: late, alert_labels: {alertname: Spike}, capture: [cpu], seconds: 1, lookback: 3s}\n";
    let serve = Serve::start(dir.path(), &config(&demo, &section("before"), recorder, rules), None).await;
    let segments =
        |r: &[Received]| -> Vec<Received> { r.iter().filter(|r| r.capture().is_empty()).cloned().collect() };
    let both = |r: &[Received]| {
        let names: Vec<_> =
            segments(r).iter().map(|s| s.label("__name__").unwrap_or("").to_string()).collect();
        names.iter().any(|n| n == "process_cpu") && names.iter().any(|n| n == "memory")
    };
    let received = wait_received(&pyroscope, "cpu and heap segments", both).await;
    let instance = demo.addr.to_string();
    for segment in segments(&received) {
        let name = segment.label("__name__").unwrap();
        let expected = labels(&[("__name__", name), ("service_name", "demo"), ("instance", &instance)]);
        assert_eq!(segment.labels, expected);
        assert_eq!(segment.header("x-scope-orgid"), Some("before"));
        assert!(!segment.profile().sample_type.is_empty());
    }

    let decision = capture(&serve, "lookback").await;
    let id = decision["captures"][0].as_str().unwrap().to_string();
    let meta = serve.get(&format!("/api/v1/captures/{id}")).await;
    assert!(meta["segments"].as_array().is_some_and(|s| !s.is_empty()), "merged from the recorder: {meta}");
    let received =
        wait_received(&pyroscope, "the merged capture", |r| r.iter().any(|r| r.capture() == id)).await;
    let push = received.iter().find(|r| r.capture() == id).unwrap();
    assert_eq!((push.label("__name__"), push.label("__delta__")), (Some("process_cpu"), Some("false")));
    assert_eq!(push.label("alertprof_rule"), Some("late"));
    let stored = serve.get_raw(&format!("/api/v1/captures/{id}/profile")).await.bytes().await.unwrap();
    assert_eq!(push.raw_profile, stored.to_vec());
    let page = serve.get_raw(&format!("/captures/{id}")).await.text().await.unwrap();
    let drilldown =
        "href=\"http://grafana.example/a/grafana-pyroscope-app/explore?explorationType=flame-graph";
    assert!(page.contains(drilldown) && page.contains(">Open in Grafana</a>"), "{page}");
    assert!(page.contains(&format!("var-filters=alertprof_capture_id%7C%3D%7C{id}")), "{page}");

    reload(&serve, dir.path(), &config(&demo, &section("after"), recorder, rules)).await;
    serve.wait_log("Pyroscope settings changed", WITHIN).await;
    let seen = pyroscope.received().len();
    let received = wait_received(&pyroscope, "a push with the new tenant", |r| {
        r[seen..].iter().any(|r| r.header("x-scope-orgid") == Some("after"))
    })
    .await;
    let switched = received.iter().position(|r| r.header("x-scope-orgid") == Some("after")).unwrap();
    assert!(
        received[switched..].iter().all(|r| r.header("x-scope-orgid") == Some("after")),
        "none with the old"
    );
}

/// Rewrites the config file and reloads it through the API.
async fn reload(serve: &Serve, dir: &Path, text: &str) {
    std::fs::write(dir.join("alertprof.yaml"), format!("listen_address: 127.0.0.1:0\n{text}")).unwrap();
    let answer = client().post(format!("{}/-/reload", serve.base)).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
}

/// `check-config` names each mistake of the `pyroscope` section and a target's
/// `service_name` at its place, and exits 1.
#[test]
fn check_config_names_the_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertprof.yaml");
    std::fs::write(
        &path,
        "pyroscope: {url: \"http://pyroscope:4040/?x=1\", tenant: \"a b\", bearer_token_file: nope, recorder: true}\n\
         targets: [{name: api, pprof_url: \"http://127.0.0.1:6060\", service_name: \"\"}]\n",
    )
    .unwrap();
    let output = Command::new(Serve::binary()).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    for problem in [
        "pyroscope.url: \"http://pyroscope:4040/?x=1\" has a query",
        "pyroscope.tenant: \"a b\" is not a tenant id",
        "pyroscope.bearer_token_file: cannot read",
        "targets[0].service_name: is empty",
    ] {
        assert!(text.contains(problem), "{problem:?} not in:\n{text}");
    }
}
