//! Links from the pages to a capture: the URLs of `CaptureLinks`. An id is a `CaptureId`,
//! made only of characters a path segment and a query keep as they are; the templates
//! escape the attribute the link is put in, like any other value.

use crate::model::{CaptureId, CaptureLinks};

/// The capture's page.
pub fn page(id: &CaptureId) -> String {
    CaptureLinks::relative().page(id)
}

/// Links to a capture's API, relative (`CaptureLinks::relative`) or under the external
/// URL, for a command to paste.
pub struct Api(CaptureLinks);

impl Api {
    pub fn relative() -> Api {
        Api(CaptureLinks::relative())
    }

    pub fn under(external_url: &reqwest::Url) -> Api {
        Api(CaptureLinks::under(external_url))
    }

    pub fn profile(&self, id: &CaptureId) -> String {
        self.0.profile(id)
    }

    pub fn flamegraph(&self, id: &CaptureId) -> String {
        self.0.flamegraph(id)
    }

    pub fn diff(&self, id: &CaptureId, base: &CaptureId) -> String {
        self.0.diff(id, base)
    }
}
