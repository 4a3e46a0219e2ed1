//! The real `alertprof serve` binary, listening on a port it picks itself (port 0) and
//! reports in its log: no port is guessed ahead and raced for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Killed, client, payload};

/// `alertprof serve` in `dir`, optionally wrapped (e.g. in `unshare`); killed on drop.
pub struct Serve {
    pub child: Killed,
    pub base: String,
    log: PathBuf,
}

impl Serve {
    /// Writes `config` (without `listen_address`) to `dir/alertprof.yaml` and starts the
    /// service on it; returns once it answers.
    pub async fn start(dir: &Path, config: &str, wrap: Option<String>) -> Serve {
        std::fs::write(dir.join("alertprof.yaml"), format!("listen_address: 127.0.0.1:0\n{config}")).unwrap();
        let binary = env!("CARGO_BIN_EXE_alertprof");
        let mut command = match wrap {
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
        let log = dir.join("alertprof.log");
        let child = command
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut serve = Serve { child: Killed(child), base: String::new(), log };
        let line = serve.wait_log("alertprof listening.", Duration::from_secs(20)).await;
        let address =
            line.split_whitespace().find_map(|part| part.strip_prefix("address=")).expect("the address");
        serve.base = format!("http://{address}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while client().get(format!("{}/-/ready", serve.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "alertprof did not answer: {}", serve.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a log line containing `text`, and returns it.
    pub async fn wait_log(&self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self.log().lines().find(|line| line.contains(text)) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "no {text:?} in the log after {within:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Posts one firing `Spike` alert.
    pub async fn post(&self, fingerprint: &str) -> u16 {
        let alert = payload(&[(json!({"alertname": "Spike"}), fingerprint)]);
        let answer = client().post(format!("{}/api/v1/alerts", self.base)).json(&alert).send().await.unwrap();
        answer.status().as_u16()
    }

    pub async fn get(&self, path: &str) -> Value {
        client().get(format!("{}{path}", self.base)).send().await.unwrap().json().await.unwrap()
    }

    /// Waits until `count` decisions are listed; returns the newest.
    pub async fn wait_decision(&self, count: usize) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let decisions = self.get("/api/v1/decisions").await;
            if decisions.as_array().unwrap().len() >= count {
                return decisions[0].clone();
            }
            assert!(Instant::now() < deadline, "no decision: {decisions}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`-TERM`, `-KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        Command::new("kill").args([signal, &self.child.0.id().to_string()]).status().unwrap();
    }

    /// Waits for the process to exit (blocking).
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.0.wait().unwrap()
    }
}
