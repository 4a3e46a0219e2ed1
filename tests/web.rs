//! The web page in-process (`oneshot`, no socket), over captures written to the store before
//! start: the list and its filters, a capture's page, escaping, 404, and signing in.

mod support;

use alertprof::model::{CaptureId, Decision, Outcome, Signal};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use serde_json::{Value, json};
use support::oneshot::{Fixture, call, get};

const CONFIG: &str = r#"
storage: {dir: "{data}"}
targets:
  - {name: checkout, pprof_url: "http://127.0.0.1:9", alert_labels: {job: checkout}}
  - {name: billing, pprof_url: "http://127.0.0.1:9", alert_labels: {job: billing}}
rules:
  - {name: cpu-spike, alert_labels: {alertname: HighCPU}, capture: [cpu]}
  - {name: mem-spike, alert_labels: {alertname: HighMemory}, capture: [heap, goroutine_text]}
"#;

const CPU: &str = "20261121T100000.000Z-cpu-spike-cpu";
const HEAP: &str = "20261121T110000.000Z-mem-spike-heap";
const FAILED: &str = "20261121T120000.000Z-mem-spike-goroutine_text";
const HOSTILE: &str = "<script>alert('pwned')</script>";

/// Writes one capture's metadata (and a profile file when it is ok) where the store keeps it.
fn write_capture(data: &std::path::Path, meta: Value) {
    let dir = data.join(meta["target"].as_str().unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(file) = meta["file"].as_str() {
        std::fs::write(dir.join(file), vec![0u8; meta["bytes"].as_u64().unwrap() as usize]).unwrap();
    }
    std::fs::write(dir.join(format!("{}.json", meta["id"].as_str().unwrap())), meta.to_string()).unwrap();
}

/// Three captures (a CPU profile from an alert with a hostile label, a heap profile from a
/// watch rule, a failed goroutine dump) and alertprof opened on them, with `extra` config.
fn fixture(extra: &str) -> Fixture {
    Fixture::new(&format!("{CONFIG}{extra}"), write_captures)
}

fn write_captures(data: &std::path::Path) {
    write_capture(
        data,
        json!({
            "id": CPU, "target": "checkout", "rule": "cpu-spike", "kind": "cpu", "status": "ok",
            "trigger": {
                "source": "alertmanager", "alertname": "HighCPU", "fingerprint": "fp-1",
                "starts_at": "2026-11-21T09:59:30Z", "received_at": "2026-11-21T09:59:55Z",
                "labels": {"alertname": "HighCPU", "job": "checkout", "note": HOSTILE, "file": "a\u{0}b\u{202e}gpj.exe"},
            },
            "readings": {"cpu_percent": 87.5, "goroutines": 300.0},
            "signals": {
                "cpu_percent": [[1795254900000i64, 4.0], [1795254960000i64, 6.5], [1795254990000i64, 87.5]],
                "goroutines": [[1795254900000i64, 20.0], [1795254990000i64, 300.0]],
            },
            "url": "http://127.0.0.1:9/debug/pprof/profile?seconds=10", "seconds": 10,
            "started_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:10Z",
            "bytes": 2048, "sha256": "ab".repeat(32), "file": format!("{CPU}.pb.gz"),
            "summary": {"sample_type": "cpu/nanoseconds", "total": 10_000_000_000i64, "top": [
                {"function": "main.spin", "flat": 9_870_000_000i64, "flat_percent": 98.7,
                 "cum": 9_870_000_000i64, "cum_percent": 98.7},
                {"function": "main.burnCPU", "flat": 0, "flat_percent": 0.0,
                 "cum": 9_950_000_000i64, "cum_percent": 99.5},
            ]},
        }),
    );
    write_capture(
        data,
        json!({
            "id": HEAP, "target": "billing", "rule": "mem-spike", "kind": "heap", "status": "ok",
            "trigger": {"source": "watch"}, "readings": {"memory_percent": 91.0},
            "url": "http://127.0.0.1:9/debug/pprof/heap",
            "started_at": "2026-11-21T11:00:00Z", "finished_at": "2026-11-21T11:00:01Z",
            "bytes": 512, "file": format!("{HEAP}.pb.gz"),
            "summary": {"sample_type": "inuse_space/bytes", "total": 5_767_168, "top": [
                {"function": "main.leak", "flat": 5_242_880, "flat_percent": 90.9,
                 "cum": 5_242_880, "cum_percent": 90.9},
            ]},
        }),
    );
    write_capture(
        data,
        json!({
            "id": FAILED, "target": "billing", "rule": "mem-spike", "kind": "goroutine_text",
            "status": "failed", "error": format!("target answered 500: {HOSTILE}"),
            "trigger": {"source": "alertmanager", "alertname": HOSTILE},
            "url": "http://127.0.0.1:9/debug/pprof/goroutine?debug=2",
            "started_at": "2026-11-21T12:00:00Z", "finished_at": "2026-11-21T12:00:01Z", "bytes": 0,
        }),
    );
}

fn with_cookie(method: &str, path: &str, cookie: &str) -> Request<Body> {
    Request::builder().method(method).uri(path).header("cookie", cookie).body(Body::empty()).unwrap()
}

/// The capture ids linked from a list page, in order.
fn listed(page: &str) -> Vec<&str> {
    page.split("<a class=\"capture\" href=\"/captures/").skip(1).filter_map(|s| s.split('"').next()).collect()
}

/// `/` lists every capture newest first with its time, target, rule, kind, status, trigger
/// and top function, as an HTML page whose policy allows nothing from elsewhere.
#[tokio::test]
async fn list_newest_first() {
    let f = fixture("");
    let answer = call(&f.app, get("/")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let policy = answer.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'; img-src 'self'; style-src 'sha256-"), "{policy}");
    assert!(!policy.contains("http") && !policy.contains("unsafe"), "{policy}");
    assert_eq!(answer.headers[header::CACHE_CONTROL], "no-store");
    let page = &answer.body;
    assert_eq!(listed(page), [FAILED, HEAP, CPU]);
    assert!(page.contains(&format!(
        "<a class=\"capture\" href=\"/captures/{CPU}\">2026-11-21 10:00:00Z</a></td><td>checkout</td>\
         <td>cpu-spike</td><td>cpu</td><td class=\"ok\">ok</td><td>alertmanager / HighCPU</td>\
         <td class=\"mono\">main.spin 98.7%</td>"
    )));
    assert!(page.contains("<td class=\"failed\">failed</td>"));
    assert!(page.contains("<td>watch</td><td class=\"mono\">main.leak 90.9%</td>"), "{page}");
    // Nothing is loaded from anywhere but alertprof itself.
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "{page}");
    assert!(page.contains("No decisions since alertprof started."));
}

/// The filter form narrows by target, rule and kind (empty means any), limits the list,
/// and offers the configured targets and rules and every kind, keeping the choice.
#[tokio::test]
async fn list_filters() {
    let f = fixture("");
    let page = call(&f.app, get("/?target=billing&rule=&kind=&limit=")).await.body;
    assert_eq!(listed(&page), [FAILED, HEAP]);
    assert!(page.contains("<option value=\"billing\" selected>billing</option>"), "{page}");
    assert!(page.contains("<option value=\"checkout\">checkout</option>"));
    assert!(page.contains("<option value=\"mem-spike\">mem-spike</option>"));
    assert!(page.contains("<option value=\"fgprof\">fgprof</option>"));
    assert_eq!(listed(&call(&f.app, get("/?kind=cpu")).await.body), [CPU]);
    assert_eq!(listed(&call(&f.app, get("/?rule=mem-spike&kind=heap")).await.body), [HEAP]);
    assert_eq!(listed(&call(&f.app, get("/?limit=1")).await.body), [FAILED]);
    assert_eq!(listed(&call(&f.app, get("/?limit=lots")).await.body), [FAILED, HEAP, CPU]);
    let none = call(&f.app, get("/?target=gone")).await.body;
    assert!(listed(&none).is_empty() && none.contains("No captures yet."));
    assert!(none.contains("<option value=\"gone\" selected>gone</option>"), "{none}");
}

/// A capture's page: what it is, its trigger and labels, readings, top functions in the
/// sample type's unit, the flame graph, the download link and how to open it, and the
/// decisions that made it.
#[tokio::test]
async fn capture_page() {
    let f = fixture("");
    // A decision that made the capture: one the intake records, turned into that.
    let alert = support::payload(&[(json!({"alertname": "HighCPU", "job": "nowhere"}), "fp-1")]);
    let request = Request::post("/api/v1/alerts").header("content-type", "application/json");
    call(&f.app, request.body(Body::from(alert.to_string())).unwrap()).await;
    let mut decision: Decision = f.app.decisions.recent(1).pop().expect("a decision");
    decision.at = "2026-11-21T10:00:10Z".parse().unwrap();
    decision.outcome = Outcome::Captured;
    decision.reason = "all 1 kinds captured".into();
    decision.target = Some("checkout".into());
    decision.captures = vec![CaptureId::parse(CPU).unwrap()];
    f.app.decisions.record(decision);
    let answer = call(&f.app, get(&format!("/captures/{CPU}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    let page = &answer.body;
    for wanted in [
        "<dd id=\"capture-target\">checkout</dd>".to_string(),
        "<dd id=\"capture-kind\">cpu</dd>".into(),
        "<dd id=\"capture-size\">2.00KiB</dd>".into(),
        "<dt>fingerprint</dt><dd>fp-1</dd><dt>starts at</dt><dd>2026-11-21 09:59:30Z</dd>".into(),
        "<tr><td>job</td><td>checkout</td></tr>".into(),
        "<tr><td>cpu_percent</td><td class=\"num\">87.5</td></tr>".into(),
        "<tr><td>goroutines</td><td class=\"num\">300</td></tr>".into(),
        "cpu/nanoseconds, total 10.00s".into(),
        "<tr><td class=\"num\">9.87s</td><td class=\"num\">98.70%</td><td class=\"num\">9.87s</td>\
         <td class=\"num\">98.70%</td><td class=\"mono\">main.spin</td></tr>"
            .into(),
        format!("<img class=\"flame\" id=\"flamegraph\" src=\"/api/v1/captures/{CPU}/flamegraph.svg\""),
        format!("<a href=\"/api/v1/captures/{CPU}/flamegraph.svg\" id=\"flamegraph-link\">"),
        format!("<a id=\"download\" href=\"/api/v1/captures/{CPU}/profile\""),
        format!("go tool pprof -http=: {CPU}.pb.gz"),
        format!("curl -fo {CPU}.pb.gz http://127.0.0.1:9731/api/v1/captures/{CPU}/profile"),
        "<td>captured</td><td>alertmanager</td><td>cpu-spike</td><td>checkout</td><td>HighCPU</td>\
         <td>all 1 kinds captured</td>"
            .into(),
    ] {
        assert!(page.contains(&wanted), "{wanted} not in:\n{page}");
    }
    assert!(!page.contains("Grew vs baseline"));

    // A failed capture shows its error, and offers neither a download nor a flame graph.
    let failed = call(&f.app, get(&format!("/captures/{FAILED}"))).await.body;
    assert!(failed.contains("<pre class=\"error\" id=\"capture-error\">target answered 500: "), "{failed}");
    assert!(!failed.contains("id=\"download\"") && !failed.contains("flamegraph"));
    assert!(failed.contains("No decision in memory mentions this capture"));
}

/// Alert labels, alert names and errors are attacker-controlled: they come out as text.
#[tokio::test]
async fn hostile_strings_are_escaped() {
    let f = fixture("");
    let escaped = "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;";
    for path in ["/".to_string(), format!("/captures/{CPU}"), format!("/captures/{FAILED}")] {
        let page = call(&f.app, get(&path)).await.body;
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert_eq!(page.matches("<script>").count(), 1, "{path}: only the page's own script");
    }
    assert!(
        call(&f.app, get(&format!("/captures/{CPU}")))
            .await
            .body
            .contains(&format!("<tr><td>note</td><td>{escaped}</td></tr>"))
    );
    assert!(call(&f.app, get("/")).await.body.contains(&format!("alertmanager / {escaped}")));
    // A label that hides characters shows them as their codes.
    let page = call(&f.app, get(&format!("/captures/{CPU}"))).await.body;
    assert!(page.contains("<tr><td>file</td><td>a[U+0000]b[U+202E]gpj.exe</td></tr>"), "{page}");
    assert!(!page.contains('\u{202e}') && !page.contains('\u{0}'));
    let page = call(&f.app, get("/?target=%22%3E%3Cscript%3E")).await.body;
    assert!(page.contains("<option value=\"&quot;&gt;&lt;script&gt;\" selected>"), "{page}");
}

/// Unknown and invalid ids get a 404 page; nothing outside the store is named.
#[tokio::test]
async fn unknown_capture_is_404() {
    let f = fixture("");
    for path in
        ["/captures/20200101T000000.000Z-x-cpu", "/captures/..", "/captures/%2e%2e%2fdata", "/captures/a%3Cb"]
    {
        let answer = call(&f.app, get(path)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(answer.body.contains("No such capture"), "{path}");
        assert!(!answer.body.contains("a<b"));
    }
}

/// With basic auth the pages answer 401 with the browser's prompt, and open with the
/// credentials.
#[tokio::test]
async fn basic_auth_prompts() {
    let f = fixture("auth: {basic_auth: {username: am, password_file: pw}}\n");
    for path in ["/".to_string(), format!("/captures/{CPU}")] {
        let answer = call(&f.app, get(&path)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Basic realm=\"alertprof\"");
        assert!(!answer.body.contains(CPU), "{path} leaks the captures");
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode("am:hunter2");
    let request = Request::get("/").header("authorization", format!("Basic {encoded}")).body(Body::empty());
    let answer = call(&f.app, request.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(listed(&answer.body), [FAILED, HEAP, CPU]);
    // No sign-in form and no sign-out button: the browser handles basic auth.
    assert!(!answer.body.contains("/logout"));
    assert_eq!(call(&f.app, get("/login")).await.status, StatusCode::SEE_OTHER);
}

/// With a bearer token a page asks for it in a form; a wrong token gets the form again; the
/// right one sets an HttpOnly, SameSite=Strict session cookie that opens pages and API reads
/// but never a POST to the webhook or reload. Signing out clears it.
#[tokio::test]
async fn bearer_sign_in() {
    let f = fixture("auth: {bearer_token_file: token}\n");
    let answer = call(&f.app, get("/")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert!(answer.body.contains("<form method=\"post\" action=\"/login\" id=\"login\">"));
    assert!(answer.body.contains("name=\"token\""));
    assert!(!answer.body.contains(CPU));
    assert_eq!(call(&f.app, get(&format!("/captures/{CPU}"))).await.status, StatusCode::UNAUTHORIZED);
    // The API still answers API clients as before.
    let api = call(&f.app, get("/api/v1/captures")).await;
    assert_eq!((api.status, api.body.as_str()), (StatusCode::UNAUTHORIZED, "unauthorized\n"));

    let login = |token: &str| {
        Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}")))
            .unwrap()
    };
    let wrong = call(&f.app, login("guess")).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("id=\"login-error\"") && wrong.body.contains("id=\"login\""));
    assert!(!wrong.headers.contains_key(header::SET_COOKIE));

    let right = call(&f.app, login("s3cret")).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER);
    assert_eq!(right.headers[header::LOCATION], "/");
    let set_cookie = right.headers[header::SET_COOKIE].to_str().unwrap();
    let (cookie, attributes) = set_cookie.split_once("; ").unwrap();
    assert_eq!(attributes, "HttpOnly; SameSite=Strict; Path=/");
    let value = cookie.strip_prefix("alertprof_session=").unwrap();
    assert_eq!(value.len(), 64, "a hex sha256: {value}");
    assert!(!set_cookie.contains("s3cret"));

    let page = call(&f.app, with_cookie("GET", "/", cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(listed(&page.body), [FAILED, HEAP, CPU]);
    assert!(page.body.contains("action=\"/logout\""));
    assert_eq!(
        call(&f.app, with_cookie("GET", &format!("/captures/{CPU}"), cookie)).await.status,
        StatusCode::OK
    );
    assert_eq!(call(&f.app, with_cookie("HEAD", "/", cookie)).await.status, StatusCode::OK);
    let listed_json = call(&f.app, with_cookie("GET", "/api/v1/captures", cookie)).await;
    assert_eq!(listed_json.status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&listed_json.body).unwrap().as_array().unwrap().len(), 3);
    let profile = call(&f.app, with_cookie("GET", &format!("/api/v1/captures/{CPU}/profile"), cookie)).await;
    assert_eq!((profile.status, profile.body.len()), (StatusCode::OK, 2048));

    // The cookie never writes: a page elsewhere cannot post alerts or reload through it.
    let alert = Request::post("/api/v1/alerts")
        .header("cookie", cookie)
        .header("content-type", "application/json")
        .body(Body::from(support::payload(&[(json!({"alertname": "HighCPU"}), "x")]).to_string()))
        .unwrap();
    assert_eq!(call(&f.app, alert).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(call(&f.app, with_cookie("POST", "/-/reload", cookie)).await.status, StatusCode::UNAUTHORIZED);
    assert!(f.app.decisions.recent(10).is_empty());

    // A cookie for another token, or a tampered one, opens nothing.
    let forged = format!("alertprof_session={}", "0".repeat(64));
    assert_eq!(call(&f.app, with_cookie("GET", "/", &forged)).await.status, StatusCode::UNAUTHORIZED);
    // The bearer header opens pages too.
    let request = Request::get("/").header("authorization", "Bearer s3cret").body(Body::empty()).unwrap();
    assert_eq!(call(&f.app, request).await.status, StatusCode::OK);

    let logout = call(&f.app, Request::post("/logout").body(Body::empty()).unwrap()).await;
    assert_eq!(logout.status, StatusCode::SEE_OTHER);
    assert_eq!(
        logout.headers[header::SET_COOKIE],
        "alertprof_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    );
}

/// Without `auth` the pages are open and there is nothing to sign in to.
#[tokio::test]
async fn open_without_auth() {
    let f = fixture("");
    let page = call(&f.app, get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("/logout"));
    let login = call(&f.app, get("/login")).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER);
    assert_eq!(login.headers[header::LOCATION], "/");
}

/// A stored profile gone from disk behind alertprof's back is our fault, not the client's:
/// the download and the flame graph answer a plain 500 with nothing of the path or the
/// cause, and the log says what failed.
#[tokio::test]
async fn internal_failures_are_plain_500s_and_logged() {
    support::logs();
    let f = fixture("");
    let data = f.data();
    std::fs::remove_file(data.join("checkout").join(format!("{CPU}.pb.gz"))).unwrap();
    for path in [format!("/api/v1/captures/{CPU}/profile"), format!("/api/v1/captures/{CPU}/flamegraph.svg")]
    {
        let answer = call(&f.app, get(&path)).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}: {}", answer.body);
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(body, json!({"error": "internal error; see alertprof's log"}), "{path}");
    }
    let logs = support::logs();
    let wanted = format!("{CPU}.pb.gz");
    let lines: Vec<&str> =
        logs.lines().filter(|line| line.contains("ERROR") && line.contains(&wanted)).collect();
    assert!(lines.iter().any(|line| line.contains("Reading the store failed.")), "{logs}");
    assert!(lines.iter().any(|line| line.contains("Analysis failed.")), "{logs}");
}

/// A capture's page draws its target's signals around it: the readings, the trigger's
/// start, when the alert arrived and what the profile covers, as inline SVG; the list
/// draws each target's recent readings with its captures on them.
#[tokio::test]
async fn charts() {
    let f = fixture("");
    let page = call(&f.app, get(&format!("/captures/{CPU}"))).await.body;
    for wanted in [
        "<h2 id=\"signals\">Signals",
        "id=\"chart-cpu_percent\"",
        "id=\"chart-goroutines\"",
        "class=\"trigger\"",
        "class=\"received\"",
        "class=\"window\"",
        "<polyline points=",
        ">09:55:00</text>",
        ">10:00:10</text>",
    ] {
        assert!(page.contains(wanted), "{wanted} not in:\n{page}");
    }
    let heap = call(&f.app, get(&format!("/captures/{HEAP}"))).await.body;
    assert!(!heap.contains("id=\"signals\""), "no readings kept, no chart");

    let list = call(&f.app, get("/")).await.body;
    assert!(!list.contains("id=\"timelines\""), "nothing sampled yet");
    let now = chrono::Utc::now();
    for (seconds, value) in [(-20, 5.0), (-10, 60.0), (0, 12.0)] {
        let sample = std::collections::BTreeMap::from([(Signal::CpuPercent.key(), Ok(value))]);
        f.app.verifier.record("checkout", now + chrono::Duration::seconds(seconds), sample);
    }
    let list = call(&f.app, get("/")).await.body;
    assert!(list.contains("id=\"timeline-checkout\""), "{list}");
    assert!(!list.contains("id=\"timeline-billing\""), "billing is not sampled");
}
