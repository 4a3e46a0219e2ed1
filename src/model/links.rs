//! Where a capture is reached over HTTP: its profile, flame graph, diff and page. The one
//! place these URLs are built, for the web page (relative) and annotations (absolute).

use std::fmt::Display;

use super::id::CaptureId;

/// Links under a base: empty for links within alertprof's own pages, `external_url` for
/// links that leave it (annotations).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaptureLinks {
    base: String,
}

impl CaptureLinks {
    /// Links relative to alertprof's own root.
    pub fn relative() -> CaptureLinks {
        CaptureLinks::default()
    }

    /// Links under `external_url`.
    pub fn under(external_url: &reqwest::Url) -> CaptureLinks {
        CaptureLinks { base: external_url.as_str().trim_end_matches('/').to_string() }
    }

    fn api(&self, id: &CaptureId, rest: impl Display) -> String {
        format!("{}/api/v1/captures/{id}{rest}", self.base)
    }

    /// The capture's metadata.
    pub fn meta(&self, id: &CaptureId) -> String {
        self.api(id, "")
    }

    /// The stored profile, for `go tool pprof`.
    pub fn profile(&self, id: &CaptureId) -> String {
        self.api(id, "/profile")
    }

    pub fn flamegraph(&self, id: &CaptureId) -> String {
        self.api(id, "/flamegraph.svg")
    }

    /// The diff against the capture `base`.
    pub fn diff(&self, id: &CaptureId, base: &CaptureId) -> String {
        self.api(id, format_args!("/diff?base={base}"))
    }

    /// The capture's page in the web UI.
    pub fn page(&self, id: &CaptureId) -> String {
        format!("{}/captures/{id}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative links start at the root; absolute ones at the external URL, with or
    /// without its trailing slash.
    #[test]
    fn links() {
        let (x, b) = (CaptureId::parse("x").unwrap(), CaptureId::parse("b").unwrap());
        let relative = CaptureLinks::relative();
        assert_eq!(relative.profile(&x), "/api/v1/captures/x/profile");
        assert_eq!(relative.page(&x), "/captures/x");
        let url = reqwest::Url::parse("http://alertprof:9731/").unwrap();
        let absolute = CaptureLinks::under(&url);
        assert_eq!(absolute.flamegraph(&x), "http://alertprof:9731/api/v1/captures/x/flamegraph.svg");
        assert_eq!(absolute.diff(&x, &b), "http://alertprof:9731/api/v1/captures/x/diff?base=b");
        assert_eq!(absolute.meta(&x), "http://alertprof:9731/api/v1/captures/x");
    }
}
