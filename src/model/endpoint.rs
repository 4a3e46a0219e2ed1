//! Where a job's requests go. A target's URL is fixed, or templated from alert labels
//! (`http://{{ labels.instance }}`) and then checked against the target's
//! `allowed_targets` (host or CIDR, and ports). Link-local and cloud metadata addresses are
//! refused unless an entry names them explicitly. Label values are checked before they
//! become part of a URL and never become part of a path on disk.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;

use super::name::is_label_name;

/// Why a target's URL or cgroup cannot be made from a template or an alert's labels, or
/// may not be requested.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EndpointError {
    #[error("unclosed {{{{ in {0:?}")]
    Unclosed(String),
    #[error("{{{{ {0} }}}} is not a placeholder; use {{{{ labels.NAME }}}}")]
    NotAPlaceholder(String),
    #[error("stray }}}} in {0:?}")]
    Stray(String),
    #[error("the alert has no label {0:?}")]
    NoLabel(String),
    #[error("label {name}={value:?} is not {what}")]
    BadLabel { name: String, value: String, what: &'static str },
    #[error("{text:?} is not a URL: {source}")]
    NotAUrl { text: String, source: url::ParseError },
    #[error("{0:?} is not an http(s) URL with a host")]
    NotHttp(String),
    #[error("{0:?} carries credentials")]
    Credentials(String),
    #[error("{0:?} is not a cgroup path below the cgroup root")]
    NotACgroup(String),
    #[error("{text:?} {why}; write HOST:PORTS like 10.0.0.0/8:6060, [fd00::/8]:6060-6070 or *.svc:*")]
    BadAllowed { text: String, why: &'static str },
    #[error("{0} is a link-local or metadata address; list it explicitly to allow it")]
    Special(IpAddr),
    /// `host:port` is in no entry.
    #[error("{0} is not in allowed_targets")]
    NotAllowed(String),
    #[error("{0} is a metadata service name; list it explicitly to allow it")]
    MetadataName(String),
    #[error("the name resolves to {0}, a link-local or metadata address")]
    ResolvesSpecial(IpAddr),
    #[error("the name resolves to no address")]
    ResolvesNothing,
}

/// A target's URLs for one job.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// `None` for a target with no pprof endpoint: only `perf` profiles its process.
    pub pprof_url: Option<reqwest::Url>,
    pub metrics_url: Option<reqwest::Url>,
    /// Whether the URLs came from alert labels (and so were checked against
    /// `allowed_targets`, and their host names must be checked once resolved).
    pub templated: bool,
    /// The alert's cgroup (relative to `cgroup_root`), for a templated target whose
    /// process is `{cgroup: "{{ labels.id }}"}`: where its readings are, if on this node.
    pub cgroup: Option<PathBuf>,
}

impl Endpoint {
    /// The URLs for an alert with `labels`: templates rendered and checked against
    /// `allowed`, fixed URLs as they are.
    pub fn render(
        pprof_url: Option<&UrlSpec>,
        metrics_url: Option<&UrlSpec>,
        allowed: &[AllowedTarget],
        labels: &BTreeMap<String, String>,
    ) -> Result<Arc<Endpoint>, EndpointError> {
        let render = |spec: &UrlSpec| -> Result<reqwest::Url, EndpointError> {
            match spec {
                UrlSpec::Fixed(url) => Ok(url.clone()),
                UrlSpec::Template(template) => {
                    let url = template.render(labels)?;
                    check_allowed(&url, allowed)?;
                    Ok(url)
                }
            }
        };
        Ok(Arc::new(Endpoint {
            pprof_url: pprof_url.map(render).transpose()?,
            metrics_url: metrics_url.map(render).transpose()?,
            templated: matches!(pprof_url, Some(UrlSpec::Template(_)))
                || matches!(metrics_url, Some(UrlSpec::Template(_))),
            cgroup: None,
        }))
    }

    /// The URLs of a target whose URLs are fixed, built once with the config.
    pub fn fixed(pprof_url: Option<&UrlSpec>, metrics_url: Option<&UrlSpec>) -> Option<Arc<Endpoint>> {
        Some(Arc::new(Endpoint {
            pprof_url: match pprof_url {
                Some(spec) => Some(spec.fixed()?.clone()),
                None => None,
            },
            metrics_url: match metrics_url {
                Some(spec) => Some(spec.fixed()?.clone()),
                None => None,
            },
            templated: false,
            cgroup: None,
        }))
    }

    /// Whether this endpoint was rendered for one alert, from its labels (its URLs, or the
    /// cgroup it names): such a target is not sampled over time nor recorded; its readings
    /// are taken when the alert comes.
    pub fn per_alert(&self) -> bool {
        self.templated || self.cgroup.is_some()
    }

    /// What the gate keeps a cooldown under: the target, or for a templated one the
    /// instance it was rendered to (one entry stands for many instances, and a capture of
    /// one is no reason to refuse another).
    pub fn gate_target<'a>(&self, target: &'a str) -> Cow<'a, str> {
        match self.per_alert() {
            true => Cow::Owned(self.slot_key(target)),
            false => Cow::Borrowed(target),
        }
    }

    /// What the gate serializes CPU profiles on: the target and the host it reaches, or,
    /// with no pprof endpoint, the alert's cgroup.
    pub fn slot_key(&self, target: &str) -> String {
        match (&self.pprof_url, &self.cgroup) {
            (Some(url), _) => format!(
                "{target}@{}:{}",
                url.host_str().unwrap_or(""),
                url.port_or_known_default().unwrap_or(0)
            ),
            (None, Some(cgroup)) => format!("{target}@/{}", cgroup.display()),
            (None, None) => target.to_string(),
        }
    }
}

/// A target URL: fixed in the config, or a template rendered per alert.
#[derive(Debug, Clone, PartialEq)]
pub enum UrlSpec {
    Fixed(Url),
    Template(UrlTemplate),
}

impl UrlSpec {
    pub fn fixed(&self) -> Option<&Url> {
        match self {
            UrlSpec::Fixed(url) => Some(url),
            UrlSpec::Template(_) => None,
        }
    }
}

impl fmt::Display for UrlSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSpec::Fixed(url) => write!(f, "{url}"),
            UrlSpec::Template(template) => write!(f, "{}", template.text),
        }
    }
}

/// Text with `{{ labels.NAME }}` placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Label(String),
}

impl UrlTemplate {
    /// Parses a template; only `{{ labels.NAME }}` placeholders are known.
    pub fn parse(text: &str) -> Result<UrlTemplate, EndpointError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let end =
                rest[start..].find("}}").ok_or_else(|| EndpointError::Unclosed(text.to_string()))? + start;
            let inner = rest[start + 2..end].trim();
            let name = inner
                .strip_prefix("labels.")
                .filter(|name| is_label_name(name))
                .ok_or_else(|| EndpointError::NotAPlaceholder(inner.to_string()))?;
            parts.push(Part::Label(name.to_string()));
            rest = &rest[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if rest.contains("}}") {
            return Err(EndpointError::Stray(text.to_string()));
        }
        Ok(UrlTemplate { text: text.to_string(), parts })
    }

    pub fn is_templated(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Part::Label(_)))
    }

    /// The text with each placeholder replaced by its label's value, which must be
    /// 1-255 characters that `safe` allows.
    fn fill(
        &self,
        labels: &BTreeMap<String, String>,
        safe: fn(char) -> bool,
        what: &'static str,
    ) -> Result<String, EndpointError> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(piece) => text.push_str(piece),
                Part::Label(name) => {
                    let value = labels.get(name).ok_or_else(|| EndpointError::NoLabel(name.clone()))?;
                    if value.is_empty() || value.len() > 255 || !value.chars().all(safe) {
                        let value = super::text::clip(value, 64).into_owned();
                        return Err(EndpointError::BadLabel { name: name.clone(), value, what });
                    }
                    text.push_str(value);
                }
            }
        }
        Ok(text)
    }

    /// Renders with alert labels. A value may hold only what a host and port hold
    /// (`A-Z a-z 0-9 . - : [ ]`), so no label can add a path, a query, credentials or
    /// another host.
    pub fn render(&self, labels: &BTreeMap<String, String>) -> Result<Url, EndpointError> {
        let host_port = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
        let text = self.fill(labels, host_port, "a host[:port]")?;
        let url =
            Url::parse(&text).map_err(|source| EndpointError::NotAUrl { text: text.clone(), source })?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(EndpointError::NotHttp(text));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::Credentials(text));
        }
        Ok(url)
    }

    /// Renders a cgroup path with alert labels (cAdvisor's `id` is one): relative to the
    /// cgroup root, of `A-Z a-z 0-9 . - _ : /` and never climbing out of it with `..`.
    pub fn render_cgroup(&self, labels: &BTreeMap<String, String>) -> Result<PathBuf, EndpointError> {
        let path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '/');
        let text = self.fill(labels, path_char, "a cgroup path")?;
        let relative = Path::new(text.trim_start_matches('/'));
        if relative.as_os_str().is_empty()
            || relative.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(EndpointError::NotACgroup(text));
        }
        Ok(relative.to_path_buf())
    }

    /// The template with every placeholder as `placeholder.invalid`, to check its shape.
    pub fn sample(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(piece) => piece.as_str(),
                Part::Label(_) => "placeholder.invalid",
            })
            .collect()
    }
}

/// One `allowed_targets` entry: `HOST:PORTS`, HOST an IP, a CIDR (IPv6 in brackets), a host
/// name, or `*.suffix`; PORTS a port, a range `a-b`, or `*`.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedTarget {
    host: HostPattern,
    ports: (u16, u16),
}

#[derive(Debug, Clone, PartialEq)]
enum HostPattern {
    Net(IpNet),
    Name(String),
    Suffix(String),
}

/// Networks that are never reached unless an entry lies inside them: link-local (where
/// cloud metadata services answer) and known metadata addresses.
const SPECIAL_NETS: [&str; 4] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"];
const SPECIAL_NAMES: [&str; 4] =
    ["metadata", "metadata.google.internal", "instance-data", "metadata.azure.com"];

impl AllowedTarget {
    pub fn parse(text: &str) -> Result<AllowedTarget, EndpointError> {
        let bad = |why: &'static str| EndpointError::BadAllowed { text: text.to_string(), why };
        let (host, ports) = if let Some(rest) = text.strip_prefix('[') {
            let (host, ports) = rest.split_once("]:").ok_or_else(|| bad("has no port"))?;
            (host, ports)
        } else {
            text.rsplit_once(':').ok_or_else(|| bad("has no port"))?
        };
        let ports = match ports {
            "*" => (1, u16::MAX),
            range => match range.split_once('-') {
                Some((low, high)) => (
                    low.parse().map_err(|_| bad("has a bad port"))?,
                    high.parse().map_err(|_| bad("has a bad port"))?,
                ),
                None => {
                    let port = range.parse().map_err(|_| bad("has a bad port"))?;
                    (port, port)
                }
            },
        };
        if ports.0 == 0 || ports.0 > ports.1 {
            return Err(bad("has a bad port range"));
        }
        let host = if let Ok(net) = host.parse::<IpNet>() {
            HostPattern::Net(net)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            HostPattern::Net(IpNet::from(ip))
        } else if let Some(suffix) = host.strip_prefix("*.") {
            valid_name(suffix).ok_or_else(|| bad("has a bad host"))?;
            HostPattern::Suffix(suffix.to_ascii_lowercase())
        } else {
            valid_name(host).ok_or_else(|| bad("has a bad host"))?;
            HostPattern::Name(host.to_ascii_lowercase())
        };
        Ok(AllowedTarget { host, ports })
    }

    fn allows_port(&self, port: u16) -> bool {
        (self.ports.0..=self.ports.1).contains(&port)
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        matches!(&self.host, HostPattern::Net(net) if net.contains(&ip))
    }

    fn allows_name(&self, name: &str) -> bool {
        match &self.host {
            HostPattern::Name(exact) => exact == name,
            HostPattern::Suffix(suffix) => {
                name.strip_suffix(suffix.as_str()).is_some_and(|head| head.ends_with('.'))
            }
            HostPattern::Net(_) => false,
        }
    }

    /// Whether this entry names (lies inside) a special network.
    fn explicitly_special(&self, ip: IpAddr) -> bool {
        let HostPattern::Net(net) = &self.host else { return false };
        special_net(ip).is_some_and(|special| special.contains(net) && net.contains(&ip))
    }
}

fn valid_name(name: &str) -> Option<()> {
    (!name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        }))
    .then_some(())
}

fn special_net(ip: IpAddr) -> Option<IpNet> {
    SPECIAL_NETS.iter().map(|net| net.parse::<IpNet>().expect("valid")).find(|net| net.contains(&ip))
}

/// Whether `url` may be requested under `allowed`. A host name is checked by name here;
/// the addresses it resolves to are checked with `check_resolved` before connecting.
pub fn check_allowed(url: &Url, allowed: &[AllowedTarget]) -> Result<(), EndpointError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let host =
        url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let entries: Vec<&AllowedTarget> = allowed.iter().filter(|entry| entry.allows_port(port)).collect();
    match host.parse::<IpAddr>() {
        Ok(ip) => {
            if special_net(ip).is_some() && !entries.iter().any(|entry| entry.explicitly_special(ip)) {
                return Err(EndpointError::Special(ip));
            }
            if !entries.iter().any(|entry| entry.allows_ip(ip)) {
                return Err(EndpointError::NotAllowed(format!("{ip}:{port}")));
            }
        }
        Err(_) => {
            if SPECIAL_NAMES.contains(&host.as_str())
                && !entries.iter().any(|e| e.host == HostPattern::Name(host.clone()))
            {
                return Err(EndpointError::MetadataName(host));
            }
            if !entries.iter().any(|entry| entry.allows_name(&host)) {
                return Err(EndpointError::NotAllowed(format!("{host}:{port}")));
            }
        }
    }
    Ok(())
}

/// Checks the addresses a host name resolved to: none may be link-local or metadata
/// unless listed explicitly (a name must not smuggle a request to the metadata service).
pub fn check_resolved(addresses: &[IpAddr], allowed: &[AllowedTarget]) -> Result<(), EndpointError> {
    for &ip in addresses {
        if special_net(ip).is_some() && !allowed.iter().any(|entry| entry.explicitly_special(ip)) {
            return Err(EndpointError::ResolvesSpecial(ip));
        }
    }
    if addresses.is_empty() {
        return Err(EndpointError::ResolvesNothing);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(entries: &[&str]) -> Vec<AllowedTarget> {
        entries.iter().map(|e| AllowedTarget::parse(e).unwrap()).collect()
    }

    fn labels(instance: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("instance".to_string(), instance.to_string())])
    }

    /// Label values that would change more than host and port are refused.
    #[test]
    fn rendering() {
        let template = UrlTemplate::parse("http://{{ labels.instance }}").unwrap();
        assert!(template.is_templated());
        assert_eq!(template.render(&labels("10.1.2.3:6060")).unwrap().as_str(), "http://10.1.2.3:6060/");
        assert_eq!(template.render(&labels("[fd00::1]:6060")).unwrap().as_str(), "http://[fd00::1]:6060/");
        for hostile in ["evil.com/x", "a@b", "a:6060/../../etc", "h?x=1", "h#f", "", "a b", "h%2f"] {
            assert!(template.render(&labels(hostile)).is_err(), "{hostile:?} rendered");
        }
        assert_eq!(template.render(&BTreeMap::new()), Err(EndpointError::NoLabel("instance".into())));
        for bad in ["http://{{ instance }}", "http://{{ labels.a-b }}", "http://{{ labels.x", "http://x}}"] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    /// Hosts and ports against entries; link-local and metadata only when named.
    #[test]
    fn allow_list() {
        let list =
            allowed(&["10.0.0.0/8:6060", "127.0.0.1:6060-6070", "*.svc.cluster.local:*", "[fd00::/8]:6060"]);
        let check = |url: &str| check_allowed(&Url::parse(url).unwrap(), &list);
        assert_eq!(check("http://10.9.8.7:6060"), Ok(()));
        assert_eq!(check("http://127.0.0.1:6065"), Ok(()));
        assert_eq!(check("http://api.shop.svc.cluster.local:8080"), Ok(()));
        assert_eq!(check("http://[fd00::5]:6060"), Ok(()));
        assert_eq!(
            check("http://10.9.8.7:22").unwrap_err().to_string(),
            "10.9.8.7:22 is not in allowed_targets"
        );
        assert!(check("http://192.168.1.1:6060").is_err());
        assert!(check("http://svc.cluster.local.evil.com:6060").is_err());
        assert!(check("http://xsvc.cluster.local:6060").is_err());

        // Link-local and metadata: refused even under a catch-all.
        let open = allowed(&["0.0.0.0/0:*", "[::/0]:*", "*.internal:*"]);
        for url in [
            "http://169.254.169.254:80",
            "http://[fe80::1]:6060",
            "http://100.100.100.200:80",
            "http://metadata.google.internal:80",
        ] {
            let refused = check_allowed(&Url::parse(url).unwrap(), &open).unwrap_err();
            assert!(refused.to_string().contains("list it explicitly"), "{url}: {refused}");
        }
        // ...unless named.
        let named = allowed(&["169.254.10.0/24:6060", "metadata:80"]);
        assert_eq!(check_allowed(&Url::parse("http://169.254.10.7:6060").unwrap(), &named), Ok(()));
        assert_eq!(check_allowed(&Url::parse("http://metadata:80").unwrap(), &named), Ok(()));
        assert!(check_allowed(&Url::parse("http://169.254.169.254:6060").unwrap(), &named).is_err());

        // A name that resolves to the metadata address is refused.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(check_resolved(&[ip("10.0.0.1"), ip("169.254.169.254")], &list).is_err());
        assert_eq!(check_resolved(&[ip("10.0.0.1")], &list), Ok(()));
        assert!(check_resolved(&[], &list).is_err());
    }

    /// Entries that make no sense are refused with the expected form.
    #[test]
    fn bad_entries() {
        for bad in [
            "10.0.0.0/8",
            "10.0.0.0/33:80",
            "host:0",
            "host:9-1",
            "host:abc",
            "[fd00::1:80",
            "bad_host:80",
            ":80",
        ] {
            assert!(AllowedTarget::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
