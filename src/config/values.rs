//! Values that several sections read alike: URLs (fixed or templated), secrets from
//! files, names; and files read within a bound.

use std::collections::HashSet;
use std::path::Path;

use reqwest::Url;
use serde_json::Value;

use super::walk::{Object, Walker};
use crate::model::name::is_safe_name;
use crate::model::{Secret, UrlSpec, UrlTemplate};

/// The largest secret file read: a token or a password, not a file of them.
const MAX_SECRET_BYTES: u64 = 64 << 10;

/// A file's text, if it is at most `max` bytes (`None` if larger): what is past the bound
/// is never read.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// `host:port` as `http://host:port`, as `alertprof capture` takes it; a URL with a
/// scheme as it is.
fn with_scheme(text: &str) -> std::borrow::Cow<'_, str> {
    match text.contains("://") {
        true => text.into(),
        false => format!("http://{text}").into(),
    }
}

/// An `http` or `https` URL with a host (`http://` taken when none is given).
pub fn read_url(w: &mut Walker, path: &str, value: &Value) -> Option<Url> {
    let given = w.string(path, value)?;
    let text = &*with_scheme(given);
    if text.contains("{{") {
        w.report(path, "templated URLs are not supported here; list each target with its own URL");
        return None;
    }
    match Url::parse(text) {
        Ok(url) if url.fragment().is_some() => {
            w.report(path, format!("{given:?} has a fragment (#…), which is never sent; leave it out"));
            None
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Some(url),
        Ok(_) => {
            w.report(path, format!("{given:?} must be an http:// or https:// URL with a host"));
            None
        }
        Err(error) => {
            w.report(path, format!("{given:?} is not a URL: {error}"));
            None
        }
    }
}

/// A target URL: fixed, or a `{{ labels.NAME }}` template.
pub fn read_url_spec(w: &mut Walker, path: &str, value: &Value) -> Option<UrlSpec> {
    let given = w.string(path, value)?;
    let text = &*with_scheme(given);
    if !text.contains("{{") && !text.contains("}}") {
        return read_url(w, path, value).map(UrlSpec::Fixed);
    }
    let template = UrlTemplate::parse(text).map_err(|error| w.report(path, error.to_string())).ok()?;
    match Url::parse(&template.sample()) {
        Ok(url) if url.fragment().is_some() => {
            w.report(path, format!("{given:?} has a fragment (#…), which is never sent; leave it out"));
            None
        }
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(UrlSpec::Template(template)),
        _ => {
            w.report(
                path,
                format!("{given:?} must be an http:// or https:// URL once its labels are filled in"),
            );
            None
        }
    }
}

/// Reads a secret from `<key>_file` (relative to the config), trimming one trailing newline.
pub fn read_secret(w: &mut Walker, path: &str, value: &Value, base: &Path) -> Option<Secret> {
    let file = base.join(w.string(path, value)?);
    match read_bounded(&file, MAX_SECRET_BYTES) {
        Ok(None) => {
            let max = MAX_SECRET_BYTES >> 10;
            w.report(
                path,
                format!("{} is larger than {max} KiB; a secret file holds one secret", file.display()),
            );
            None
        }
        Ok(Some(text)) => {
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            if secret.is_empty() {
                w.report(path, format!("{} is empty", file.display()));
                return None;
            }
            Some(Secret::new(secret))
        }
        Err(error) => {
            w.report(path, format!("cannot read {}: {error}", file.display()));
            None
        }
    }
}

/// An entry's `name`: 1-128 safe characters, not taken by an earlier entry in `seen`;
/// `what` says which kind of entry (target, rule).
pub fn read_name(
    w: &mut Walker,
    object: &Object<'_>,
    seen: &mut HashSet<String>,
    what: &str,
) -> Option<String> {
    let Some((path, value)) = object.get("name") else {
        w.report(&object.path, format!("{what} needs a name"));
        return None;
    };
    let name = w.string(&path, value)?;
    if !is_safe_name(name) {
        w.report(&path, format!("{name:?} must be 1-128 characters of a-z A-Z 0-9 _ . -"));
        return None;
    }
    if !seen.insert(name.to_string()) {
        w.report(&path, format!("duplicate {what} name {name:?}"));
        return None;
    }
    Some(name.to_string())
}
