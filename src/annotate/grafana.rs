//! Grafana's annotation API: `POST {url}/api/annotations` with a service-account token,
//! a region from capture start to end, tags and an HTML text linking the profile.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::analyze::{grew_line, top_line};
use crate::config::GrafanaConfig;
use askama::Template;

use crate::model::text::reading;
use crate::model::{CaptureLinks, CaptureMeta, ProfileKind, Secret};
use crate::pyroscope::ViewLink;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two tries, however many there are.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest an annotation is retried in all: a Grafana outage must not keep a job (and
/// shutdown) waiting for hours.
const MAX_RETRYING: Duration = Duration::from_secs(120);

/// Why an annotation was not added.
#[derive(Debug, thiserror::Error)]
pub enum AnnotateError {
    /// Grafana refused it (4xx): retrying would not help.
    #[error("Grafana refused the annotation: {status} {body}")]
    Rejected { status: u16, body: String },
    /// 5xx, timeouts and connection errors, still failing after every try.
    #[error("Grafana unavailable after {attempts} tries: {last}")]
    Unavailable { attempts: u32, last: String },
    /// alertprof is shutting down.
    #[error("not annotated: alertprof is shutting down")]
    Cancelled,
}

impl AnnotateError {
    /// The `result` label of `alertprof_annotations_total`.
    pub fn result(&self) -> &'static str {
        match self {
            AnnotateError::Rejected { .. } => "rejected",
            AnnotateError::Unavailable { .. } | AnnotateError::Cancelled => "failed",
        }
    }
}

/// The body of `POST /api/annotations`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Annotation {
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    /// Epoch milliseconds.
    pub time: i64,
    pub time_end: i64,
    pub tags: Vec<String>,
    pub text: String,
}

#[derive(Clone)]
pub struct GrafanaClient {
    http: reqwest::Client,
    endpoint: Url,
    token: Option<Secret>,
    dashboard_uid: Option<String>,
    tags: Vec<String>,
    /// How links in the text reach alertprof (`external_url`).
    links: CaptureLinks,
    /// Where pushed profiles are looked at (`pyroscope.ui_url`): each annotation of one
    /// links its view there.
    views: Option<Url>,
    max_attempts: u32,
    first_backoff: Duration,
}

/// An annotation's text for a kept capture (`templates/annotation.html`): what set it off,
/// how it verified, its readings, top functions and what grew, and links to it.
#[derive(Template)]
#[template(path = "annotation.html")]
struct CaptureText<'a> {
    baseline: bool,
    kind: ProfileKind,
    target: &'a str,
    rule: &'a str,
    alertname: Option<&'a str>,
    source: &'static str,
    why: String,
    readings: String,
    /// (sample type, by flat or cum, the top line).
    top: Option<(&'a str, &'static str, String)>,
    /// (against what, sample type, what grew).
    grew: Option<(String, &'a str, String)>,
    download: String,
    file: &'a str,
    bytes: u64,
    flamegraph: Option<String>,
    /// (href, label) of the diff.
    diff: Option<(String, &'static str)>,
    /// Its view in Pyroscope or Grafana, once pushed.
    pyroscope: Option<ViewLink>,
    page: String,
}

impl<'a> CaptureText<'a> {
    fn new(
        links: &CaptureLinks,
        views: Option<&Url>,
        capture: &'a CaptureMeta,
        why: &[String],
    ) -> CaptureText<'a> {
        let readings: Vec<String> =
            capture.readings.iter().map(|(k, v)| format!("{k}={}", reading(k.as_str(), *v))).collect();
        let top = capture.summary.as_ref().map(|summary| {
            let by = if capture.kind.grows_by_cum() { "by cum" } else { "flat" };
            (summary.sample_type.as_str(), by, top_line(summary, capture.kind))
        });
        let grew = capture.diff.as_ref().map(|diff| {
            let against = match (diff.before_window, &capture.window) {
                (true, Some(window)) => format!(
                    "during the spike (vs the recorder's snapshot from before {})",
                    window.from.format("%H:%M:%S")
                ),
                _ => "vs baseline".to_string(),
            };
            (against, diff.sample_type.as_str(), grew_line(diff, capture.kind))
        });
        let diff = capture.diff.as_ref().map(|diff| {
            let label = if diff.before_window {
                "Diff against before the spike"
            } else {
                "Diff against the baseline"
            };
            (links.diff(&capture.id, &diff.base), label)
        });
        CaptureText {
            baseline: capture.is_baseline(),
            kind: capture.kind,
            target: &capture.target,
            rule: &capture.rule,
            alertname: capture.trigger.alertname.as_deref(),
            source: capture.trigger.source.name(),
            why: why.join("; "),
            readings: readings.join(", "),
            top,
            grew,
            // The download comes first: it is the link that matters, and the one tools
            // look for.
            download: links.profile(&capture.id),
            file: capture.file_name(),
            bytes: capture.bytes(),
            flamegraph: capture.has_pprof().then(|| links.flamegraph(&capture.id)),
            diff,
            pyroscope: views.and_then(|ui_url| ViewLink::of(capture, ui_url)),
            page: links.page(&capture.id),
        }
    }
}

/// An annotation's text for a recorded process that ended
/// (`templates/exit_annotation.html`).
#[derive(Template)]
#[template(path = "exit_annotation.html")]
struct ExitText<'a> {
    target: &'a str,
    why: &'a str,
    rows: Vec<ExitRow<'a>>,
}

/// One of a process's last profiles, in its exit annotation.
struct ExitRow<'a> {
    lead: String,
    /// (sample type, the top line).
    top: Option<(&'a str, String)>,
    download: String,
    file: &'a str,
    pyroscope: Option<ViewLink>,
    page: String,
}

impl<'a> ExitRow<'a> {
    fn new(links: &CaptureLinks, views: Option<&Url>, capture: &'a CaptureMeta) -> ExitRow<'a> {
        let lead = match capture.kind {
            ProfileKind::Heap => "What held the memory just before the end".to_string(),
            ProfileKind::Cpu => format!("CPU over its last {}s", capture.seconds.unwrap_or(0)),
            kind => format!("Its last {kind} profile"),
        };
        ExitRow {
            lead,
            top: capture
                .summary
                .as_ref()
                .map(|summary| (summary.sample_type.as_str(), top_line(summary, capture.kind))),
            download: links.profile(&capture.id),
            file: capture.file_name(),
            pyroscope: views.and_then(|ui_url| ViewLink::of(capture, ui_url)),
            page: links.page(&capture.id),
        }
    }
}

impl GrafanaClient {
    pub fn new(config: &GrafanaConfig, external_url: &Url) -> GrafanaClient {
        let endpoint = Url::parse(&format!("{}/api/annotations", config.url.as_str().trim_end_matches('/')))
            .unwrap_or_else(|_| config.url.clone());
        GrafanaClient {
            http: crate::http::client(),
            endpoint,
            token: config.token.clone(),
            dashboard_uid: config.dashboard_uid.clone(),
            tags: config.tags.clone(),
            links: CaptureLinks::under(external_url),
            views: None,
            max_attempts: config.max_attempts,
            first_backoff: config.retry_backoff,
        }
    }

    /// The same, linking each pushed profile's view under `ui_url` (`pyroscope.ui_url`).
    pub fn with_profile_views(self, ui_url: Option<Url>) -> GrafanaClient {
        GrafanaClient { views: ui_url, ..self }
    }

    /// The annotation for a kept capture; `why` is what verified it.
    pub fn annotation(&self, capture: &CaptureMeta, why: &[String]) -> Annotation {
        let mut tags = self.tags.clone();
        let mut extra = vec![capture.target.clone(), capture.rule.clone(), capture.kind.to_string()];
        extra.extend(capture.trigger.alertname.clone());
        for tag in extra {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let text = CaptureText::new(&self.links, self.views.as_ref(), capture, why)
            .render()
            .expect("an annotation renders");
        Annotation {
            dashboard_uid: self.dashboard_uid.clone(),
            time: capture.started_at.timestamp_millis(),
            time_end: capture.finished_at.timestamp_millis().max(capture.started_at.timestamp_millis()),
            tags,
            text,
        }
    }

    /// One annotation for a recorded process that ended (`why`), over its last profiles:
    /// what held its memory just before the end first, then the rest, each linked. `None`
    /// with nothing kept.
    pub fn exit_annotation(&self, captures: &[&CaptureMeta], why: &str) -> Option<Annotation> {
        let first = captures.first()?;
        let mut tags = self.tags.clone();
        let mut extra = vec![first.target.clone(), "exit".to_string()];
        extra.extend(captures.iter().map(|c| c.kind.to_string()));
        for tag in extra {
            if !tags.contains(&tag) {
                tags.push(tag);
            }
        }
        let mut ordered: Vec<&CaptureMeta> = captures.to_vec();
        ordered.sort_by_key(|c| (c.kind != ProfileKind::Heap, c.kind));
        let rows = ordered
            .into_iter()
            .map(|capture| ExitRow::new(&self.links, self.views.as_ref(), capture))
            .collect();
        let text = ExitText { target: &first.target, why, rows }.render().expect("an annotation renders");
        let time = captures.iter().map(|c| c.started_at.timestamp_millis()).min()?;
        let time_end = captures.iter().map(|c| c.finished_at.timestamp_millis()).max()?.max(time);
        Some(Annotation { dashboard_uid: self.dashboard_uid.clone(), time, time_end, tags, text })
    }

    /// Posts an annotation, retrying 5xx, timeouts and connection errors with backoff
    /// (each wait at most `MAX_BACKOFF`, all of them at most `MAX_RETRYING`), until
    /// `cancel` is told. Returns Grafana's annotation id.
    pub async fn annotate(
        &self,
        annotation: &Annotation,
        cancel: &CancellationToken,
    ) -> Result<i64, AnnotateError> {
        tokio::select! {
            result = self.post_with_retries(annotation) => result,
            () = cancel.cancelled() => Err(AnnotateError::Cancelled),
        }
    }

    async fn post_with_retries(&self, annotation: &Annotation) -> Result<i64, AnnotateError> {
        let started = tokio::time::Instant::now();
        let mut waits = retry_waits(self.first_backoff, self.max_attempts).into_iter();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = self.http.post(self.endpoint.clone()).timeout(REQUEST_TIMEOUT).json(annotation);
            if let Some(token) = &self.token {
                request = request.bearer_auth(token.expose());
            }
            let last = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    let body: serde_json::Value = response.json().await.unwrap_or_default();
                    return Ok(body.get("id").and_then(serde_json::Value::as_i64).unwrap_or_default());
                }
                Ok(response)
                    if response.status().is_client_error()
                        && response.status() != StatusCode::TOO_MANY_REQUESTS =>
                {
                    let status = response.status().as_u16();
                    let body = response.text().await.unwrap_or_default();
                    return Err(AnnotateError::Rejected { status, body: body.chars().take(200).collect() });
                }
                Ok(response) => format!("answered {}", response.status()),
                Err(error) => crate::http::error_chain(&error),
            };
            let Some(wait) = waits.next().filter(|wait| started.elapsed() + *wait <= MAX_RETRYING) else {
                return Err(AnnotateError::Unavailable { attempts, last });
            };
            tracing::info!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %last, "Grafana annotation failed; retrying.");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The waits between `attempts` tries: doubling from `first`, each at most `MAX_BACKOFF`,
/// and no more of them than fit in `MAX_RETRYING`.
fn retry_waits(first: Duration, attempts: u32) -> Vec<Duration> {
    let mut waits = Vec::new();
    let mut wait = first.min(MAX_BACKOFF);
    let mut total = Duration::ZERO;
    for _ in 1..attempts {
        total += wait;
        if total > MAX_RETRYING {
            break;
        }
        waits.push(wait);
        wait = (wait * 2).min(MAX_BACKOFF);
    }
    waits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CaptureId;

    /// However many tries are configured and however long the first wait, each wait is
    /// capped and all of them together are too; the first tries double as configured.
    #[test]
    fn retries_are_bounded() {
        let waits = retry_waits(Duration::from_millis(500), 5);
        assert_eq!(waits, [500, 1000, 2000, 4000].map(Duration::from_millis));
        for (first, attempts) in [(Duration::from_millis(500), 20), (Duration::from_secs(3600), 20)] {
            let waits = retry_waits(first, attempts);
            assert!(waits.iter().all(|wait| *wait <= MAX_BACKOFF), "{waits:?}");
            assert!(waits.iter().sum::<Duration>() <= MAX_RETRYING, "{waits:?}");
            assert!(!waits.is_empty());
        }
        assert!(retry_waits(Duration::from_secs(1), 1).is_empty(), "one try, no wait");
    }

    /// A capture diffed against the recorder's snapshot from before its window says so, with
    /// the window's start, and links that diff; one diffed against a baseline says that.
    #[test]
    fn the_diff_says_what_it_is_against() {
        crate::init();
        use crate::model::{Diff, PendingCapture, ProfileKind, Trigger, TriggerSource, Window};
        let client = GrafanaClient::new(&config(), &Url::parse("http://alertprof:9731").unwrap());
        let at = "2026-11-23T18:47:31Z".parse().unwrap();
        let trigger = Trigger::local(TriggerSource::Watch, Some(at));
        let id = CaptureId::parse("newest").unwrap();
        let mut capture =
            PendingCapture::new(id, "demo", "late-burst", ProfileKind::Heap, trigger, at).kept(1, "x".into());
        capture.window = Some(Window { from: at, to: at + chrono::Duration::seconds(20) });
        let diff = Diff {
            base: CaptureId::parse("before").unwrap(),
            sample_type: "inuse_space/bytes".into(),
            base_total: 1 << 20,
            total: 2 << 20,
            functions: vec![],
            cut_short: None,
            before_window: true,
        };
        capture.diff = Some(diff.clone());
        let text = client.annotation(&capture, &[]).text;
        assert!(
            text.contains("Grew during the spike (vs the recorder&#39;s snapshot from before 18:47:31)"),
            "{text}"
        );
        assert!(
            text.contains("/api/v1/captures/newest/diff?base=before\">Diff against before the spike<"),
            "{text}"
        );
        capture.diff = Some(Diff { before_window: false, ..diff });
        let text = client.annotation(&capture, &[]).text;
        assert!(text.contains("Grew vs baseline") && text.contains("Diff against the baseline"), "{text}");
    }

    /// An annotation's whole text, with hostile labels escaped and every link in its place;
    /// an exit's, heap first.
    #[test]
    fn the_whole_text() {
        crate::init();
        use crate::model::{PendingCapture, Signal, Trigger, TriggerSource};
        let client = GrafanaClient::new(&config(), &Url::parse("http://alertprof:9731").unwrap());
        let at = "2026-11-23T18:47:31Z".parse().unwrap();
        let trigger = Trigger {
            alertname: Some("<High> \"CPU\"".into()),
            ..Trigger::local(TriggerSource::Alertmanager, Some(at))
        };
        let id = CaptureId::parse("20261123T184731.000Z-r-cpu").unwrap();
        let mut pending = PendingCapture::new(id, "t&t", "r", ProfileKind::Cpu, trigger, at);
        pending.readings.insert(Signal::CpuPercent.key(), 91.25);
        let capture = pending.kept(10, "ab".into());
        let text = client.annotation(&capture, &["cpu_percent 91.2 >= abs 70".into()]).text;
        let links = "http://alertprof:9731/api/v1/captures/20261123T184731.000Z-r-cpu";
        assert_eq!(
            text,
            format!(
                "alertprof captured a <b>cpu</b> profile of <b>t&amp;t</b> (rule r) on alert <b>&lt;High&gt; &quot;CPU&quot;</b>.\
                 <br>Verified: cpu_percent 91.2 &gt;= abs 70.<br>Readings: cpu_percent=91.2.\
                 <br><a href=\"{links}/profile\">Download 20261123T184731.000Z-r-cpu.pb.gz</a> (10 bytes; open with <code>go tool pprof</code>) \u{b7} \
                 <a href=\"{links}/flamegraph.svg\">Flame graph</a> \u{b7} <a href=\"http://alertprof:9731/captures/20261123T184731.000Z-r-cpu\">Open in alertprof</a>"
            )
        );
        let exit = client.exit_annotation(&[&capture], "process 7 is gone").unwrap().text;
        assert_eq!(
            exit,
            format!(
                "alertprof: the process of <b>t&amp;t</b> ended: process 7 is gone.<br>CPU over its last 0s. \
                 <a href=\"{links}/profile\">Download 20261123T184731.000Z-r-cpu.pb.gz</a> \u{b7} \
                 <a href=\"http://alertprof:9731/captures/20261123T184731.000Z-r-cpu\">Open in alertprof</a>"
            )
        );
    }

    /// With `pyroscope.ui_url`, the annotation of a pushed capture links its view in
    /// Pyroscope before alertprof's own page, escaped as every value is; a capture that was
    /// not pushed links none. An exit's rows link theirs too.
    #[test]
    fn links_to_pushed_profiles() {
        crate::init();
        use crate::model::{PendingCapture, PyroscopeSeries, Trigger, TriggerSource};
        let ui_url = Url::parse("http://pyroscope:4040/").unwrap();
        let client = GrafanaClient::new(&config(), &Url::parse("http://alertprof:9731").unwrap())
            .with_profile_views(Some(ui_url));
        let at = "2026-11-23T18:47:31Z".parse().unwrap();
        let id = CaptureId::parse("20261123T184731.000Z-r-heap").unwrap();
        let trigger = Trigger::local(TriggerSource::Watch, Some(at));
        let mut pending = PendingCapture::new(id, "t", "r", ProfileKind::Heap, trigger, at);
        let not_pushed = pending.clone().kept(1, "x".into());
        assert!(!client.annotation(&not_pushed, &[]).text.contains("Pyroscope"));
        pending.pyroscope = Some(PyroscopeSeries { service_name: "check\"out".into() });
        let pushed = pending.kept(1, "x".into());
        let view = "<a href=\"http://pyroscope:4040/?query=memory%3Ainuse_space%3Abytes%3Aspace%3Abytes\
                    %7Bservice_name%3D%22check%5C%22out%22%2Calertprof_capture_id%3D%2220261123T184731.000Z-r-heap%22%7D\
                    &amp;from=1795459591&amp;until=1795459712\">Open in Pyroscope</a>";
        let text = client.annotation(&pushed, &[]).text;
        assert!(
            text.contains(&format!(
                "Flame graph</a> \u{b7} {view} \u{b7} <a href=\"http://alertprof:9731/captures/"
            )),
            "{text}"
        );
        let exit = client.exit_annotation(&[&pushed], "gone").unwrap().text;
        assert!(exit.contains(&format!("</a> \u{b7} {view} \u{b7} ")), "{exit}");
    }

    fn config() -> GrafanaConfig {
        GrafanaConfig {
            url: Url::parse("http://grafana:3000").unwrap(),
            token: None,
            dashboard_uid: None,
            tags: vec!["alertprof".into()],
            max_attempts: 20,
            retry_backoff: Duration::from_secs(1),
        }
    }

    /// A Grafana that takes connections and never answers holds an annotation only until
    /// shutdown says stop, not for its request timeouts and retries.
    #[tokio::test]
    async fn shutdown_stops_an_annotation() {
        crate::init();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let held = tokio::spawn(async move {
            let mut connections = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                connections.push(connection);
            }
        });
        let config = GrafanaConfig { url, ..config() };
        let client = GrafanaClient::new(&config, &Url::parse("http://127.0.0.1:9731").unwrap());
        let annotation =
            Annotation { dashboard_uid: None, time: 0, time_end: 0, tags: vec![], text: "x".into() };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.cancel();
        });
        let started = std::time::Instant::now();
        let result = client.annotate(&annotation, &cancel).await;
        assert!(matches!(result, Err(AnnotateError::Cancelled)), "{result:?}");
        assert_eq!(result.unwrap_err().result(), "failed");
        assert!(started.elapsed() < REQUEST_TIMEOUT, "waited {:?}", started.elapsed());
        held.abort();
    }
}
