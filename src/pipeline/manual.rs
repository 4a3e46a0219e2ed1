//! `alertprof capture URL --profile KIND`: one capture by hand, validated like every other,
//! written atomically into a directory, with a progress bar while a timed profile runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use crate::capture::{CaptureError, Fetched, PprofClient};
use crate::config::CaptureConfig;
use crate::durable::move_into_place;
use crate::model::{ProfileKind, capture_id};
use crate::store::StagedFile;

#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

/// What a manual capture kept.
#[derive(Debug)]
pub struct Kept {
    pub path: PathBuf,
    pub fetched: Fetched,
}

/// Captures `kind` from the pprof base `url` into `out`. `progress` draws a bar on stderr
/// (drawn only when stderr is a terminal).
pub async fn capture(
    url: &Url,
    kind: ProfileKind,
    seconds: u32,
    out: &Path,
    settings: CaptureConfig,
    progress: bool,
) -> Result<Kept, ManualError> {
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ManualError::Io { action, path, source }
    };
    std::fs::create_dir_all(out).map_err(io("create", out))?;
    let id = capture_id(Utc::now(), "manual", kind);
    let staged = StagedFile::at(out.join(format!(".{id}.part")));
    let client = PprofClient::new(settings);
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress.then(|| progress_bar(kind, seconds, client.timeout(kind, seconds)));
    let ticker = bar.clone().map(|bar| {
        let received = received.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                bar.set_position(start.elapsed().as_secs().min(bar.length().unwrap_or(u64::MAX)));
                bar.set_message(format!(
                    "{} received",
                    indicatif::HumanBytes(received.load(Ordering::Relaxed))
                ));
            }
        })
    });
    let result =
        client.fetch(url, kind, seconds, staged.path(), Some(&received), &CancellationToken::new()).await;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let fetched = result?;
    // Moved, not copied: the profile may be up to `max_profile_bytes`.
    let path = out.join(format!("{id}{}", kind.extension()));
    move_into_place(staged.path(), &path).map_err(io("move into place", &path))?;
    staged.into_path();
    Ok(Kept { path, fetched })
}

fn progress_bar(kind: ProfileKind, seconds: u32, timeout: Duration) -> ProgressBar {
    if kind.is_timed() {
        let bar = ProgressBar::new(seconds.into());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len}s {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{kind} profile"));
        bar
    } else {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {prefix} {msg}").expect("valid template"));
        bar.set_prefix(format!("{kind} profile (timeout {}s)", timeout.as_secs()));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }
}
