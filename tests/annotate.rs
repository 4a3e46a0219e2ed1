//! Grafana annotations after captures: the documented request, retries of 5xx, no retries
//! of 4xx, and a Grafana that is down never costing a capture.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::grafana::Grafana;
use support::{Demo, Running, payload};

fn config(demo: &Demo, grafana: &str, external: &str) -> String {
    format!(
        r#"
external_url: {external}
storage: {{dir: "{{data}}"}}
grafana:
  url: {grafana}
  token_file: grafana-token
  dashboard_uid: alertprof
  tags: [alertprof]
  max_attempts: 3
  retry_backoff: 50ms
targets:
  - {{name: demo, pprof_url: "{}", alert_labels: {{job: demo}}}}
rules:
  - {{name: leak, alert_labels: {{alertname: GoroutineSpike}}, capture: [goroutine, heap]}}
"#,
        demo.url()
    )
}

async fn start(grafana_url: &str, demo: &Demo, data: &tempfile::TempDir) -> Running {
    std::fs::write(data.path().join("grafana-token"), "glsa_test\n").unwrap();
    Running::start(&config(demo, grafana_url, "http://alertprof.example:9731"), data.path()).await
}

fn alert() -> Value {
    payload(&[(json!({"alertname": "GoroutineSpike", "job": "demo"}), "fp")])
}

/// Each kept profile becomes a region annotation with the documented fields, tags, a text
/// with the trigger, and a link to the profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotation_per_capture() {
    let demo = Demo::start();
    let (grafana, addr) = Grafana::start("glsa_test", 0, false).await;
    let data = tempfile::tempdir().unwrap();
    let running = start(&format!("http://{addr}"), &demo, &data).await;
    running.post_alerts(&alert()).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    let annotated: Vec<i64> =
        decision["annotations"].as_array().unwrap().iter().map(|a| a["id"].as_i64().unwrap()).collect();
    assert_eq!(annotated.len(), 2);

    let annotations = grafana.annotations.lock().unwrap().clone();
    assert_eq!(annotations.len(), 2);
    let captures = running.get_json("/api/v1/captures").await;
    for capture in captures.as_array().unwrap() {
        let id = capture["id"].as_str().unwrap();
        let kind = capture["kind"].as_str().unwrap();
        let annotation = annotations
            .iter()
            .find(|a| a["text"].as_str().unwrap().contains(id))
            .unwrap_or_else(|| panic!("no annotation links {id}"));
        assert_eq!(annotation["dashboardUID"], "alertprof");
        assert_eq!(annotation["tags"], json!(["alertprof", "demo", "leak", kind, "GoroutineSpike"]));
        let started = chrono::DateTime::parse_from_rfc3339(capture["started_at"].as_str().unwrap()).unwrap();
        let finished =
            chrono::DateTime::parse_from_rfc3339(capture["finished_at"].as_str().unwrap()).unwrap();
        assert_eq!(annotation["time"], started.timestamp_millis());
        assert_eq!(annotation["timeEnd"], finished.timestamp_millis());
        let text = annotation["text"].as_str().unwrap();
        assert!(text.contains(&format!("<b>{kind}</b> profile of <b>demo</b>")), "{text}");
        assert!(text.contains("alert <b>GoroutineSpike</b>"), "{text}");
        if kind == "goroutine" {
            // Named by the code that started the goroutines, never the scheduler.
            let top = text.split("<br>Top (goroutine/count, by cum): ").nth(1).expect("a top line");
            assert!(!top.starts_with("runtime"), "{text}");
        }
        assert!(
            text.contains(&format!("href=\"http://alertprof.example:9731/api/v1/captures/{id}/profile\"")),
            "{text}"
        );
    }
    let metrics = running.get_text("/metrics").await;
    assert!(metrics.contains("alertprof_annotations_total{result=\"ok\"} 2"), "{metrics}");
    running.stop().await;
}

/// 503s are retried with backoff until Grafana answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_grafana_is_retried() {
    let demo = Demo::start();
    let (grafana, addr) = Grafana::start("glsa_test", 2, false).await;
    let data = tempfile::tempdir().unwrap();
    let running = start(&format!("http://{addr}"), &demo, &data).await;
    running.post_alerts(&alert()).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["annotations"].as_array().unwrap().len(), 2);
    assert!(decision["annotations"].as_array().unwrap().iter().all(|a| a["id"].is_i64()), "{decision}");
    assert_eq!(*grafana.requests.lock().unwrap(), 4, "two 503s, then two annotations");
    running.stop().await;
}

/// A 4xx (here a wrong token) is recorded and not retried; the capture is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_annotation_is_not_retried() {
    let demo = Demo::start();
    let (grafana, addr) = Grafana::start("another-token", 0, false).await;
    let data = tempfile::tempdir().unwrap();
    let running = start(&format!("http://{addr}"), &demo, &data).await;
    running.post_alerts(&alert()).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["outcome"], "captured");
    for annotation in decision["annotations"].as_array().unwrap() {
        let error = annotation["error"].as_str().unwrap();
        assert!(error.starts_with("Grafana refused the annotation: 401"), "{error}");
    }
    assert_eq!(*grafana.requests.lock().unwrap(), 2, "one try per capture");
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 2);
    let metrics = running.get_text("/metrics").await;
    assert!(metrics.contains("alertprof_annotations_total{result=\"rejected\"} 2"), "{metrics}");
    running.stop().await;
}

/// Grafana down: the captures are kept and listed, the decision says the annotation failed
/// after its tries, and it took a bounded time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_down_loses_nothing() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let closed = support::closed_port();
    let running = start(&closed.url(), &demo, &data).await;
    let started = Instant::now();
    running.post_alerts(&alert()).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(decision["outcome"], "captured");
    for annotation in decision["annotations"].as_array().unwrap() {
        let error = annotation["error"].as_str().unwrap();
        assert!(error.starts_with("Grafana unavailable after 3 tries"), "{error}");
    }
    let captures = running.get_json("/api/v1/captures").await;
    assert!(captures.as_array().unwrap().iter().all(|c| c["status"] == "ok"));
    assert_eq!(support::files_in(&data.path().join("demo")).len(), 4);
    running.stop().await;
}
