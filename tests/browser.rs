//! The web page in a real headless browser: Debian's chromium driven over the W3C WebDriver
//! protocol by chromedriver, against alertprof with a bearer token and a real capture of
//! the Go demo target. Sign in, see the captures, filter, open one.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::{Demo, Killed, Running, payload};

const TOKEN: &str = "browser-s3cret";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const INSTALL: &str = "apt-get install chromium chromium-driver";

const CONFIG: &str = r#"
storage: {dir: "{data}/store"}
auth: {bearer_token_file: token}
sample_interval: 500ms
targets:
  - {name: demo, pprof_url: DEMO_URL, metrics_url: DEMO_URL/metrics, process: {listen_port: DEMO_PORT}, alert_labels: {job: demo}}
rules:
  - {name: cpu-spike, alert_labels: {alertname: HighCPU}, capture: [cpu], seconds: 2}
"#;

/// chromedriver and one browser session; the session is ended and chromedriver killed by
/// its PID on drop, also when the test fails.
struct Browser {
    _driver: Killed,
    port: u16,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Fails at once, naming the packages, when chromium or chromedriver is missing: this
    /// test never passes without a browser.
    fn require() {
        assert!(Path::new(CHROMIUM).is_file(), "{CHROMIUM} is missing ({INSTALL})");
        let version = Command::new("chromedriver").arg("--version").output();
        let version = version.unwrap_or_else(|e| panic!("chromedriver does not run ({INSTALL}): {e}"));
        assert!(version.status.success(), "chromedriver --version failed ({INSTALL})");
    }

    async fn start(log: &Path) -> Browser {
        Browser::require();
        // chromedriver picks its own port and says which on stdout.
        let mut driver = Command::new("chromedriver")
            .arg("--port=0")
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver starts ({INSTALL}): {e}"));
        let stdout = driver.stdout.take().unwrap();
        let driver = Killed(driver);
        let port = tokio::task::spawn_blocking(move || {
            let lines = BufReader::new(stdout).lines().map_while(Result::ok);
            let mut started = lines
                .filter_map(|line| line.split("started successfully on port ").nth(1).map(str::to_string));
            let port = started.next().and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok());
            // Keep draining what it prints, so it never blocks on a full pipe.
            std::thread::spawn(move || started.for_each(drop));
            port
        })
        .await
        .unwrap()
        .unwrap_or_else(|| {
            panic!("chromedriver did not say its port: {}", std::fs::read_to_string(log).unwrap())
        });
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            _driver: driver,
            port,
            session: String::new(),
            http: support::client(),
            _profile: profile,
        };
        support::eventually("chromedriver to be ready", Duration::from_secs(20), async || {
            let status = browser.http.get(browser.url("/status")).send().await;
            if let Ok(response) = status
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return Ok(());
            }
            Err(std::fs::read_to_string(log).unwrap())
        })
        .await;
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--no-first-run".into(),
            "--window-size=1280,900".into(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let created = browser.call(reqwest::Method::POST, "/session", Some(capabilities)).await;
        browser.session = created["sessionId"].as_str().expect("a session id").to_string();
        browser
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One WebDriver command; its `value`. A WebDriver error fails the test with its message.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method.clone(), self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    async fn session(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body).await
    }

    async fn goto(&self, url: &str) {
        self.session(reqwest::Method::POST, "/url", Some(json!({"url": url}))).await;
    }

    async fn current_url(&self) -> String {
        self.session(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_string()
    }

    /// Waits for an element matching `css` and returns its reference.
    async fn find(&self, css: &str) -> String {
        support::eventually(&format!("{css} on the page"), Duration::from_secs(10), async || {
            let path = format!("/session/{}/element", self.session);
            let body = json!({"using": "css selector", "value": css});
            let response = self.http.post(self.url(&path)).json(&body).send().await.unwrap();
            if response.status().is_success() {
                let answer: Value = response.json().await.unwrap();
                return Ok(answer["value"][ELEMENT].as_str().unwrap().to_string());
            }
            Err(format!("at {}", self.current_url().await))
        })
        .await
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        let text = self.session(reqwest::Method::GET, &format!("/element/{element}/text"), None).await;
        text.as_str().unwrap().to_string()
    }

    async fn attribute(&self, css: &str, name: &str) -> String {
        let element = self.find(css).await;
        let path = format!("/element/{element}/attribute/{name}");
        self.session(reqwest::Method::GET, &path, None).await.as_str().unwrap_or_default().to_string()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.session(reqwest::Method::POST, &format!("/element/{element}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        let path = format!("/element/{element}/value");
        self.session(reqwest::Method::POST, &path, Some(json!({"text": text}))).await;
    }

    async fn script(&self, script: &str) -> Value {
        self.session(reqwest::Method::POST, "/execute/sync", Some(json!({"script": script, "args": []})))
            .await
    }

    /// Waits until the page's URL satisfies `ok`.
    async fn wait_url(&self, ok: impl Fn(&str) -> bool) -> String {
        support::eventually("the page's URL", Duration::from_secs(10), async || {
            let url = self.current_url().await;
            if ok(&url) { Ok(url) } else { Err(url) }
        })
        .await
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let png = self.session(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap()
    }

    /// The browser console so far (errors, CSP violations).
    async fn console(&self) -> Vec<String> {
        let log = self.session(reqwest::Method::POST, "/se/log", Some(json!({"type": "browser"}))).await;
        log.as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["message"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Synchronous, as Drop must be: end the session so chromedriver closes chromium.
        if !self.session.is_empty()
            && let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port))
        {
            stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                self.session, self.port
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                stream.read_to_end(&mut Vec::new()).ok();
            }
        }
        // chromedriver itself is killed when `_driver` is dropped, after this.
    }
}

/// Width and height of a PNG, from its header.
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && &png[12..16] == b"IHDR", "not a PNG");
    let number = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

fn browser_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Signing in with the bearer token in chromium shows the real capture of the Go demo
/// (screenshot kept in target/browser/); the filter's inline script passes the page's
/// policy; the first capture's link opens its page with target, kind, top function and the
/// download link; the session cookie is out of scripts' reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_list_and_open_a_capture() {
    Browser::require();
    let demo = Demo::start();
    demo.get("/burn?seconds=10&workers=1").await;
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let config = CONFIG.replace("DEMO_URL", &demo.url()).replace("DEMO_PORT", &demo.addr.port().to_string());
    let running = Running::start(&config, data.path()).await;
    // A few readings of the burning demo (points at least 3 s apart), for the charts.
    running.wait_signal("demo", "cpu_percent", Duration::from_secs(20), |v| v > 10.0).await;
    support::eventually("three readings", Duration::from_secs(30), async || {
        let series = running.app.verifier.series("demo");
        series.get("cpu_percent").is_some_and(|points| points.len() >= 3).then_some(())
    })
    .await;
    let mut alert = payload(&[(json!({"alertname": "HighCPU", "job": "demo"}), "fp-browser")]);
    // Late, as alerts are: the burn began a few seconds before the alert says it did.
    alert["alerts"][0]["startsAt"] = json!((chrono::Utc::now() - chrono::Duration::seconds(4)).to_rfc3339());
    let answer = support::client().post(running.url("/api/v1/alerts")).bearer_auth(TOKEN).json(&alert).send();
    assert_eq!(answer.await.unwrap().status(), 200);
    let capture = support::eventually("a capture", Duration::from_secs(30), async || {
        let captures = running.get_json_auth("/api/v1/captures", TOKEN).await;
        captures.as_array().and_then(|list| list.first()).cloned()
    })
    .await;
    assert_eq!(capture["status"], "ok", "{capture}");
    let id = capture["id"].as_str().unwrap().to_string();
    let top = capture["summary"]["top"][0]["function"].as_str().expect("a top function").to_string();

    let dir = browser_dir();
    let browser = Browser::start(&dir.join("chromedriver.log")).await;
    browser.goto(&running.url("/")).await;
    assert_eq!(browser.text("h2").await, "Sign in");
    browser.type_into("#token", TOKEN).await;
    browser.click("#login button[type=submit]").await;
    let url = browser.wait_url(|url| url == running.url("/")).await;
    assert_eq!(browser.text("#captures tbody tr td:nth-child(2)").await, "demo", "at {url}");
    let row = browser.text("#captures tbody tr").await;
    assert!(row.contains("cpu-spike") && row.contains("cpu") && row.contains(&top), "{row}");
    assert!(browser.text("#decisions + table").await.contains("captured"));

    // The demo's recent readings, with its capture marked on them.
    assert_eq!(browser.attribute("#timeline-demo", "aria-label").await, "cpu_percent");
    assert_eq!(
        browser.script("return document.querySelectorAll('#timeline-demo path.capture').length").await,
        1
    );
    let png = browser.screenshot().await;
    std::fs::write(dir.join("captures.png"), &png).unwrap();
    let (width, height) = png_size(&png);
    assert!((800..=4000).contains(&width) && (500..=4000).contains(&height), "{width}x{height}");
    assert!(png.len() > 10_000 && png.len() < 10_000_000, "{} bytes", png.len());

    // The cookie is HttpOnly: no script on the page can read it.
    assert_eq!(browser.script("return document.cookie").await, "");
    // Choosing a kind submits the filter through the page's own inline script.
    browser.click("#filter-kind option[value=heap]").await;
    browser.wait_url(|url| url.contains("kind=heap")).await;
    assert_eq!(browser.text("#no-captures").await, "No captures yet.");
    browser.click("#filter-kind option[value=cpu]").await;
    browser.wait_url(|url| url.contains("kind=cpu")).await;

    browser.click("#captures a.capture").await;
    let url = browser.wait_url(|url| url.contains("/captures/")).await;
    assert_eq!(url, running.url(&format!("/captures/{id}")));
    assert_eq!(browser.text("#capture-target").await, "demo");
    assert_eq!(browser.text("#capture-kind").await, "cpu");
    assert!(browser.text("#top tbody tr:first-child").await.contains(&top));
    let download = format!("/api/v1/captures/{id}/profile");
    assert_eq!(browser.attribute("#download", "href").await, download);
    assert!(browser.text("#open-command").await.contains(&format!("go tool pprof -http=: {id}.pb.gz")));
    // The flame graph is drawn, loaded as an image with the session cookie, and names the
    // burning function.
    let loaded = support::eventually("the flame graph loaded", Duration::from_secs(10), async || {
        let width = "const i = document.getElementById('flamegraph'); return i.complete ? i.naturalWidth : 0";
        browser.script(width).await.as_u64().filter(|&width| width > 0)
    })
    .await;
    assert!(loaded > 100, "the flame graph is {loaded} pixels wide");
    browser.script("document.getElementById('flamegraph').scrollIntoView()").await;
    std::fs::write(dir.join("capture.png"), browser.screenshot().await).unwrap();
    // The signals around the capture, drawn: the readings' line, the trigger, the window.
    let drawn = browser
        .script(
            "const c = document.getElementById('chart-cpu_percent'); \
             return [c.getBoundingClientRect().width, c.querySelectorAll('polyline').length, \
                     c.querySelectorAll('.window').length, c.querySelectorAll('.received').length]",
        )
        .await;
    assert_eq!(drawn, json!([640, 1, 1, 1]), "the chart as drawn");
    assert_eq!(
        browser.script("return document.querySelectorAll('#chart-cpu_percent .trigger').length").await,
        1
    );
    browser.script("document.getElementById('signals').scrollIntoView()").await;
    let png = browser.screenshot().await;
    std::fs::write(dir.join("signals.png"), &png).unwrap();
    assert!(png.len() > 10_000, "{} bytes", png.len());
    let kept =
        std::fs::read_to_string(data.path().join("store/demo").join(format!("{id}.flamegraph.svg"))).unwrap();
    assert!(kept.contains("main.spin"));
    // The download link works with the browser's session cookie alone.
    let cookie = browser.session(reqwest::Method::GET, "/cookie/alertprof_session", None).await;
    assert_eq!((cookie["httpOnly"].as_bool(), cookie["sameSite"].as_str()), (Some(true), Some("Strict")));
    let profile = support::client()
        .get(running.url(&download))
        .header("cookie", format!("alertprof_session={}", cookie["value"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);
    assert_eq!(profile.bytes().await.unwrap().len() as u64, capture["bytes"].as_u64().unwrap());

    let console = browser.console().await;
    assert!(!console.iter().any(|line| line.contains("Content Security Policy")), "{console:#?}");
    drop(browser);
    running.stop().await;
}
