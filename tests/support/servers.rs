//! Prometheus and Alertmanager, the real servers, for the tests that run them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Killed, eventually};

/// A Prometheus or Alertmanager on a port it picks itself, killed on drop; its log is kept
/// for failure messages (its tail printed if the test fails) and tells the port.
pub struct Server {
    _child: Killed,
    log: PathBuf,
    /// `127.0.0.1:PORT`, as it logged it.
    pub address: String,
}

impl Server {
    pub async fn start(program: &str, args: &[String], log: PathBuf) -> Server {
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{program} starts (apt-get install prometheus prometheus-alertmanager): {e}")
            });
        let mut server = Server { _child: Killed(child), log, address: String::new() };
        server.address = eventually(&format!("{program} to listen"), Duration::from_secs(30), async || {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            let listening = text.lines().filter(|line| line.contains("msg=\"Listening on\""));
            let address = listening.filter_map(|line| line.split("address=").nth(1)).next();
            address
                .map(|address| address.trim().to_string())
                .ok_or_else(|| format!("\n{}", server.log_tail()))
        })
        .await;
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- the log's tail of {}:\n{}", self.log.display(), self.log_tail());
        }
    }
}

/// Alertmanager with `dir/alertmanager.yml`, its data and log in `dir`, without gossip
/// (else its first notification waits for the cluster to settle).
pub async fn alertmanager(dir: &std::path::Path) -> Server {
    Server::start(
        "prometheus-alertmanager",
        &[
            format!("--config.file={}", dir.join("alertmanager.yml").display()),
            format!("--storage.path={}", dir.join("am-data").display()),
            "--cluster.listen-address=".into(),
        ],
        dir.join("alertmanager.log"),
    )
    .await
}

pub async fn wait_ready(url: &str, server: &Server) {
    eventually(&format!("{url} to be ready"), Duration::from_secs(30), async || {
        match super::client().get(url).send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            _ => Err(format!("\n{}", server.log_tail())),
        }
    })
    .await
}
