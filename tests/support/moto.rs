//! moto's S3 server (`pip install "moto[server]"`; tests/run.sh installs it and names it in
//! `MOTO_SERVER`), on a loopback port, killed on drop: the bucket of the fleet tests.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Killed, client, eventually};

/// moto's S3 server on a loopback port, killed on drop.
pub struct Moto {
    _child: Killed,
    /// Its log (werkzeug's: the port it bound, then a line per request), a file so that
    /// it never blocks on a full pipe.
    _log: tempfile::NamedTempFile,
    /// `http://127.0.0.1:PORT`, the endpoint to give `storage.object_store`.
    pub url: String,
}

/// `$MOTO_SERVER`, else where `.ci/pyvenv` puts it, else `moto_server` on the PATH.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    let installed = cache.join("alertprof/moto/bin/moto_server");
    if installed.exists() {
        return installed;
    }
    PathBuf::from("moto_server")
}

impl Moto {
    /// Starts moto on a port it picks itself (port 0), read from its log, and waits until
    /// it answers.
    pub async fn start() -> Moto {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(moto_binary())
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("moto_server runs (tests/run.sh installs it: pip install \"moto[server]\")");
        let child = Killed(child);
        let url = eventually("moto_server to listen", Duration::from_secs(30), async || {
            let text = std::fs::read_to_string(log.path()).unwrap_or_default();
            let url = text.lines().find_map(|line| line.trim().strip_prefix("* Running on "));
            url.map(|url| url.trim().to_string()).ok_or_else(|| format!("\n{text}"))
        })
        .await;
        let moto = Moto { _child: child, _log: log, url };
        eventually("moto_server to answer", Duration::from_secs(30), async || {
            client().get(&moto.url).send().await.ok()
        })
        .await;
        moto
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let answer = client().put(format!("{}/{bucket}", self.url)).send().await.unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
    }

    /// Every key under `prefix`, as S3's ListObjectsV2 gives them.
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?list-type=2&prefix={prefix}", self.url);
        let text = client().get(url).send().await.unwrap().text().await.unwrap();
        text.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }
}
