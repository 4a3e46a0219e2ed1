//! The HTTP API in-process (`oneshot`, no socket): every status code of the webhook, auth,
//! the read endpoints, health and reload.

mod support;

use std::sync::Arc;

use alertprof::config::Config;
use alertprof::pipeline::App;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use support::oneshot::{self, Fixture, get, post};
use support::payload;

const BASE: &str = r#"
storage: {dir: "{data}"}
webhook: {max_body_size: 2KiB}
gate: {queue_size: 2}
targets:
  - {name: checkout, pprof_url: "http://127.0.0.1:9", alert_labels: {job: checkout}}
rules:
  - name: cpu-spike
    alert_labels: {alertname: HighCPU}
    capture: [cpu]
"#;

fn fixture(extra: &str) -> Fixture {
    Fixture::new(&format!("{BASE}{extra}"), |_| {})
}

/// An answer's status and JSON body.
async fn call(app: &Arc<App>, request: Request<Body>) -> (StatusCode, Value) {
    let answer = oneshot::call(app, request).await;
    (answer.status, answer.json())
}

fn high_cpu(fingerprint: &str) -> (Value, &str) {
    (json!({"alertname": "HighCPU", "job": "checkout"}), fingerprint)
}

/// A matching firing alert is accepted; resolved and unmatched alerts are counted as ignored
/// and each gets its decision.
#[tokio::test]
async fn accepts_and_ignores() {
    let f = fixture("");
    let mut body = payload(&[high_cpu("a"), (json!({"alertname": "Other"}), "b"), high_cpu("c")]);
    body["alerts"][2]["status"] = json!("resolved");
    let (status, answer) = call(&f.app, post("/api/v1/alerts", body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer, json!({"accepted": 1, "ignored": 2}));
    let (_, decisions) = call(&f.app, get("/api/v1/decisions")).await;
    let outcomes: Vec<&str> =
        decisions.as_array().unwrap().iter().map(|d| d["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["resolved", "no_matching_rule"]);
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("alertprof_alerts_received_total{status=\"firing\"} 2"), "{metrics}");
    assert!(metrics.contains("alertprof_alerts_received_total{status=\"resolved\"} 1"));
    assert!(metrics.contains("alertprof_queue_depth 1"));
    assert!(metrics.contains("alertprof_decisions_total{outcome=\"no_matching_rule\"} 1"));
}

/// An alert for the rule whose labels match no target ends as no_matching_target.
#[tokio::test]
async fn no_matching_target() {
    let f = fixture("");
    let body = payload(&[(json!({"alertname": "HighCPU", "job": "billing"}), "x")]);
    let (status, answer) = call(&f.app, post("/api/v1/alerts", body.to_string())).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 0, "ignored": 1})));
    let (_, decisions) = call(&f.app, get("/api/v1/decisions")).await;
    assert_eq!(decisions[0]["outcome"], "no_matching_target");
    assert_eq!(decisions[0]["rule"], "cpu-spike");
}

/// Malformed payloads get 400 with the reason, and nothing is queued or recorded.
#[tokio::test]
async fn malformed_payloads_are_400() {
    let f = fixture("");
    let mut wrong_status = payload(&[high_cpu("a")]);
    wrong_status["alerts"][0]["status"] = json!("burning");
    let mut wrong_version = payload(&[high_cpu("a")]);
    wrong_version["version"] = json!("3");
    let mut wrong_type = payload(&[high_cpu("a")]);
    wrong_type["alerts"][0]["labels"] = json!(["not", "a", "map"]);
    let cases: Vec<(Body, &str)> = vec![
        (Body::from("{not json"), "malformed payload"),
        (Body::from(r#"{"version": "4"}"#), "missing field `alerts`"),
        (Body::from(wrong_type.to_string()), "invalid type"),
        (Body::from(wrong_status.to_string()), "alerts[0].status"),
        (Body::from(wrong_version.to_string()), "unsupported payload version"),
        (Body::from(vec![0xff, 0xfe, b'{']), "malformed payload"),
    ];
    for (body, reason) in cases {
        let (status, answer) = call(&f.app, post("/api/v1/alerts", body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(reason), "{error:?} does not say {reason:?}");
    }
    let (_, decisions) = call(&f.app, get("/api/v1/decisions")).await;
    assert_eq!(decisions, json!([]));
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    assert!(metrics.as_str().unwrap().contains("alertprof_queue_depth 0"));
}

/// A body over the limit is 413; unknown fields are ignored.
#[tokio::test]
async fn body_limit_and_unknown_fields() {
    let f = fixture("");
    let mut big = payload(&[high_cpu("a")]);
    big["alerts"][0]["annotations"]["description"] = json!("x".repeat(4096));
    let (status, _) = call(&f.app, post("/api/v1/alerts", big.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let mut extra = payload(&[high_cpu("a")]);
    extra["somethingNew"] = json!({"nested": true});
    extra["alerts"][0]["silencedBy"] = json!([]);
    let (status, answer) = call(&f.app, post("/api/v1/alerts", extra.to_string())).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 1, "ignored": 0})));
}

/// HA Alertmanager peers each send every payload: a copy of an alert whose job is still
/// queued is a duplicate at intake (accepted 0) and takes no place in the queue, so it can
/// never push a real alert into 503. Once the job is done, a copy is taken again.
#[tokio::test]
async fn copies_of_queued_alerts_take_no_place() {
    let mut f =
        Fixture::new(&BASE.replace("queue_size: 2", "queue_size: 400").replace("2KiB", "1MiB"), |_| {});
    let fingerprints: Vec<String> = (0..300).map(|n| format!("fp{n}")).collect();
    let alerts: Vec<(Value, &str)> = fingerprints.iter().map(|fp| high_cpu(fp)).collect();
    let body = payload(&alerts).to_string();
    let (status, answer) = call(&f.app, post("/api/v1/alerts", body.clone())).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 300, "ignored": 0})));
    for _ in 0..2 {
        let (status, answer) = call(&f.app, post("/api/v1/alerts", body.clone())).await;
        assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 0, "ignored": 300})));
    }
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    assert!(metrics.as_str().unwrap().contains("alertprof_queue_depth 300\n"), "{metrics}");
    let (_, decisions) = call(&f.app, get("/api/v1/decisions?limit=1000")).await;
    let decisions = decisions.as_array().unwrap();
    assert_eq!(decisions.len(), 600);
    assert!(decisions.iter().all(|d| d["outcome"] == "duplicate"), "{:?}", decisions[0]);
    let reason = decisions[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("a copy of this alert came first"), "{reason}");

    // The jobs are done (here: taken off the queue and dropped): their alerts are let go.
    assert_eq!(f.take_queued().len(), 300);
    let (status, answer) = call(&f.app, post("/api/v1/alerts", body)).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 300, "ignored": 0})));
}

/// When the queue cannot take the whole payload the answer is 503 (Alertmanager retries
/// 5xx) and nothing of it is queued or recorded.
#[tokio::test]
async fn full_queue_is_503_and_changes_nothing() {
    let f = fixture("");
    let (status, _) = call(&f.app, post("/api/v1/alerts", payload(&[high_cpu("a")]).to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let two = payload(&[high_cpu("b"), high_cpu("c"), (json!({"alertname": "Other"}), "d")]);
    let (status, answer) = call(&f.app, post("/api/v1/alerts", two.to_string())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer["error"].as_str().unwrap().contains("queue full"));
    let (_, decisions) = call(&f.app, get("/api/v1/decisions")).await;
    assert_eq!(decisions, json!([]), "a refused payload must record nothing");
    // One place is still free.
    let (status, _) = call(&f.app, post("/api/v1/alerts", payload(&[high_cpu("e")]).to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    let metrics = metrics.as_str().unwrap();
    assert!(metrics.contains("alertprof_queue_depth 2"), "{metrics}");
    assert!(metrics.contains("alertprof_webhook_requests_total{code=\"503\"} 1"));
}

/// Without `auth` the API is open; with a bearer token or basic auth, /api/* needs it and
/// /metrics and health do not.
#[tokio::test]
async fn auth() {
    let open = fixture("");
    assert_eq!(call(&open.app, get("/api/v1/captures")).await.0, StatusCode::OK);

    let bearer = fixture("auth: {bearer_token_file: token}\n");
    let with = |value: &str| {
        Request::get("/api/v1/captures").header("authorization", value).body(Body::empty()).unwrap()
    };
    assert_eq!(call(&bearer.app, get("/api/v1/captures")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&bearer.app, with("Bearer wrong")).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&bearer.app, with("Bearer s3cret")).await.0, StatusCode::OK);
    let (status, _) = call(&bearer.app, post("/api/v1/alerts", payload(&[high_cpu("a")]).to_string())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&bearer.app, get("/metrics")).await.0, StatusCode::OK);
    assert_eq!(call(&bearer.app, get("/-/healthy")).await.0, StatusCode::OK);

    let basic = fixture("auth: {basic_auth: {username: am, password_file: pw}}\n");
    let encode = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
    assert_eq!(call(&basic.app, with(&encode("am:hunter2"))).await.0, StatusCode::OK);
    assert_eq!(call(&basic.app, with(&encode("am:hunter3"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&basic.app, with(&encode("xx:hunter2"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&basic.app, with("Bearer hunter2")).await.0, StatusCode::UNAUTHORIZED);
}

/// Unknown and malformed capture ids are 404, never a path outside the store.
#[tokio::test]
async fn captures_not_found() {
    let f = fixture("");
    for path in [
        "/api/v1/captures/nope",
        "/api/v1/captures/nope/profile",
        "/api/v1/captures/..%2F..%2Fetc%2Fpasswd/profile",
        "/api/v1/captures/%2E%2E/profile",
    ] {
        let (status, _) = call(&f.app, get(path)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, list) = call(&f.app, get("/api/v1/captures?target=checkout&limit=5")).await;
    assert_eq!((status, list), (StatusCode::OK, json!([])));
}

/// Health endpoints answer; reload keeps the running config when the file is invalid or
/// empty, and takes a valid one.
#[tokio::test]
async fn health_and_reload() {
    alertprof::init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertprof.yaml");
    let valid = format!("storage: {{dir: {:?}}}\n", dir.path().join("data"));
    std::fs::write(&path, &valid).unwrap();
    let config = Config::load(&path).unwrap();
    let app = App::new(config, Some(path.clone())).unwrap();
    assert_eq!(call(&app, get("/-/healthy")).await.0, StatusCode::OK);
    assert_eq!(call(&app, get("/-/ready")).await.0, StatusCode::OK);

    std::fs::write(&path, format!("{valid}rules: [{{name: x, capture: [bogus]}}]\n")).unwrap();
    let (status, body) = call(&app, Request::post("/-/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().contains("rules[0].capture[0]: unknown kind \"bogus\""), "{body}");
    assert!(app.config().rules.is_empty(), "the old config stays");
    let (_, metrics) = call(&app, get("/metrics")).await;
    assert!(metrics.as_str().unwrap().contains("alertprof_config_last_reload_successful 0"));

    std::fs::write(
        &path,
        format!("{valid}targets: [{{name: t, pprof_url: \"http://127.0.0.1:1\"}}]\nrules: [{{name: x, alert_labels: {{a: b}}, capture: [heap]}}]\n"),
    )
    .unwrap();
    let (status, _) = call(&app, Request::post("/-/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&*app.config().rules[0].name, "x");

    // A file caught empty (while being written) is refused, and the rules stay.
    std::fs::write(&path, "").unwrap();
    let (status, body) = call(&app, Request::post("/-/reload").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.as_str().unwrap().contains("the file is empty"), "{body}");
    assert_eq!(&*app.config().rules[0].name, "x");
    let (_, metrics) = call(&app, get("/metrics")).await;
    assert!(metrics.as_str().unwrap().contains("alertprof_config_last_reload_successful 0"));
}

/// A reload says which changed settings take effect only after a restart, each compared
/// by value: a changed gate and capture are named, an unchanged storage is not.
#[tokio::test]
async fn reload_names_the_settings_that_wait_for_a_restart() {
    support::logs();
    alertprof::init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alertprof.yaml");
    let storage = format!("storage: {{dir: {:?}}}\n", dir.path().join("data"));
    std::fs::write(&path, format!("{storage}gate: {{max_in_flight: 2}}\n")).unwrap();
    let app = App::new(Config::load(&path).unwrap(), Some(path.clone())).unwrap();
    std::fs::write(&path, format!("{storage}gate: {{max_in_flight: 3}}\ncapture: {{shutdown_grace: 1s}}\n"))
        .unwrap();
    app.reload().unwrap();
    let logs = support::logs();
    let changed: Vec<&str> = logs.lines().filter(|line| line.contains("Changed setting")).collect();
    assert_eq!(changed.len(), 2, "{logs}");
    assert!(changed[0].contains("gate") && changed[1].contains("capture"), "{changed:#?}");
}

/// Deeply nested JSON is skipped or refused, never a stack overflow; 100k alerts in one
/// payload are refused with 413 before any work; nothing is recorded.
#[tokio::test]
async fn hostile_payloads() {
    alertprof::init();
    let dir = tempfile::tempdir().unwrap();
    let text = BASE
        .replace("{data}", &dir.path().join("data").display().to_string())
        .replace("max_body_size: 2KiB", "max_body_size: 16MiB");
    let app = App::new(Config::parse(&text, dir.path()).unwrap(), None).unwrap();

    // In an unknown field it is skipped; where a type is expected it is refused at once.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, answer) =
        call(&app, post("/api/v1/alerts", format!("{{\"x\": {deep}, \"alerts\": []}}"))).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 0, "ignored": 0})));
    let (status, answer) = call(&app, post("/api/v1/alerts", format!("{{\"alerts\": {deep}}}"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"].as_str().unwrap().contains("invalid type"), "{answer}");

    let alert = r#"{"status":"firing","labels":{"alertname":"HighCPU","job":"checkout"}}"#;
    let many = format!("{{\"alerts\": [{}]}}", vec![alert; 100_000].join(","));
    assert!(many.len() > 6 << 20);
    let (status, answer) = call(&app, post("/api/v1/alerts", many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer["error"], "100000 alerts in one payload; at most 10000 are taken (webhook.max_alerts)");
    let (_, decisions) = call(&app, get("/api/v1/decisions")).await;
    assert_eq!(decisions, json!([]));
}

/// With `protect_metrics` and `protect_health`, /metrics and health need the credentials
/// too; `POST /-/reload` always does when auth is set.
#[tokio::test]
async fn auth_can_cover_metrics_and_health() {
    let open = fixture("auth: {bearer_token_file: token}\n");
    let reload = || Request::post("/-/reload").body(Body::empty()).unwrap();
    assert_eq!(call(&open.app, reload()).await.0, StatusCode::UNAUTHORIZED);
    let with_token = Request::post("/-/reload").header("authorization", "Bearer s3cret").body(Body::empty());
    assert_eq!(call(&open.app, with_token.unwrap()).await.0, StatusCode::OK);

    let closed = fixture("auth: {bearer_token_file: token, protect_metrics: true, protect_health: true}\n");
    for path in ["/metrics", "/-/healthy", "/-/ready"] {
        assert_eq!(call(&closed.app, get(path)).await.0, StatusCode::UNAUTHORIZED, "{path}");
        let request =
            Request::get(path).header("authorization", "Bearer s3cret").body(Body::empty()).unwrap();
        assert_eq!(call(&closed.app, request).await.0, StatusCode::OK, "{path}");
    }
}

/// Alerts with megabytes in their name and labels are remembered within bounds: each
/// decision keeps the start of the name and a short account of the labels, so neither the
/// decision list nor a log line grows with what a sender puts in.
#[tokio::test]
async fn huge_alert_texts_are_kept_short() {
    support::logs();
    let config = "storage: {dir: \"{data}\"}\nwebhook: {max_body_size: 4MiB}\n\
                  rules: [{name: r, alert_labels: {alertname: Never}, capture: [heap]}]\n";
    let f = Fixture::new(config, |_| {});
    let huge = "x".repeat(1 << 20);
    for n in 0..20 {
        let labels = json!({"alertname": format!("{huge}{n}"), "note": huge, "instance": "a"});
        let (status, _) = call(&f.app, post("/api/v1/alerts", payload(&[(labels, &huge)]).to_string())).await;
        assert_eq!(status, StatusCode::OK);
    }
    let answer = oneshot::call(&f.app, get("/api/v1/decisions?limit=1000")).await;
    assert!(answer.body.len() < 40 * 1024, "{} bytes of decisions", answer.body.len());
    let decisions = answer.json();
    let decision = &decisions[0];
    assert_eq!(decision["outcome"], "no_matching_rule");
    assert_eq!(decision["alertname"].as_str().unwrap().len(), 256 + "…".len());
    assert_eq!(decision["fingerprint"].as_str().unwrap().len(), 16);
    let reason = decision["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no rule's alert_labels match {alertname=\"xxxx") && reason.len() < 400,
        "{reason}"
    );
    let logs = support::logs();
    let logged: Vec<&str> = logs.lines().filter(|line| line.contains("no_matching_rule")).collect();
    assert_eq!(logged.len(), 20, "every decision is logged");
    let longest = logged.iter().map(|line| line.len()).max().unwrap();
    assert!(longest < 4096, "a log line of {longest} bytes");
}

/// A payload with more jobs than the whole queue holds (three, for a queue of two) would
/// be refused forever if it had to fit at once: it is taken, and goes in as places free up;
/// a second such payload meanwhile gets 503 and changes nothing.
#[tokio::test]
async fn payload_larger_than_the_queue_is_taken() {
    let f = fixture("");
    let three = payload(&[high_cpu("a"), high_cpu("b"), high_cpu("c")]);
    let (status, answer) = call(&f.app, post("/api/v1/alerts", three.to_string())).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"accepted": 3, "ignored": 0})));
    tokio::task::yield_now().await;
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    assert!(metrics.as_str().unwrap().contains("alertprof_queue_depth 2"), "{metrics}");
    let other = payload(&[high_cpu("d"), high_cpu("e"), high_cpu("f")]);
    let (status, _) = call(&f.app, post("/api/v1/alerts", other.to_string())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, metrics) = call(&f.app, get("/metrics")).await;
    assert!(
        metrics.as_str().unwrap().contains("alertprof_alerts_received_total{status=\"firing\"} 3"),
        "{metrics}"
    );
}
