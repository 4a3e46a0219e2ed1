//! The files alertprof ships for Prometheus, Alertmanager and Grafana are valid, their own
//! checkers accept them, and they agree with what alertprof sends and matches.

use std::path::{Path, PathBuf};
use std::process::Command;

use alertprof::annotate::GrafanaClient;
use alertprof::config::Config;
use alertprof::model::{CaptureId, PendingCapture, Trigger, TriggerSource};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn run(program: &str, args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(program).args(args).current_dir(dir).output().unwrap_or_else(|e| {
        panic!("{program} runs (apt-get install prometheus prometheus-alertmanager): {e}")
    })
}

/// `promtool check rules` and `promtool test rules` pass, and a wrong expectation fails.
#[test]
fn prometheus_rules_check_and_unit_tests() {
    let rules = root().join("rules");
    let check = run("promtool", &["check", "rules", "alertprof.rules.yml"], &rules);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("SUCCESS: 4 rules found"));
    let test = run("promtool", &["test", "rules", "alertprof.rules.test.yml"], &rules);
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    // The unit tests can fail: expect 80% where the rule sees 90%.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(rules.join("alertprof.rules.yml"), dir.path().join("alertprof.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules.join("alertprof.rules.test.yml")).unwrap();
    let wrong = tests.replace("uses 90% of its CPU quota", "uses 80% of its CPU quota");
    assert_ne!(wrong, tests);
    std::fs::write(dir.path().join("wrong.test.yml"), wrong).unwrap();
    let test = run("promtool", &["test", "rules", "wrong.test.yml"], dir.path());
    assert!(!test.status.success());
}

/// `amtool check-config` accepts the Alertmanager config, which routes alertprof's alerts
/// to its webhook with bearer auth and resolved notifications.
#[test]
fn alertmanager_config() {
    let check = run("amtool", &["check-config", "alertmanager/alertmanager.yml"], &root());
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let config = yaml("alertmanager/alertmanager.yml");
    let route = &config["route"]["routes"][0];
    assert_eq!(route["matchers"][0], "alertprof=\"true\"");
    assert_eq!(route["group_wait"], "0s");
    let receiver =
        config["receivers"].as_array().unwrap().iter().find(|r| r["name"] == route["receiver"]).unwrap();
    let webhook = &receiver["webhook_configs"][0];
    assert!(webhook["url"].as_str().unwrap().ends_with("/api/v1/alerts"));
    assert_eq!(webhook["send_resolved"], true);
    assert_eq!(webhook["http_config"]["authorization"]["type"], "Bearer");
    assert!(webhook["http_config"]["authorization"]["credentials_file"].is_string());
}

/// Every shipped alert carries the routing label, and every alertname the example config
/// handles is one the shipped rules raise.
#[test]
fn example_config_matches_shipped_alerts() {
    let rules = yaml("rules/alertprof.rules.yml");
    let alerts: Vec<&Value> = rules["groups"][0]["rules"].as_array().unwrap().iter().collect();
    assert_eq!(alerts.len(), 4);
    for alert in &alerts {
        assert_eq!(alert["labels"]["alertprof"], "true", "{alert}");
    }
    let names: Vec<&str> = alerts.iter().map(|a| a["alert"].as_str().unwrap()).collect();
    let config = Config::load(&root().join("examples/alertprof.yaml")).unwrap();
    for rule in &config.rules {
        let wanted = &rule.alert_labels.as_ref().unwrap()["alertname"];
        assert!(names.contains(&wanted.as_str()), "{wanted} is not a shipped alert");
    }
}

/// The provisioning files are valid, the dashboard uses the provisioned datasource, and its
/// annotation query asks for tags that alertprof's annotations carry.
#[test]
fn grafana_files_agree_with_annotations() {
    alertprof::init();
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(datasources["apiVersion"], 1);
    let uid = datasources["datasources"][0]["uid"].as_str().unwrap();
    let providers = yaml("grafana/provisioning/dashboards/alertprof.yml");
    assert_eq!(providers["providers"][0]["type"], "file");

    let text = std::fs::read_to_string(root().join("grafana/dashboards/alertprof.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "alertprof");
    for panel in dashboard["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
        assert!(!panel["targets"][0]["expr"].as_str().unwrap().is_empty());
    }
    let query = dashboard["annotations"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["target"]["type"] == "tags")
        .expect("a tag annotation query");
    let wanted: Vec<&str> =
        query["target"]["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(!wanted.is_empty());

    // What alertprof sends with a default grafana section.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), "x").unwrap();
    let config =
        Config::parse("grafana: {url: \"http://127.0.0.1:3000\", token_file: t}\n", dir.path()).unwrap();
    let client = GrafanaClient::new(config.grafana.as_ref().unwrap(), &config.external_url);
    let now = chrono::Utc::now();
    let trigger = Trigger {
        alertname: Some("ProcessCPUHigh".into()),
        ..Trigger::local(TriggerSource::Alertmanager, None)
    };
    let id = CaptureId::parse("20261121T232525.702Z-cpu-spike-cpu").unwrap();
    let mut pending =
        PendingCapture::new(id, "checkout", "cpu-spike", alertprof::model::ProfileKind::Cpu, trigger, now);
    pending.seconds = Some(10);
    let capture = pending.kept(1, "ab".into());
    let sent = client.annotation(&capture, &[]).tags;
    for tag in wanted {
        assert!(sent.iter().any(|t| t == tag), "the dashboard asks for {tag:?}, alertprof sends {sent:?}");
    }
}

/// Every alertprof metric the dashboard queries is one alertprof registers (families
/// without a series yet are not in a fresh `/metrics`, so the rows `("name", "help",
/// metric)` of the table it registers are read).
#[test]
fn the_dashboard_queries_metrics_that_exist() {
    let text = std::fs::read_to_string(root().join("grafana/dashboards/alertprof.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let source = std::fs::read_to_string(root().join("src/metrics.rs")).unwrap();
    let registered: Vec<String> = source
        .split('(')
        .filter_map(|row| {
            let (name, rest) = row.trim_start().strip_prefix('"')?.split_once('"')?;
            let help = rest.strip_prefix(',')?.trim_start().starts_with('"');
            let named = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            (help && named).then(|| format!("alertprof_{name}"))
        })
        .collect();
    assert!(registered.len() > 10, "{registered:?}");
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("alertprof_") {
                let name: String =
                    expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = name.strip_suffix("_total").unwrap_or(&name);
                assert!(registered.iter().any(|r| r == family), "{name} in panel {}", panel["title"]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked}");
}

/// Running the example config where it lies (`serve --config examples/alertprof.yaml`)
/// leaves the clone clean: its storage directory, relative to the file, is ignored by git.
#[test]
fn the_example_config_leaves_the_clone_clean() {
    let example = yaml("examples/alertprof.yaml");
    let dir = example["storage"]["dir"].as_str().expect("the example names storage.dir");
    let data = Path::new("examples").join(dir);
    let ignored = run("git", &["check-ignore", "-q", "--no-index", data.to_str().unwrap()], &root());
    assert!(ignored.status.success(), "{} is not in .gitignore", data.display());
}
