//! `alertprof capture URL --profile KIND`: one capture by hand, validated like every other,
//! written atomically into a directory, with a progress bar while a timed profile runs.
//! `--profile perf` samples a process (`--pid`) or a cgroup (`--cgroup`) of this host
//! instead, with no URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use crate::analyze::{Budget, FunctionTable, Measure, TOP_SHOWN};
use crate::capture::perf::{PerfCaptureError, PerfSampler, off_thread};
use crate::capture::{CaptureError, Fetched, PprofClient};
use crate::config::CaptureConfig;
use crate::durable::move_into_place;
use crate::model::{CaptureId, CaptureRole, PerfStats, ProfileKind, Summary};
use crate::perf::{PerfSettings, PerfTarget};
use crate::store::StagedFile;

#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(
        "{0}: the target must serve fgprof at /debug/fgprof (github.com/felixge/fgprof: \
             http.DefaultServeMux.Handle(\"/debug/fgprof\", fgprof.Handler()))"
    )]
    NoFgprof(CaptureError),
    #[error("cannot {action} {path}: {source}")]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{0:?} is not a pprof base URL: {1}")]
    Url(String, String),
    #[error(transparent)]
    Perf(#[from] PerfCaptureError),
}

/// What a manual capture kept.
#[derive(Debug)]
pub struct Kept {
    pub path: PathBuf,
    pub fetched: Fetched,
    /// The top functions, for profile.proto kinds that could be read.
    pub summary: Option<Summary>,
    /// A `perf` capture's samples, lost and cut short.
    pub perf: Option<PerfStats>,
}

impl Kept {
    /// What the user should know of what was kept: an empty block or mutex profile is most
    /// often one the target never enabled.
    pub fn warnings(&self, kind: ProfileKind) -> Vec<String> {
        let empty = self.summary.as_ref().is_some_and(|summary| summary.total == 0);
        let call = match kind {
            ProfileKind::Block => "runtime.SetBlockProfileRate",
            ProfileKind::Mutex => "runtime.SetMutexProfileFraction",
            _ => return Vec::new(),
        };
        match empty {
            true => vec![format!(
                "the {kind} profile is empty: the target records none unless it calls {call} (or nothing waited)"
            )],
            false => Vec::new(),
        }
    }
}

/// The pprof base URL a user means: `http://` added when no scheme is given (with a note
/// saying so), and a path that already ends in `/debug/pprof` taken as the base above it.
pub fn base_url(text: &str) -> Result<(Url, Option<String>), ManualError> {
    let bad = |why: String| ManualError::Url(text.to_string(), why);
    let (with_scheme, note) = match text.contains("://") {
        true => (text.to_string(), None),
        false => (format!("http://{text}"), Some(format!("taking {text} as http://{text}"))),
    };
    let mut url = Url::parse(&with_scheme).map_err(|error| bad(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad("give an http:// or https:// URL with a host, like http://127.0.0.1:6060".into()));
    }
    let path = url.path().trim_end_matches('/');
    let base = path.strip_suffix("/debug/pprof").unwrap_or(path).to_string();
    url.set_path(&base);
    Ok((url, note))
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
    let (id, staged) = stage(out, kind)?;
    let client = PprofClient::new(settings);
    let received = Arc::new(AtomicU64::new(0));
    let shown = progress
        .then(|| Progress::start(kind, seconds, client.timeout(kind, seconds), Some(received.clone())));
    let result =
        client.fetch(url, kind, seconds, staged.path(), Some(&received), &CancellationToken::new()).await;
    if let Some(shown) = shown {
        shown.finish();
    }
    let fetched = match result {
        Ok(fetched) => fetched,
        Err(error @ CaptureError::Status { status: 404, .. }) if kind == ProfileKind::Fgprof => {
            return Err(ManualError::NoFgprof(error));
        }
        Err(error) => return Err(error.into()),
    };
    let path = keep(out, &id, kind, staged)?;
    let summary = match kind.is_pprof() {
        true => summarize_file(&path, kind).await,
        false => None,
    };
    Ok(Kept { path, fetched, summary, perf: None })
}

/// Samples `target` with perf events for `seconds` at `frequency_hz` into `out`, as a
/// rule's `perf` capture does.
pub async fn capture_perf(
    target: PerfTarget,
    seconds: u32,
    frequency_hz: u32,
    out: &Path,
    progress: bool,
) -> Result<Kept, ManualError> {
    let kind = ProfileKind::Perf;
    let (id, staged) = stage(out, kind)?;
    let settings =
        PerfSettings { frequency_hz, duration: Duration::from_secs(seconds.into()), ..Default::default() };
    let shown = progress.then(|| Progress::start(kind, seconds, settings.duration, None));
    let dest = staged.path().to_path_buf();
    let sampled = off_thread(move || {
        PerfSampler::default().capture(&target, &settings, &CancellationToken::new(), &dest)
    })
    .await;
    if let Some(shown) = shown {
        shown.finish();
    }
    let captured = sampled?;
    let path = keep(out, &id, kind, staged)?;
    let summary = summarize_file(&path, kind).await;
    let perf = Some(captured.stats(frequency_hz));
    Ok(Kept {
        path,
        fetched: Fetched { bytes: captured.bytes, sha256: captured.sha256.clone() },
        summary,
        perf,
    })
}

/// The capture's name, and the file in `out` (made if missing) it is written to first.
fn stage(out: &Path, kind: ProfileKind) -> Result<(CaptureId, StagedFile), ManualError> {
    let io = |source| ManualError::Io { action: "create", path: out.to_path_buf(), source };
    std::fs::create_dir_all(out).map_err(io)?;
    let id = CaptureId::new(Utc::now(), "manual", CaptureRole::Spike, kind);
    Ok((id.clone(), StagedFile::at(out.join(format!(".{id}.part")))))
}

/// Moves a staged profile into place under its name: moved, not copied, as it may be up
/// to `max_profile_bytes`.
fn keep(out: &Path, id: &CaptureId, kind: ProfileKind, staged: StagedFile) -> Result<PathBuf, ManualError> {
    let path = out.join(format!("{id}{}", kind.extension()));
    move_into_place(staged.path(), &path).map_err(|source| ManualError::Io {
        action: "move into place",
        path: path.clone(),
        source,
    })?;
    staged.into_path();
    Ok(path)
}

/// The top functions of a kept profile, within the usual budget; `None` if it cannot be
/// read as such.
async fn summarize_file(path: &Path, kind: ProfileKind) -> Option<Summary> {
    let path = path.to_path_buf();
    let summarized = tokio::task::spawn_blocking(move || {
        let budget = Budget::new(crate::analyze::CAPTURE_ANALYSIS_TIME);
        FunctionTable::read(|| std::fs::File::open(&path), &budget)
            .map(|table| table.summary(TOP_SHOWN, Measure::for_kind(kind)))
    });
    summarized.await.ok()?.ok()
}

/// A progress bar on stderr (drawn only when stderr is a terminal), moved on by a ticker:
/// the seconds of a timed profile, and the bytes received so far where they are counted.
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(
        kind: ProfileKind,
        seconds: u32,
        timeout: Duration,
        received: Option<Arc<AtomicU64>>,
    ) -> Progress {
        let bar = progress_bar(kind, seconds, timeout);
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ticking.set_position(start.elapsed().as_secs().min(ticking.length().unwrap_or(u64::MAX)));
                if let Some(received) = &received {
                    let bytes = indicatif::HumanBytes(received.load(Ordering::Relaxed));
                    ticking.set_message(format!("{bytes} received"));
                }
            }
        });
        Progress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What users type reaches the right base URL, or says what is wrong.
    #[test]
    fn base_urls() {
        let base = |text: &str| base_url(text).map(|(url, note)| (url.to_string(), note));
        assert_eq!(base("http://127.0.0.1:6060").unwrap(), ("http://127.0.0.1:6060/".into(), None));
        assert_eq!(base("http://h:6060/debug/pprof").unwrap().0, "http://h:6060/");
        assert_eq!(base("http://h:6060/svc/debug/pprof/").unwrap().0, "http://h:6060/svc");
        assert_eq!(base("https://h/prefix").unwrap().0, "https://h/prefix");
        let (url, note) = base("127.0.0.1:6060").unwrap();
        assert_eq!(url, "http://127.0.0.1:6060/");
        assert_eq!(note.unwrap(), "taking 127.0.0.1:6060 as http://127.0.0.1:6060");
        assert!(base("ftp://h").unwrap_err().to_string().contains("give an http:// or https:// URL"));
        assert!(base("http://").is_err());
    }
}
