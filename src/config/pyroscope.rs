//! `pyroscope:`: where kept profiles are pushed (a Pyroscope, or Grafana Cloud Profiles), as
//! whom, and where people look at them; and the `service_name` a target's profiles go under.

use std::path::Path;

use reqwest::Url;
use serde_json::Value;

use super::service::{Credentials, read_credentials};
use super::values::read_url;
use super::walk::{Walker, optional};

/// The longest `service_name` taken, in bytes: Pyroscope's label values are cut there.
pub const MAX_SERVICE_NAME_BYTES: usize = 512;
/// The longest tenant id Pyroscope takes (its tenant ids are Cortex's).
const MAX_TENANT_BYTES: usize = 150;

/// The `pyroscope:` section, validated; secrets are read from their files.
#[derive(Debug, Clone, PartialEq)]
pub struct PyroscopeConfig {
    /// Pyroscope's base URL; pushes go to `{url}/push.v1.PusherService/Push`.
    pub url: Url,
    /// Sent as `X-Scope-OrgID`: the tenant of a multi-tenant Pyroscope.
    pub tenant: Option<String>,
    /// How pushes authenticate: basic auth (Grafana Cloud: the stack's user id and an
    /// access policy token) or a bearer token; none for a Pyroscope on a private network.
    pub auth: Option<Credentials>,
    /// Where people look at profiles: Pyroscope's own UI, or Grafana's Profiles Drilldown
    /// app (`https://grafana.example/a/grafana-pyroscope-app`). With it, annotations and
    /// capture pages link to each pushed profile's view.
    pub ui_url: Option<Url>,
    /// Whether the recorder's segments are pushed too, not only captures: the recorder
    /// then profiles its targets continuously for Pyroscope.
    pub recorder: bool,
}

const KEYS: &[&str] = &["url", "tenant", "basic_auth", "bearer_token_file", "ui_url", "recorder"];

pub(super) fn read_pyroscope(
    w: &mut Walker,
    path: &str,
    value: &Value,
    base: &Path,
) -> Option<PyroscopeConfig> {
    let object = w.object(path, value, KEYS)?;
    let url = match object.get("url") {
        Some((p, v)) => read_push_url(w, &p, v),
        None => {
            w.report(path, "needs url: Pyroscope's base URL, e.g. http://pyroscope:4040");
            None
        }
    };
    let tenant = optional(w, &object, "tenant", None, |w, p, v| read_tenant(w, p, v).map(Some));
    let auth = match object.has("basic_auth") || object.has("bearer_token_file") {
        true => read_credentials(w, path, &object, base).map(Some),
        false => Some(None),
    };
    let ui_url = optional(w, &object, "ui_url", None, |w, p, v| read_url(w, p, v).map(Some));
    let recorder = optional(w, &object, "recorder", false, Walker::boolean);
    Some(PyroscopeConfig { url: url?, tenant: tenant?, auth: auth?, ui_url: ui_url?, recorder: recorder? })
}

/// Pyroscope's base URL: the push method's path is appended to it, so it has no query, and
/// credentials go in files, not in it (URLs are logged).
fn read_push_url(w: &mut Walker, path: &str, value: &Value) -> Option<Url> {
    let url = read_url(w, path, value)?;
    if url.query().is_some() {
        let message = format!(
            "{:?} has a query (?…); give Pyroscope's base URL, to which /push.v1.PusherService/Push is appended",
            url.as_str()
        );
        w.report(path, message);
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        w.report(path, "holds credentials; give them as basic_auth with a password_file instead");
        return None;
    }
    Some(url)
}

/// A tenant id as Pyroscope takes it: 1-150 of `a-z A-Z 0-9 ! - _ . * ' ( )`, not `.` or
/// `..`.
fn read_tenant(w: &mut Walker, path: &str, value: &Value) -> Option<String> {
    let tenant = w.string(path, value)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    let valid = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_BYTES
        && tenant.chars().all(allowed)
        && tenant != "."
        && tenant != "..";
    if !valid {
        w.report(path, format!("{tenant:?} is not a tenant id: 1-150 of a-z A-Z 0-9 ! - _ . * ' ( )"));
        return None;
    }
    Some(tenant.to_string())
}

/// A target's `service_name`: what its profiles are called in Pyroscope, a label value.
pub(super) fn read_service_name(w: &mut Walker, path: &str, value: &Value) -> Option<String> {
    let name = w.string(path, value)?;
    if name.trim().is_empty() {
        w.report(path, "is empty; leave it out to push under the target's name");
        return None;
    }
    if name.len() > MAX_SERVICE_NAME_BYTES {
        w.report(path, format!("is longer than {MAX_SERVICE_NAME_BYTES} bytes"));
        return None;
    }
    if name.chars().any(char::is_control) {
        w.report(path, format!("{name:?} has control characters"));
        return None;
    }
    Some(name.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, Credentials, ParseError};

    /// The problems `check-config` lists for `text`, one line each.
    fn problems(text: &str, base: &Path) -> Vec<String> {
        match Config::parse(text, base) {
            Err(ParseError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            other => panic!("not refused as invalid: {other:?}\n{text}"),
        }
    }

    const TARGET: &str =
        "targets: [{name: api, pprof_url: \"http://127.0.0.1:6060\", service_name: checkout}]\n";

    /// Every key read into its value: Grafana Cloud's form (tenant, basic auth from a file,
    /// a Drilldown UI), a target's `service_name`; `url` alone is enough, and a target
    /// without `service_name` is pushed under its name.
    #[test]
    fn every_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pyroscope-password"), "glc_secret\n").unwrap();
        let text = format!(
            "pyroscope:\n  url: https://profiles-prod-001.grafana.net\n  tenant: \"123456\"\n  \
             basic_auth: {{username: \"123456\", password_file: pyroscope-password}}\n  \
             ui_url: https://example.grafana.net/a/grafana-pyroscope-app\n  recorder: false\n{TARGET}"
        );
        let config = Config::parse(&text, dir.path()).unwrap();
        let pyroscope = config.pyroscope.as_ref().unwrap();
        assert_eq!(pyroscope.url.as_str(), "https://profiles-prod-001.grafana.net/");
        assert_eq!(pyroscope.tenant.as_deref(), Some("123456"));
        let Some(Credentials::Basic { username, password }) = &pyroscope.auth else {
            panic!("{pyroscope:?}")
        };
        assert_eq!((username.as_str(), password.expose()), ("123456", "glc_secret"));
        assert!(!format!("{pyroscope:?}").contains("glc_secret"), "secrets never print");
        assert_eq!(pyroscope.ui_url.as_ref().unwrap().path(), "/a/grafana-pyroscope-app");
        assert!(!pyroscope.recorder);
        assert_eq!(config.targets[0].service_name(), "checkout");

        std::fs::write(dir.path().join("token"), "tok").unwrap();
        let text = "pyroscope: {url: \"http://pyroscope:4040\", bearer_token_file: token}\n\
                    targets: [{name: api, pprof_url: \"http://127.0.0.1:6060\"}]\n";
        let config = Config::parse(text, dir.path()).unwrap();
        let pyroscope = config.pyroscope.unwrap();
        assert!(matches!(&pyroscope.auth, Some(Credentials::Bearer(token)) if token.expose() == "tok"));
        assert_eq!((pyroscope.tenant, pyroscope.ui_url, pyroscope.recorder), (None, None, false));
        assert_eq!(config.targets[0].service_name(), "api");
        assert!(Config::parse("{}", dir.path()).unwrap().pyroscope.is_none());
    }

    /// Each mistake in the section is named at its place, all of them at once.
    #[test]
    fn mistakes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok").unwrap();
        let text = "pyroscope:\n  url: \"ftp://pyroscope:4040\"\n  tenant: \"team a\"\n  \
                    ui_url: \"http://\"\n  recorder: yes please\n  \
                    basic_auth: {username: 7}\n  bearer_token_file: token\n  push_interval: 10s\n";
        assert_eq!(
            problems(text, dir.path()),
            [
                "pyroscope.push_interval: unknown key \"push_interval\" (known: url, tenant, basic_auth, bearer_token_file, ui_url, recorder)",
                "pyroscope.url: \"ftp://pyroscope:4040\" must be an http:// or https:// URL with a host",
                "pyroscope.tenant: \"team a\" is not a tenant id: 1-150 of a-z A-Z 0-9 ! - _ . * ' ( )",
                "pyroscope: give bearer_token_file or basic_auth, not both",
                "pyroscope.ui_url: \"http://\" is not a URL: empty host",
                "pyroscope.recorder: must be true or false",
            ]
        );
        let text = "pyroscope:\n  url: \"http://user:pw@pyroscope:4040\"\n  \
                    basic_auth: {username: 7}\n  tenant: \"..\"\n";
        assert_eq!(
            problems(text, dir.path()),
            [
                "pyroscope.url: holds credentials; give them as basic_auth with a password_file instead",
                "pyroscope.tenant: \"..\" is not a tenant id: 1-150 of a-z A-Z 0-9 ! - _ . * ' ( )",
                "pyroscope.basic_auth.username: must be a string, not a number",
                "pyroscope.basic_auth: needs password_file",
            ]
        );
        let text = "pyroscope: {url: \"http://pyroscope:4040/?org=1\", bearer_token_file: missing}\n";
        let found = problems(text, dir.path());
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            found[0],
            "pyroscope.url: \"http://pyroscope:4040/?org=1\" has a query (?…); give Pyroscope's base URL, to which /push.v1.PusherService/Push is appended"
        );
        assert!(found[1].starts_with("pyroscope.bearer_token_file: cannot read "), "{found:#?}");
        assert_eq!(
            problems("pyroscope: {tenant: a}", dir.path()),
            ["pyroscope: needs url: Pyroscope's base URL, e.g. http://pyroscope:4040"]
        );
        assert_eq!(
            problems("pyroscope: http://pyroscope:4040", dir.path()),
            ["pyroscope: must be a mapping, not a string"]
        );
    }

    /// `pyroscope.recorder: true` needs a recorded target; a target's `service_name` must
    /// be a label value Pyroscope keeps whole.
    #[test]
    fn recorder_and_service_name_mistakes() {
        let long = "s".repeat(513);
        let text = format!(
            "pyroscope: {{url: \"http://pyroscope:4040\", recorder: true}}\n\
             targets:\n\
             - {{name: a, pprof_url: \"http://127.0.0.1:1\", service_name: \" \"}}\n\
             - {{name: b, pprof_url: \"http://127.0.0.1:2\", service_name: {long}}}\n\
             - {{name: c, pprof_url: \"http://127.0.0.1:3\", service_name: \"a\\tb\"}}\n\
             - {{name: d, pprof_url: \"http://127.0.0.1:4\", service_name: [x]}}\n"
        );
        assert_eq!(
            problems(&text, Path::new("/")),
            [
                "targets[0].service_name: is empty; leave it out to push under the target's name",
                "targets[1].service_name: is longer than 512 bytes",
                "targets[2].service_name: \"a\\tb\" has control characters",
                "targets[3].service_name: must be a string, not a list",
            ]
        );
        let text = "pyroscope: {url: \"http://pyroscope:4040\", recorder: true}\n\
                    targets: [{name: a, pprof_url: \"http://127.0.0.1:1\"}]\n";
        assert_eq!(
            problems(text, Path::new("/")),
            ["pyroscope.recorder: no target has a recorder (targets[].recorder) to push segments of"]
        );
        let text = "pyroscope: {url: \"http://pyroscope:4040\", recorder: true}\n\
                    targets: [{name: a, pprof_url: \"http://127.0.0.1:1\", recorder: {}}]\n";
        assert!(Config::parse(text, Path::new("/")).unwrap().pyroscope.unwrap().recorder);
    }
}
