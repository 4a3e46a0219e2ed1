//! Insight into captured profiles of the real Go demo: flame graphs, baselines taken when an
//! alert resolves or periodically while quiet, and what grew in a spike against them, as
//! `go tool pprof -diff_base` shows it.

mod support;

use std::process::Command;
use std::time::Duration;

use alertprof::gate::CooldownKey;
use alertprof::model::{CaptureRole, Refusal};
use serde_json::{Value, json};
use support::grafana::Grafana;
use support::{Demo, Running, payload};

fn config(demo: &Demo, grafana: &str) -> String {
    format!(
        r#"
storage: {{dir: "{{data}}"}}
grafana: {{url: "{grafana}", token_file: grafana-token, retry_backoff: 50ms}}
targets:
  - {{name: demo, pprof_url: "{}", alert_labels: {{job: demo}}}}
rules:
  - name: cpu-spike
    alert_labels: {{alertname: HighCPU}}
    capture: [cpu]
    seconds: 1
    cooldown: 1h
    baseline: {{on_resolved: true}}
"#,
        demo.url()
    )
}

fn alert(status: &str) -> Value {
    let mut payload = payload(&[(json!({"alertname": "HighCPU", "job": "demo"}), "fp-1")]);
    payload["status"] = json!(status);
    payload["alerts"][0]["status"] = json!(status);
    payload
}

async fn get(running: &Running, path: &str) -> reqwest::Response {
    support::client().get(running.url(path)).send().await.unwrap()
}

/// The first function with flat > 0 in `go tool pprof -top` output, and its flat.
fn pprof_first_row(args: &[&str]) -> String {
    let output = Command::new("go").args(["tool", "pprof", "-top"]).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&output.stderr));
    text.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .find_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let flat: f64 = columns.get(1)?.trim_end_matches('%').parse().ok()?;
            (flat > 0.0).then(|| columns.last().unwrap().to_string())
        })
        .unwrap_or_else(|| panic!("no row with flat > 0:\n{text}"))
}

/// A resolved alert takes a baseline while the demo idles; the next spike of CPU is compared
/// with it: the burning function tops the diff in the metadata, the decision, the Grafana
/// annotation and `/diff`, as `go tool pprof -diff_base` puts it first too. Both have a
/// well-formed flame graph that names the function, kept next to the profile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spike_against_baseline() {
    let demo = Demo::start();
    let (grafana, grafana_addr) = Grafana::start("glsa_test", 0, false).await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("grafana-token"), "glsa_test\n").unwrap();
    let running = Running::start(&config(&demo, &format!("http://{grafana_addr}")), data.path()).await;

    // No diff can be made before there is a baseline.
    running.post_alerts(&alert("resolved")).await;
    let decision = running.wait_decisions(1, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert_eq!(decision["reason"], "captured baseline cpu");
    assert!(decision.get("grew").is_none(), "{decision}");
    let base =
        running.get_json(&format!("/api/v1/captures/{}", decision["captures"][0].as_str().unwrap())).await;
    assert_eq!(base["baseline"], true);
    assert!(base["id"].as_str().unwrap().ends_with("-cpu-spike-baseline-cpu"), "{base}");
    assert!(base.get("diff").is_none());
    let base_id = base["id"].as_str().unwrap().to_string();
    let response = get(&running, &format!("/api/v1/captures/{base_id}/diff")).await;
    assert_eq!(response.status(), 404);
    assert!(response.text().await.unwrap().contains("no baseline capture of demo cpu"));

    demo.get("/burn?seconds=10&workers=1").await;
    running.post_alerts(&alert("firing")).await;
    let decision = running.wait_decisions(2, Duration::from_secs(20)).await[0].clone();
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert!(decision["grew"]["cpu"].as_str().unwrap().starts_with("main.spin +"), "{decision}");
    let spike_id = decision["captures"][0].as_str().unwrap().to_string();
    let spike = running.get_json(&format!("/api/v1/captures/{spike_id}")).await;
    assert!(spike.get("baseline").is_none());
    let diff = &spike["diff"];
    assert_eq!(diff["base"], base_id);
    assert_eq!(diff["sample_type"], "cpu/nanoseconds");
    assert_eq!(diff["functions"][0]["function"], "main.spin", "{diff}");
    assert!(diff["functions"][0]["flat"].as_i64().unwrap() > 0);

    // pprof agrees on what grew most.
    let file = |meta: &Value| data.path().join("demo").join(meta["file"].as_str().unwrap());
    let base_arg = format!("-diff_base={}", file(&base).display());
    assert_eq!(pprof_first_row(&[&base_arg, file(&spike).to_str().unwrap()]), "main.spin");

    // /diff: the recorded baseline by default, or any other compatible capture.
    let served: Value =
        get(&running, &format!("/api/v1/captures/{spike_id}/diff?limit=3")).await.json().await.unwrap();
    assert_eq!(served["base"], base_id);
    assert_eq!(served["functions"][0]["function"], "main.spin");
    assert!(served["functions"].as_array().unwrap().len() <= 3);
    let reverse: Value = get(&running, &format!("/api/v1/captures/{base_id}/diff?base={spike_id}"))
        .await
        .json()
        .await
        .unwrap();
    let last = reverse["functions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["function"], "main.spin", "the spike's function shrinks going back: {reverse}");
    assert!(last["flat"].as_i64().unwrap() < 0);
    let missing =
        get(&running, &format!("/api/v1/captures/{spike_id}/diff?base=20200101T000000.000Z-x-cpu")).await;
    assert_eq!(missing.status(), 404);

    // The annotation names what grew, with links to the diff and the flame graph.
    let annotations = grafana.annotations.lock().unwrap().clone();
    let text =
        annotations.iter().map(|a| a["text"].as_str().unwrap()).find(|t| t.contains("Grew vs")).unwrap();
    assert!(text.contains("main.spin +"), "{text}");
    assert!(text.contains(&format!("/api/v1/captures/{spike_id}/diff?base={base_id}")), "{text}");
    assert!(text.contains(&format!("/api/v1/captures/{spike_id}/flamegraph.svg")), "{text}");
    assert!(text.contains(&format!("/captures/{spike_id}\">Open in alertprof</a>")), "{text}");
    assert!(annotations.iter().any(|a| a["text"].as_str().unwrap().contains("captured a baseline")));

    // The flame graph: well-formed SVG naming the burning function, drawn once and kept.
    let response = get(&running, &format!("/api/v1/captures/{spike_id}/flamegraph.svg")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/svg+xml");
    let svg = response.text().await.unwrap();
    // inferno declares the SVG 1.1 DTD.
    let options = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let document =
        roxmltree::Document::parse_with_options(&svg, options).expect("the flame graph is well-formed XML");
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let frames: Vec<&str> = document
        .descendants()
        .filter(|node| node.has_tag_name("title"))
        .filter_map(|node| node.text())
        .collect();
    assert!(frames.iter().any(|title| title.starts_with("main.spin (")), "{frames:?}");
    let kept = data.path().join("demo").join(format!("{spike_id}.flamegraph.svg"));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), svg);
    let again =
        get(&running, &format!("/api/v1/captures/{spike_id}/flamegraph.svg")).await.text().await.unwrap();
    assert_eq!(again, svg);
    assert_eq!(
        get(&running, "/api/v1/captures/20200101T000000.000Z-x-cpu/flamegraph.svg").await.status(),
        404
    );
    assert_eq!(get(&running, "/api/v1/captures/..%2Fetc/flamegraph.svg").await.status(), 404);
    running.stop().await;

    // Kept across a restart; deleted with its capture.
    let running = Running::start(&config(&demo, &format!("http://{grafana_addr}")), data.path()).await;
    assert!(kept.is_file());
    let again =
        get(&running, &format!("/api/v1/captures/{spike_id}/flamegraph.svg")).await.text().await.unwrap();
    assert_eq!(again, svg);
    running.stop().await;
}

/// Periodic baselines: taken once the target has been sampled and its signals are quiet,
/// then not again within `every`; a rule whose signal triggers takes none and says why.
/// A resolved alert while the signal still triggers takes no baseline either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_baseline_only_when_quiet() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
storage: {{dir: "{{data}}"}}
sample_interval: 200ms
targets:
  - {{name: demo, pprof_url: "{url}", metrics_url: "{url}/metrics", alert_labels: {{job: demo}}}}
rules:
  - name: calm
    alert_labels: {{alertname: Calm}}
    verify: {{goroutines: {{abs: 100000}}}}
    capture: [heap]
    baseline: {{every: 1m}}
  - name: busy
    alert_labels: {{alertname: Busy}}
    verify: {{goroutines: {{abs: 1}}}}
    capture: [heap]
    baseline: {{every: 1m, on_resolved: true}}
"#,
        url = demo.url()
    );
    let running = Running::start(&config, data.path()).await;
    let captured = running.wait_outcome("captured", Duration::from_secs(20)).await;
    assert_eq!(captured["rule"], "calm");
    assert_eq!(captured["source"], "baseline");
    assert_eq!(captured["reason"], "captured baseline heap");
    let id = captured["captures"][0].as_str().unwrap();
    let meta = running.get_json(&format!("/api/v1/captures/{id}")).await;
    assert_eq!(
        (meta["baseline"].clone(), meta["trigger"]["source"].clone()),
        (json!(true), json!("baseline"))
    );
    assert!(meta["readings"]["goroutines"].as_f64().unwrap() >= 1.0, "{meta}");

    let refused = running.wait_outcome("not_verified", Duration::from_secs(20)).await;
    assert_eq!(refused["rule"], "busy");
    let reason = refused["reason"].as_str().unwrap();
    assert!(reason.starts_with("not quiet, no baseline: goroutines"), "{reason}");

    running.post_alerts(&payload_resolved("Busy")).await;
    let decision =
        support::eventually("a decision on the resolved alert", Duration::from_secs(10), async || {
            let decisions = running.get_json("/api/v1/decisions").await;
            decisions.as_array().unwrap().iter().find(|d| d["source"] == "alertmanager").cloned()
        })
        .await;
    assert_eq!(decision["outcome"], "not_verified", "{decision}");
    assert!(decision["reason"].as_str().unwrap().starts_with("not quiet"), "{decision}");

    // The baseline holds off the next one for `every` (1m), not the rule's cooldown (5m
    // by default), and a spike of the rule is not held off by it.
    let taken: chrono::DateTime<chrono::Utc> = meta["started_at"].as_str().unwrap().parse().unwrap();
    let gate = running.app.gate();
    let key = |role| CooldownKey::new("calm", role, std::borrow::Cow::Borrowed("demo"));
    let refused =
        |after: i64| gate.check(None, &key(CaptureRole::Baseline), taken + chrono::Duration::seconds(after));
    assert!(matches!(refused(50), Some(Refusal::Cooldown { .. })), "{:?}", refused(50));
    assert_eq!(refused(75), None);
    assert_eq!(gate.check(None, &key(CaptureRole::Spike), taken + chrono::Duration::seconds(1)), None);
    let captures = running.get_json("/api/v1/captures").await;
    assert_eq!(captures.as_array().unwrap().len(), 1, "{captures}");
    running.stop().await;
}

fn payload_resolved(alertname: &str) -> Value {
    let mut payload = payload(&[(json!({"alertname": alertname, "job": "demo"}), "fp-r")]);
    payload["status"] = json!("resolved");
    payload["alerts"][0]["status"] = json!("resolved");
    payload
}
