//! The whole chain with the real servers: Prometheus scrapes the Go demo target and fires
//! the shipped GoroutineSpike rule, Alertmanager posts it to alertprof with the bearer
//! token, alertprof verifies, captures, stores and annotates a Grafana API stand-in, and
//! the annotation's link downloads the profile.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::grafana::Grafana;
use support::servers::{Server, alertmanager, wait_ready};
use support::{Demo, Running};

fn shipped_yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_alertmanager_alertprof_grafana() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let demo = Demo::start();
    let (grafana, grafana_addr) = Grafana::start("glsa_stack", 0, false).await;
    std::fs::write(path("am-token"), "am-s3cret\n").unwrap();
    std::fs::write(path("grafana-token"), "glsa_stack\n").unwrap();

    // alertprof, with auth on its API and Grafana configured.
    let listener = Running::listener().await;
    let alertprof_port = listener.local_addr().unwrap().port();
    let config = format!(
        r#"
external_url: http://127.0.0.1:{alertprof_port}
auth: {{bearer_token_file: am-token}}
storage: {{dir: data}}
sample_interval: 500ms
grafana: {{url: "http://{grafana_addr}", token_file: grafana-token, dashboard_uid: alertprof}}
targets:
  - name: demo
    pprof_url: {demo}
    metrics_url: {demo}/metrics
    process: {{listen_port: {demo_port}}}
    alert_labels: {{job: demo}}
rules:
  - name: goroutine-spike
    alert_labels: {{alertname: GoroutineSpike}}
    verify:
      goroutines: {{min: 500}}
    capture: [goroutine]
"#,
        demo = demo.url(),
        demo_port = demo.addr.port()
    );
    let running = Running::start_on(&config, dir.path(), listener).await;

    // The shipped rule, its `for` shortened so the test need not wait 30 s.
    let mut rules = shipped_yaml("rules/alertprof.rules.yml");
    for rule in rules["groups"][0]["rules"].as_array_mut().unwrap() {
        rule["for"] = json!("0s");
    }
    std::fs::write(path("rules.yml"), rules.to_string()).unwrap();
    // The shipped Alertmanager config, pointed at this alertprof and token.
    let mut am_config = shipped_yaml("alertmanager/alertmanager.yml");
    let webhook = &mut am_config["receivers"][1]["webhook_configs"][0];
    webhook["url"] = json!(format!("http://127.0.0.1:{alertprof_port}/api/v1/alerts"));
    webhook["http_config"]["authorization"]["credentials_file"] = json!(path("am-token"));
    std::fs::write(path("alertmanager.yml"), am_config.to_string()).unwrap();

    let alertmanager = alertmanager(dir.path()).await;
    let prometheus_config = json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [path("rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.address.clone()]}]}]},
        "scrape_configs": [{"job_name": "demo", "static_configs": [{"targets": [demo.addr.to_string()]}]}],
    });
    std::fs::write(path("prometheus.yml"), prometheus_config.to_string()).unwrap();
    let prometheus = Server::start(
        "prometheus",
        &[
            format!("--config.file={}", path("prometheus.yml").display()),
            format!("--storage.tsdb.path={}", path("prom-data").display()),
        ],
        path("prometheus.log"),
    )
    .await;
    wait_ready(&alertmanager.url("/-/ready"), &alertmanager).await;
    wait_ready(&prometheus.url("/-/ready"), &prometheus).await;

    // Let Prometheus see the quiet demo for a few scrapes, then spike.
    support::eventually("Prometheus to scrape the demo", Duration::from_secs(30), async || {
        let query = prometheus.url("/api/v1/query?query=count_over_time(go_goroutines[1m])");
        let answer: Value = support::client().get(query).send().await.unwrap().json().await.unwrap();
        let seen = answer["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse::<u32>().ok());
        if seen.is_some_and(|n| n >= 3) { Ok(()) } else { Err(format!("\n{}", prometheus.log_tail())) }
    })
    .await;
    demo.get("/goroutines?n=2000").await;

    let what = "a decision from Alertmanager's webhook";
    let decision = support::eventually(what, Duration::from_secs(60), async || {
        let decisions = running.get_json_auth("/api/v1/decisions", "am-s3cret").await;
        let found =
            decisions.as_array().unwrap().iter().find(|d| d["alertname"] == "GoroutineSpike").cloned();
        found.ok_or_else(|| {
            format!("\nprometheus:\n{}\nalertmanager:\n{}", prometheus.log_tail(), alertmanager.log_tail())
        })
    })
    .await;
    assert_eq!(decision["outcome"], "captured", "{decision}");
    assert_eq!(decision["source"], "alertmanager");
    assert!(decision["reason"].as_str().unwrap().contains("verified: goroutines"), "{decision}");

    // The stored profile.
    let captures = running.get_json_auth("/api/v1/captures", "am-s3cret").await;
    let capture = &captures[0];
    assert_eq!(capture["trigger"]["labels"]["job"], "demo");
    assert_eq!(capture["trigger"]["labels"]["alertprof"], "true");
    let file = dir.path().join("data/demo").join(capture["file"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let profile = alertprof::profile::decode_profile(bytes.as_slice(), 1 << 30).unwrap();
    assert!(profile.string_table.iter().any(|s| s == "main.parkGoroutine"));

    // The annotation, read back as Grafana's API serves it.
    let listed: Value = support::client()
        .get(format!("http://{grafana_addr}/api/annotations?tags=alertprof&tags=GoroutineSpike"))
        .bearer_auth("glsa_stack")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let annotation = &listed[0];
    assert_eq!(
        annotation["tags"],
        json!(["alertprof", "demo", "goroutine-spike", "goroutine", "GoroutineSpike"])
    );
    assert_eq!(annotation["dashboardUID"], "alertprof");
    let started = chrono::DateTime::parse_from_rfc3339(capture["started_at"].as_str().unwrap()).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(capture["finished_at"].as_str().unwrap()).unwrap();
    assert_eq!(annotation["time"], started.timestamp_millis());
    assert_eq!(annotation["timeEnd"], finished.timestamp_millis());
    assert!(annotation["time"].as_i64() <= annotation["timeEnd"].as_i64());
    assert_eq!(*grafana.requests.lock().unwrap(), 1);

    // Its link downloads the same profile (with alertprof's credentials).
    let text = annotation["text"].as_str().unwrap();
    let link = text.split("href=\"").nth(1).unwrap().split('"').next().unwrap();
    assert_eq!(link, running.url(&format!("/api/v1/captures/{}/profile", capture["id"].as_str().unwrap())));
    let denied = support::client().get(link).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let served = support::client().get(link).bearer_auth("am-s3cret").send().await.unwrap();
    assert_eq!(served.bytes().await.unwrap().as_ref(), bytes.as_slice());

    drop(prometheus);
    drop(alertmanager);
    running.stop().await;
}
