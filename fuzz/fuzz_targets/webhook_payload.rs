//! Any bytes as an Alertmanager webhook body: parsing and checking never panic, and a
//! payload that parses is matched against rules with fixed and templated targets.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use alertprof::config::Config;
use alertprof::intake::parse;
use alertprof::rules::match_alert;
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Arc<Config>> = LazyLock::new(|| {
    let text = r#"
targets:
  - {name: fixed, pprof_url: "http://127.0.0.1:6060", alert_labels: {job: fixed}}
  - name: pods
    pprof_url: "http://{{ labels.instance }}"
    allowed_targets: ["10.0.0.0/8:6060", "*.svc:*", "127.0.0.1:1-65535"]
    alert_labels: {job: pods}
rules:
  - {name: cpu, alert_labels: {alertname: HighCPU}, capture: [cpu], baseline: {on_resolved: true}}
  - {name: any, alert_labels: {}, capture: [goroutine]}
"#;
    Arc::new(Config::parse(text, Path::new("/nonexistent")).expect("valid fuzz config"))
});

fuzz_target!(|data: &[u8]| {
    if let Ok(payload) = parse(data) {
        for alert in &payload.alerts {
            for found in match_alert(&CONFIG, alert, chrono::Utc::now(), |_: &_, _: &_| Ok(None)) {
                std::hint::black_box(found);
            }
        }
    }
});
