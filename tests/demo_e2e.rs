//! From an Alertmanager-shaped webhook to validated, stored profiles of the real Go demo
//! target; dedupe, cooldown and the capture list across a restart.

mod support;

use std::process::Command;
use std::time::Duration;

use alertprof::profile::decode_profile;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Demo, Running, payload};

const CONFIG: &str = r#"
storage: {dir: "{data}"}
targets:
  - name: demo
    pprof_url: DEMO_URL
    alert_labels: {job: demo}
rules:
  - name: cpu-spike
    alert_labels: {alertname: HighCPU}
    capture: [cpu, goroutine]
    seconds: 2
    cooldown: 1h
"#;

/// Function names in a stored profile.
fn function_names(path: &std::path::Path) -> Vec<String> {
    let profile = decode_profile(std::fs::File::open(path).unwrap(), 1 << 30).expect("profile decodes");
    profile.function.iter().map(|f| profile.string_table[f.name as usize].clone()).collect()
}

/// The rows of `go tool pprof -top`: each function with the percentage in `column`
/// (1: flat%, 4: cum%).
fn pprof_rows(pprof: &str, column: usize) -> impl Iterator<Item = (String, f64)> + '_ {
    pprof.lines().skip_while(|line| !line.trim_start().starts_with("flat")).skip(1).filter_map(move |line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let percent: f64 = columns.get(column)?.trim_end_matches('%').parse().ok()?;
        let name = columns.get(5..)?.join(" ");
        Some((name.trim_end_matches(" (inline)").to_string(), percent))
    })
}

/// The capture's summary lists the same functions with flat values as `go tool pprof -top`
/// prints them, in the same order.
fn agrees_with_pprof_top(capture: &Value, pprof: &str) {
    let rows: Vec<(String, f64)> = pprof_rows(pprof, 1).filter(|(_, flat)| *flat > 0.0).collect();
    let summary = &capture["summary"];
    let ours: Vec<(String, f64)> = summary["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["function"].as_str().unwrap().to_string(), f["flat_percent"].as_f64().unwrap()))
        .filter(|(_, flat)| *flat > 0.0)
        .collect();
    assert!(!rows.is_empty(), "{pprof}");
    for ((theirs, their_flat), (mine, my_flat)) in rows.iter().zip(&ours) {
        assert_eq!(theirs, mine, "pprof -top:\n{pprof}\nsummary: {summary}");
        assert!(
            (their_flat - my_flat).abs() < 0.01 + 0.005 * their_flat,
            "{theirs}: {their_flat}% vs {my_flat}%"
        );
    }
}

/// A goroutine profile's summary ranks by cum without the runtime's frames: its rows are
/// `go tool pprof -top -cum`'s once those are left out, with the same cum shares.
fn agrees_with_pprof_top_cum(capture: &Value, pprof: &str) {
    let rows: Vec<(String, f64)> = pprof_rows(pprof, 4)
        .filter(|(name, _)| !name.starts_with("runtime.") && !name.starts_with("runtime/"))
        .collect();
    let summary = &capture["summary"];
    let top = summary["top"].as_array().unwrap();
    assert_eq!(
        top[0]["function"].as_str(),
        rows.first().map(|(name, _)| name.as_str()),
        "pprof -top -cum:\n{pprof}\nsummary: {summary}"
    );
    for row in top {
        let name = row["function"].as_str().unwrap();
        let theirs = rows.iter().find(|(function, _)| function == name).map(|(_, cum)| *cum);
        let mine = row["cum_percent"].as_f64().unwrap();
        assert!(
            theirs.is_some_and(|theirs| (theirs - mine).abs() < 0.01 + 0.005 * theirs),
            "{name}: {theirs:?}% vs {mine}%\n{pprof}"
        );
    }
}

fn alert(fingerprint: &str) -> Value {
    payload(&[(json!({"alertname": "HighCPU", "job": "demo", "instance": "demo:6060"}), fingerprint)])
}

/// A firing alert captures CPU and goroutine profiles from the Go demo; they decode, name
/// the demo's own functions, `go tool pprof` reads them, and the API serves the same bytes.
/// The same alert again captures nothing; after a restart the captures, the dedupe and the
/// cooldown are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_captures_profiles_and_gate_survives_restart() {
    let demo = Demo::start();
    demo.get("/goroutines?n=300").await;
    demo.get("/burn?seconds=10&workers=1").await;
    let data = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("DEMO_URL", &demo.url());
    let running = Running::start(&config, data.path()).await;

    let (status, body) = running.post_alerts(&alert("fp-1")).await;
    assert_eq!((status, body), (200, json!({"accepted": 1, "ignored": 0})));
    let decisions = running.wait_decisions(1, Duration::from_secs(30)).await;
    assert_eq!(decisions[0]["outcome"], "captured", "{decisions:?}");
    assert_eq!(decisions[0]["rule"], "cpu-spike");
    assert_eq!(decisions[0]["target"], "demo");
    assert_eq!(decisions[0]["captures"].as_array().unwrap().len(), 2);

    let captures = running.get_json("/api/v1/captures").await;
    let captures = captures.as_array().unwrap();
    assert_eq!(captures.len(), 2);
    for capture in captures {
        let id = capture["id"].as_str().unwrap();
        assert_eq!(capture["status"], "ok");
        assert_eq!(capture["trigger"]["source"], "alertmanager");
        assert_eq!(capture["trigger"]["fingerprint"], "fp-1");
        assert_eq!(capture["trigger"]["alertname"], "HighCPU");
        let file = data.path().join("demo").join(capture["file"].as_str().unwrap());
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(capture["bytes"], bytes.len() as u64);
        assert_eq!(capture["sha256"], hex::encode(Sha256::digest(&bytes)));
        assert!(data.path().join("demo").join(format!("{id}.json")).is_file());

        let wanted = match capture["kind"].as_str().unwrap() {
            "cpu" => {
                // The demo's burning function is hot from the first row on.
                assert_eq!(capture["summary"]["sample_type"], "cpu/nanoseconds");
                assert_eq!(capture["summary"]["top"][0]["function"], "main.spin");
                let burn = capture["summary"]["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|f| f["function"] == "main.burnCPU");
                assert!(burn.unwrap()["cum_percent"].as_f64().unwrap() > 90.0, "{}", capture["summary"]);
                "main.burnCPU"
            }
            "goroutine" => "main.parkGoroutine",
            other => panic!("unexpected kind {other}"),
        };
        assert!(
            function_names(&file).iter().any(|name| name == wanted),
            "{wanted} not in {}",
            file.display()
        );
        let top = Command::new("go").args(["tool", "pprof", "-top"]).arg(&file).output().unwrap();
        if capture["kind"] == "goroutine" {
            let by_cum =
                Command::new("go").args(["tool", "pprof", "-top", "-cum"]).arg(&file).output().unwrap();
            agrees_with_pprof_top_cum(capture, &String::from_utf8_lossy(&by_cum.stdout));
        } else {
            agrees_with_pprof_top(capture, &String::from_utf8_lossy(&top.stdout));
        }
        assert!(top.status.success(), "go tool pprof failed: {}", String::from_utf8_lossy(&top.stderr));
        assert!(String::from_utf8_lossy(&top.stdout).contains(wanted));

        let served = support::client()
            .get(running.url(&format!("/api/v1/captures/{id}/profile")))
            .send()
            .await
            .unwrap();
        assert_eq!(served.headers()["content-type"], "application/octet-stream");
        assert_eq!(served.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }

    // Alertmanager repeats the alert: same fingerprint and startsAt, nothing new.
    let (status, _) = running.post_alerts(&alert("fp-1")).await;
    assert_eq!(status, 200);
    let decisions = running.wait_decisions(2, Duration::from_secs(10)).await;
    assert_eq!(decisions[0]["outcome"], "duplicate");
    // Another alert for the same rule and target: in cooldown.
    running.post_alerts(&alert("fp-2")).await;
    let decisions = running.wait_decisions(3, Duration::from_secs(10)).await;
    assert_eq!(decisions[0]["outcome"], "cooldown");
    assert!(decisions[0]["reason"].as_str().unwrap().starts_with("in cooldown until"));
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 2);
    running.stop().await;

    // Restarted on the same storage.
    let running = Running::start(&config, data.path()).await;
    let listed = running.get_json("/api/v1/captures").await;
    assert_eq!(listed.as_array().unwrap(), captures);
    running.post_alerts(&alert("fp-1")).await;
    assert_eq!(running.wait_decisions(1, Duration::from_secs(10)).await[0]["outcome"], "duplicate");
    running.post_alerts(&alert("fp-3")).await;
    assert_eq!(running.wait_decisions(2, Duration::from_secs(10)).await[0]["outcome"], "cooldown");
    assert_eq!(running.get_json("/api/v1/captures").await.as_array().unwrap().len(), 2);
    running.stop().await;
}

/// Every profile kind the demo serves is captured and validated; fgprof, which the demo
/// does not serve, fails with Go's 404 and leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_from_the_go_demo() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let config = r#"
storage: {dir: "{data}"}
targets:
  - {name: demo, pprof_url: DEMO_URL}
rules:
  - name: all
    alert_labels: {alertname: Everything}
    capture: [cpu, heap, allocs, block, mutex, threadcreate, goroutine, goroutine_text, trace, fgprof]
    seconds: 1
"#
    .replace("DEMO_URL", &demo.url());
    let running = Running::start(&config, data.path()).await;
    running.post_alerts(&payload(&[(json!({"alertname": "Everything"}), "fp")])).await;
    let decision = &running.wait_decisions(1, Duration::from_secs(30)).await[0];
    assert_eq!(decision["outcome"], "partially_captured", "{decision:?}");
    let reason = decision["reason"].as_str().unwrap();
    assert!(reason.contains("fgprof:") && reason.contains("answered 404"), "{reason}");

    let captures = running.get_json("/api/v1/captures?limit=100").await;
    let mut kept: Vec<&str> = captures
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "ok")
        .map(|c| c["file"].as_str().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 9);
    assert_eq!(kept.iter().filter(|f| f.ends_with(".pb.gz")).count(), 7, "{kept:?}");
    assert!(kept.iter().any(|f| f.ends_with("-trace.trace")), "{kept:?}");
    assert!(kept.iter().any(|f| f.ends_with("-goroutine_text.txt")), "{kept:?}");
    let files = support::files_in(&data.path().join("demo"));
    assert!(!files.iter().any(|f| f.contains("fgprof") && !f.ends_with(".json")), "{files:?}");
    running.stop().await;
}
