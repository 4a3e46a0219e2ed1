//! Links to one pushed profile's view: Pyroscope's own UI or Grafana's Profiles Drilldown
//! app, told apart by the `ui_url` they are given.

use chrono::{DateTime, Duration, Utc};
use reqwest::Url;

use super::ProfileType;
use super::labels::clip_value;
use crate::model::CaptureMeta;

/// How far the range reaches beyond the capture on each side: the profile carries the
/// target's clock, which may be off from alertprof's.
const SLACK: Duration = Duration::minutes(1);
/// Grafana's Profiles Drilldown app (formerly Explore Profiles) lives under this path.
const DRILLDOWN_PATH: &str = "/a/grafana-pyroscope-app";

/// Which UI `ui_url` points at, told by its path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiStyle {
    /// Pyroscope's own UI, at `ui_url` (its root):
    /// `{ui_url}/?query=<type id>{service_name="…",alertprof_capture_id="…"}&from=<unix s>&until=<unix s>`.
    Pyroscope,
    /// A `ui_url` whose path contains `/a/grafana-pyroscope-app` (e.g.
    /// `https://grafana.example/a/grafana-pyroscope-app`, or with `?var-dataSource=<uid>`
    /// for a data source other than the default):
    /// `{ui_url}/explore?explorationType=flame-graph&var-serviceName=…&var-profileMetricId=<type id>&var-filters=alertprof_capture_id|=|…&from=<unix ms>&to=<unix ms>`.
    Drilldown,
}

impl UiStyle {
    pub fn of(ui_url: &Url) -> UiStyle {
        if ui_url.path().contains(DRILLDOWN_PATH) { UiStyle::Drilldown } else { UiStyle::Pyroscope }
    }

    /// What a link to a view in it says.
    pub fn label(self) -> &'static str {
        match self {
            UiStyle::Pyroscope => "Open in Pyroscope",
            UiStyle::Drilldown => "Open in Grafana",
        }
    }
}

/// A link to a pushed capture's view, as annotations and pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewLink {
    pub href: String,
    pub label: &'static str,
}

impl ViewLink {
    /// The link to `capture`'s view under `ui_url`, over the time its profile covers (its
    /// window, for one from the recorder); none for a capture that was not pushed.
    pub fn of(capture: &CaptureMeta, ui_url: &Url) -> Option<ViewLink> {
        let series = capture.pyroscope.as_ref().filter(|_| capture.is_ok())?;
        let profile_type = ProfileType::of(capture.kind)?;
        let (from, to) = match &capture.window {
            Some(window) => (window.from.min(capture.started_at), window.to.max(capture.finished_at)),
            None => (capture.started_at, capture.finished_at),
        };
        let view = ProfileView {
            profile_type,
            service_name: &series.service_name,
            capture_id: capture.id.as_str(),
            from,
            to,
        };
        Some(ViewLink { href: view.url(ui_url).to_string(), label: UiStyle::of(ui_url).label() })
    }
}

/// One pushed profile, as its view is found: by type, service and capture id, over the
/// capture's time (`from`..`to`).
#[derive(Debug, Clone)]
pub struct ProfileView<'a> {
    pub profile_type: ProfileType,
    /// As pushed; cut as the label was.
    pub service_name: &'a str,
    pub capture_id: &'a str,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl ProfileView<'_> {
    /// The view's URL under `ui_url`, in the form of its [`UiStyle`]; the parameters
    /// `ui_url` already has are kept.
    pub fn url(&self, ui_url: &Url) -> Url {
        let from = self.from - SLACK;
        let to = self.to.max(self.from) + SLACK;
        let service = clip_value(self.service_name);
        let capture = clip_value(self.capture_id);
        match UiStyle::of(ui_url) {
            UiStyle::Pyroscope => {
                let query = format!(
                    "{}{{service_name=\"{}\",alertprof_capture_id=\"{}\"}}",
                    self.profile_type.id(),
                    quoted(service),
                    quoted(capture)
                );
                let mut url = under(ui_url, "");
                url.query_pairs_mut()
                    .append_pair("query", &query)
                    .append_pair("from", &from.timestamp().to_string())
                    .append_pair("until", &(to.timestamp() + 1).to_string());
                url
            }
            UiStyle::Drilldown => {
                let mut url = if ui_url.path().trim_end_matches('/').ends_with("/explore") {
                    let mut url = ui_url.clone();
                    url.set_path(ui_url.path().trim_end_matches('/'));
                    url
                } else {
                    under(ui_url, "explore")
                };
                url.query_pairs_mut()
                    .append_pair("explorationType", "flame-graph")
                    .append_pair("var-serviceName", service)
                    .append_pair("var-profileMetricId", self.profile_type.id())
                    .append_pair(
                        "var-filters",
                        &format!("alertprof_capture_id|=|{}", scenes_escaped(capture)),
                    )
                    .append_pair("from", &from.timestamp_millis().to_string())
                    .append_pair("to", &to.timestamp_millis().to_string());
                url
            }
        }
    }
}

/// `ui_url` with `segment` after its path (and a `/` between), its query kept.
fn under(ui_url: &Url, segment: &str) -> Url {
    let mut url = ui_url.clone();
    let path = format!("{}/{segment}", ui_url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// A label value inside a PromQL-style selector's double quotes.
fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A value inside a Grafana Scenes filter (`key|op|value`): its own `|` and `,` are
/// written as Scenes writes them, `__gfp__` and `__gfc__`.
fn scenes_escaped(value: &str) -> String {
    value.replace('|', "__gfp__").replace(',', "__gfc__")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ProfileView<'static> {
        ProfileView {
            profile_type: ProfileType::Heap,
            service_name: "checkout",
            capture_id: "20260823T101500Z-api-heap",
            from: "2026-08-23T10:15:00Z".parse().unwrap(),
            to: "2026-08-23T10:15:02.500Z".parse().unwrap(),
        }
    }

    /// Pointed at Pyroscope, the link is its UI's query of the type id and both labels,
    /// over the capture and a minute each side, in seconds.
    #[test]
    fn pyroscope_link() {
        let url = view().url(&Url::parse("https://pyroscope.example:4040").unwrap());
        assert_eq!(
            url.as_str(),
            "https://pyroscope.example:4040/?query=memory%3Ainuse_space%3Abytes%3Aspace%3Abytes\
             %7Bservice_name%3D%22checkout%22%2Calertprof_capture_id%3D%2220260823T101500Z-api-heap%22%7D\
             &from=1787480040&until=1787480163"
        );
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs[0].1,
            "memory:inuse_space:bytes:space:bytes{service_name=\"checkout\",alertprof_capture_id=\"20260823T101500Z-api-heap\"}"
        );
        let under_path = view().url(&Url::parse("https://ops.example/pyroscope/").unwrap());
        assert!(under_path.as_str().starts_with("https://ops.example/pyroscope/?query="), "{under_path}");
    }

    /// Quotes and backslashes in a value are escaped inside the selector.
    #[test]
    fn pyroscope_link_quotes() {
        let view = ProfileView { service_name: "a\"b\\c", ..view() };
        let url = view.url(&Url::parse("http://pyroscope:4040/").unwrap());
        let query = url.query_pairs().next().unwrap().1.into_owned();
        assert!(query.contains(r#"service_name="a\"b\\c""#), "{query}");
    }

    /// A kept capture that was pushed links to its view over its window; one that was not
    /// pushed (kept with no `pyroscope` section), or failed, links nowhere.
    #[test]
    fn links_of_captures() {
        use crate::model::{
            CaptureId, PendingCapture, ProfileKind, PyroscopeSeries, Trigger, TriggerSource, Window,
        };
        let at: DateTime<Utc> = "2026-08-23T10:15:00Z".parse().unwrap();
        let id = CaptureId::parse("20260823T101500.000Z-r-cpu").unwrap();
        let mut pending = PendingCapture::new(
            id,
            "api",
            "r",
            ProfileKind::Perf,
            Trigger::local(TriggerSource::Watch, Some(at)),
            at,
        );
        pending.finished_at = at + Duration::seconds(10);
        pending.window = Some(Window { from: at - Duration::minutes(2), to: at + Duration::seconds(10) });
        let not_pushed = pending.clone().kept(1, "x".into());
        let ui = Url::parse("http://pyroscope:4040").unwrap();
        assert_eq!(ViewLink::of(&not_pushed, &ui), None);
        pending.pyroscope = Some(PyroscopeSeries { service_name: "checkout".into() });
        let link = ViewLink::of(&pending.clone().kept(1, "x".into()), &ui).unwrap();
        assert_eq!(link.label, "Open in Pyroscope");
        let url = Url::parse(&link.href).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                (
                    "query".to_string(),
                    "process_cpu:cpu:nanoseconds:cpu:nanoseconds{service_name=\"checkout\",alertprof_capture_id=\"20260823T101500.000Z-r-cpu\"}".to_string()
                ),
                ("from".to_string(), (at.timestamp() - 180).to_string()),
                ("until".to_string(), (at.timestamp() + 71).to_string()),
            ]
        );
        assert_eq!(ViewLink::of(&pending.failed("boom"), &ui), None);
    }

    /// Pointed at Grafana's Profiles Drilldown app, the link opens its flame graph of the
    /// service and type, filtered to the capture, in milliseconds; the data source the
    /// URL names is kept, and `/explore` is not doubled.
    #[test]
    fn drilldown_link() {
        let ui = Url::parse("https://grafana.example/a/grafana-pyroscope-app?var-dataSource=pyro").unwrap();
        let url = view().url(&ui);
        assert_eq!(UiStyle::of(&ui), UiStyle::Drilldown);
        assert_eq!(url.path(), "/a/grafana-pyroscope-app/explore");
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let expected = [
            ("var-dataSource", "pyro"),
            ("explorationType", "flame-graph"),
            ("var-serviceName", "checkout"),
            ("var-profileMetricId", "memory:inuse_space:bytes:space:bytes"),
            ("var-filters", "alertprof_capture_id|=|20260823T101500Z-api-heap"),
            ("from", "1787480040000"),
            ("to", "1787480162500"),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(pairs, expected);
        let explore = Url::parse("https://grafana.example/a/grafana-pyroscope-app/explore").unwrap();
        assert_eq!(view().url(&explore).path(), "/a/grafana-pyroscope-app/explore");
        let odd = ProfileView { capture_id: "a|b,c", ..view() }.url(&explore);
        assert!(
            odd.query_pairs()
                .any(|(k, v)| k == "var-filters" && v == "alertprof_capture_id|=|a__gfp__b__gfc__c")
        );
    }
}
