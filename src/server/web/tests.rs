//! Every template, rendered with hostile text in every field that comes from outside the
//! service (alerts, targets, profiles, the store, the recorder, the request), shows that
//! text escaped, and never raw.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use serde_json::json;

use super::capture::CapturePage;
use super::html::{ErrorPage, Frame, PageError};
use super::list::{CapturesPage, Listing};
use super::sign_in::SignInPage;
use crate::config::Config;
use crate::model::{CaptureMeta, Decision, Outcome, ProfileKind, Series, TriggerSource};
use crate::recorder::{KindStatus, Status};
use crate::store::CaptureFilter;

/// The hostile text of one field: its name, then markup, both quotes, an ampersand, a NUL
/// and a right-to-left override.
fn evil(field: &str) -> String {
    format!("{field}\"<i>'&\u{0}\u{202e}")
}

/// What `evil(field)` must come out as.
fn escaped(field: &str) -> String {
    format!("{field}&quot;&lt;i&gt;&#39;&amp;[U+0000][U+202E]")
}

/// `page` shows each of `fields` escaped, and nothing of any of them raw.
fn assert_escaped(page: &str, fields: &[&str]) {
    for field in fields {
        assert!(page.contains(&escaped(field)), "{field} not shown escaped:\n{page}");
    }
    for raw in ["\"<i>", "<i>", "'&\u{0}", "\u{0}", "\u{202e}"] {
        assert!(!page.contains(raw), "{raw:?} on the page:\n{page}");
    }
}

fn config() -> Config {
    let yaml = "auth: {bearer_token_file: token}\n\
                targets: [{name: checkout, pprof_url: \"http://127.0.0.1:9\"}]\n\
                rules: [{name: cpu-spike, alert_labels: {alertname: HighCPU}, capture: [cpu]}]\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    Config::parse(yaml, dir.path()).unwrap()
}

/// A kept CPU profile whose every string came from outside, compared with a baseline and
/// merged from recorded segments.
fn meta() -> CaptureMeta {
    let top = |function: &str| json!({"function": evil(function), "flat": 5, "flat_percent": 50.0, "cum": 5, "cum_percent": 50.0});
    let segment = |from: &str, to: &str| json!({"from": from, "to": to, "bytes": 10});
    serde_json::from_value(json!({
        "id": "20261121T100000.000Z-cpu-spike-cpu", "target": evil("meta.target"), "rule": evil("meta.rule"), "kind": "cpu",
        "status": "ok", "error": evil("meta.error"), "url": evil("meta.url"), "seconds": 10,
        "started_at": "2026-11-21T10:00:00Z", "finished_at": "2026-11-21T10:00:10Z", "bytes": 10,
        "sha256": evil("meta.sha256"), "file": evil("meta.file"), "baseline": true,
        "trigger": {
            "source": "alertmanager", "alertname": evil("trigger.alertname"),
            "fingerprint": evil("trigger.fingerprint"), "starts_at": "2026-11-21T09:59:30Z",
            "received_at": "2026-11-21T09:59:55Z",
            "labels": {evil("label.name"): evil("label.value")},
        },
        "readings": {evil("readings.signal"): 1.0},
        "signals": {evil("signals.signal"): [[1795254900000i64, 4.0], [1795254990000i64, 87.5]]},
        "summary": {"sample_type": evil("summary.sample_type"), "total": 10, "top": [top("summary.function")]},
        "diff": {
            "base": "20261120T090000.000Z-cpu-spike-cpu", "sample_type": evil("diff.sample_type"),
            "base_total": 5, "total": 10, "functions": [top("diff.function")],
        },
        "window": {"from": "2026-11-21T09:58:00Z", "to": "2026-11-21T10:00:10Z"},
        "segments": [segment("2026-11-21T09:58:00Z", "2026-11-21T09:59:00Z"),
                     segment("2026-11-21T09:59:00Z", "2026-11-21T10:00:10Z")],
    }))
    .unwrap()
}

fn decision() -> Decision {
    let at = "2026-11-21T10:00:10Z".parse().unwrap();
    let mut decision =
        Decision::new(at, TriggerSource::Alertmanager, Outcome::Captured, evil("decision.reason"));
    decision.rule = Some(Arc::from(evil("decision.rule")));
    decision.target = Some(Arc::from(evil("decision.target")));
    decision.alertname = Some(evil("decision.alertname"));
    // Capture ids are of the characters ids are made of: nothing to escape (`CaptureId`).
    decision.captures = vec![crate::model::CaptureId::parse("20261121T100000.000Z-cpu-spike-cpu").unwrap()];
    decision
}

fn recording() -> Status {
    let failing = "2026-11-21T09:00:00Z".parse().ok();
    Status {
        target: evil("recorder.target"),
        records: evil("recorder.records"),
        bytes: 10,
        kinds: vec![KindStatus {
            kind: ProfileKind::Cpu,
            every: evil("recorder.every"),
            segments: 1,
            bytes: 10,
            oldest: failing,
            newest: failing,
            error: Some(evil("recorder.error")),
            failing_since: failing,
            backing_off_until: None,
        }],
    }
}

/// The list page: captures, timelines with their capture marks, the recorder, decisions,
/// the store's trouble, and the filter's chosen values.
#[test]
fn list_page_escapes_every_field() {
    let meta = meta();
    let recent: BTreeMap<String, Series> = BTreeMap::from([(
        meta.target.clone(),
        Series::from([(
            serde_json::from_value(json!(evil("timeline.signal"))).unwrap(),
            vec![(1795254900000, 1.0)],
        )]),
    )]);
    let filter = CaptureFilter {
        target: Some(evil("filter.target")),
        rule: Some(evil("filter.rule")),
        kind: None,
        limit: None,
    };
    let listing = Listing {
        config: &config(),
        filter: &filter,
        trouble: Some(evil("store.trouble")),
        captures: std::slice::from_ref(&meta),
        recent: &recent,
        recorder: &[recording()],
        decisions: &[decision()],
    };
    let page = CapturesPage::new(&listing).render().unwrap();
    assert_escaped(
        &page,
        &[
            "meta.target",
            "meta.rule",
            "trigger.alertname",
            "summary.function",
            "timeline.signal",
            "recorder.target",
            "recorder.records",
            "recorder.every",
            "recorder.error",
            "decision.reason",
            "decision.rule",
            "decision.target",
            "decision.alertname",
            "store.trouble",
            "filter.target",
            "filter.rule",
        ],
    );
}

/// A capture's page: what it is, its error and download, its signals, the recorder's
/// window, top functions, what grew, the flame graph, the trigger, readings, decisions.
#[test]
fn capture_page_escapes_every_field() {
    let (config, meta) = (config(), meta());
    let page = CapturePage::new(&config, &meta, &[decision()]).render().unwrap();
    assert_escaped(
        &page,
        &[
            "meta.target",
            "meta.rule",
            "meta.error",
            "meta.url",
            "meta.sha256",
            "meta.file",
            "trigger.alertname",
            "trigger.fingerprint",
            "label.name",
            "label.value",
            "readings.signal",
            "signals.signal",
            "summary.sample_type",
            "summary.function",
            "diff.sample_type",
            "diff.function",
            "decision.reason",
        ],
    );
}

/// The error pages, with what the request named, and the sign-in form.
#[test]
fn error_and_sign_in_pages_escape_every_field() {
    let title = evil("frame.title");
    let frame = || Frame { title: &title, logout: true };
    let kind = evil("query.kind");
    let page = ErrorPage { frame: frame(), error: PageError::UnknownKind(&kind) }.render().unwrap();
    assert_escaped(&page, &["frame.title", "query.kind"]);
    let id = evil("path.id");
    let page = ErrorPage { frame: frame(), error: PageError::NoCapture(&id) }.render().unwrap();
    assert_escaped(&page, &["frame.title", "path.id"]);
    let page = ErrorPage { frame: frame(), error: PageError::SignInRequired }.render().unwrap();
    assert_escaped(&page, &["frame.title"]);
    let message = evil("sign_in.message");
    let page = SignInPage { frame: frame(), message: Some(&message) }.render().unwrap();
    assert_escaped(&page, &["frame.title", "sign_in.message"]);
}
