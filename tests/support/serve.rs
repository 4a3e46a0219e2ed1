//! The real `alertprof serve` binary, listening on a port it picks itself (port 0) and
//! reports in its log: no port is guessed ahead and raced for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::{Killed, client, eventually, payload};

/// `alertprof serve` in `dir`, optionally wrapped (e.g. in `unshare`); killed on drop, its
/// log printed if the test fails.
pub struct Serve {
    pub child: Killed,
    pub base: String,
    log: PathBuf,
    /// Sent as `Authorization: Bearer` by `get`, for a config with `auth`.
    bearer: Option<String>,
}

impl Serve {
    /// Writes `config` (without `listen_address`) to `dir/alertprof.yaml` and starts the
    /// service on it; returns once it answers.
    pub async fn start(dir: &Path, config: &str, wrap: Option<String>) -> Serve {
        std::fs::write(dir.join("alertprof.yaml"), format!("listen_address: 127.0.0.1:0\n{config}")).unwrap();
        let binary = Serve::binary();
        let command = match wrap {
            None => {
                let mut command = Command::new(binary);
                command.args(["serve", "--config", "alertprof.yaml"]);
                command
            }
            Some(script) => {
                let mut command = Command::new("unshare");
                command.args([
                    "-m",
                    "sh",
                    "-c",
                    &format!("{script} && exec {binary} serve --config alertprof.yaml"),
                ]);
                command
            }
        };
        Serve::run(dir, command).await
    }

    /// The compiled `alertprof`.
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_alertprof")
    }

    /// Runs `command` (an `alertprof serve` whose config listens on port 0), in `dir` unless
    /// it names its own, its log (text or JSON) in `dir/alertprof.log`; returns once it
    /// answers.
    pub async fn run(dir: &Path, mut command: Command) -> Serve {
        let log = dir.join("alertprof.log");
        if command.get_current_dir().is_none() {
            command.current_dir(dir);
        }
        let child = command
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let mut serve = Serve { child: Killed(child), base: String::new(), log, bearer: None };
        let line = serve.wait_log("alertprof listening.", Duration::from_secs(20)).await;
        let address = match serde_json::from_str::<Value>(&line) {
            Ok(json) => json["address"].as_str().expect("the address").to_string(),
            Err(_) => line
                .split_whitespace()
                .find_map(|part| part.strip_prefix("address="))
                .expect("the address")
                .to_string(),
        };
        serve.base = format!("http://{address}");
        eventually("alertprof to answer", Duration::from_secs(20), async || {
            let ready = client().get(format!("{}/-/ready", serve.base)).send().await;
            ready.map(drop).map_err(|_| serve.log())
        })
        .await;
        serve
    }

    /// Sends `token` with every `get`.
    pub fn with_bearer(mut self, token: &str) -> Serve {
        self.bearer = Some(token.to_string());
        self
    }

    /// The bearer token `get` sends, if any.
    pub fn bearer(&self) -> Option<&str> {
        self.bearer.as_deref()
    }

    /// Where its log is, which outlives it.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `text`, and returns it.
    pub async fn wait_log(&self, text: &str, within: Duration) -> String {
        eventually(&format!("{text:?} in the log"), within, async || {
            let log = self.log();
            let line = log.lines().find(|line| line.contains(text)).map(str::to_string);
            line.ok_or_else(|| format!("\n{log}"))
        })
        .await
    }

    /// Posts one firing `Spike` alert.
    pub async fn post(&self, fingerprint: &str) -> u16 {
        let alert = payload(&[(json!({"alertname": "Spike"}), fingerprint)]);
        let answer = client().post(format!("{}/api/v1/alerts", self.base)).json(&alert).send().await.unwrap();
        answer.status().as_u16()
    }

    pub async fn get(&self, path: &str) -> Value {
        let answer = self.get_raw(path).await;
        let status = answer.status();
        answer.json().await.unwrap_or_else(|e| panic!("GET {path}: {status}, not JSON: {e}"))
    }

    /// GET `path`, with the bearer token if there is one.
    pub async fn get_raw(&self, path: &str) -> reqwest::Response {
        let mut request = client().get(format!("{}{path}", self.base));
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    /// Waits until `count` decisions are listed; returns the newest.
    pub async fn wait_decision(&self, count: usize) -> Value {
        eventually(&format!("{count} decisions"), Duration::from_secs(30), async || {
            let decisions = self.get("/api/v1/decisions").await;
            match decisions.as_array().unwrap().len() >= count {
                true => Ok(decisions[0].clone()),
                false => Err(decisions.to_string()),
            }
        })
        .await
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        Command::new("kill").args([signal, &self.child.0.id().to_string()]).status().unwrap();
    }

    /// SIGTERM, as systemd and the kubelet stop it; the exit status, which must come
    /// `within`.
    pub async fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("-TERM");
        eventually("alertprof to exit on SIGTERM", within, async || self.child.0.try_wait().unwrap()).await
    }

    /// Waits for the process to exit (blocking).
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.0.wait().unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the log of alertprof serve ({}):\n{}", self.log.display(), self.log());
        }
    }
}
