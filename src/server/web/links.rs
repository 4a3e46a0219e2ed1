//! Links from the pages to a capture: the URLs of `CaptureLinks`, with each id written as a
//! percent-encoded path segment. Ids are checked where they are read (`is_valid_id`), so
//! this changes nothing in them; a link does not rest on that check. The templates escape
//! the attribute the link is put in, like any other value.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::model::CaptureLinks;

/// What a path segment or query value keeps as it is: letters, digits and `-._~`
/// (RFC 3986's unreserved characters).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

fn segment(id: &str) -> String {
    utf8_percent_encode(id, UNRESERVED).to_string()
}

/// The capture's page.
pub fn page(id: &str) -> String {
    CaptureLinks::relative().page(&segment(id))
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

    pub fn profile(&self, id: &str) -> String {
        self.0.profile(&segment(id))
    }

    pub fn flamegraph(&self, id: &str) -> String {
        self.0.flamegraph(&segment(id))
    }

    pub fn diff(&self, id: &str, base: &str) -> String {
        self.0.diff(&segment(id), &segment(base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid ids come out as they are; anything else cannot leave its segment.
    #[test]
    fn ids_are_segments() {
        let id = "20261121T100000.000Z-cpu-spike-cpu";
        assert_eq!(page(id), format!("/captures/{id}"));
        assert_eq!(Api::relative().diff(id, "b~1"), format!("/api/v1/captures/{id}/diff?base=b~1"));
        assert_eq!(page("a/../b?c=\"<d>"), "/captures/a%2F..%2Fb%3Fc%3D%22%3Cd%3E");
        assert_eq!(Api::relative().diff("x", "y&z=1"), "/api/v1/captures/x/diff?base=y%26z%3D1");
    }
}
