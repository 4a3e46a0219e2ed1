//! `targets:`: where each service's pprof endpoint is (if it has one), how to find its
//! local process, and which alerts are for it.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::pyroscope::read_service_name;
use super::recorder::{RecorderConfig, read_recorder};
use super::values::{read_name, read_url_spec};
use super::walk::{Walker, field, index, optional};
use crate::model::{AllowedTarget, Endpoint, EndpointError, Name, UrlSpec, UrlTemplate};

#[derive(Debug, Clone)]
pub struct Target {
    pub name: Name,
    /// Base URL; `/debug/pprof/...` is appended. May be templated from alert labels.
    /// `None`: the service serves no pprof; only `perf` profiles its process.
    pub pprof_url: Option<UrlSpec>,
    pub metrics_url: Option<UrlSpec>,
    /// Where templated URLs may lead; required with them.
    pub allowed_targets: Vec<AllowedTarget>,
    /// The URLs ready for jobs when none is templated: built once, shared by every job.
    pub endpoint: Option<Arc<Endpoint>>,
    pub process: Option<ProcessRef>,
    /// An alert whose labels include all of these is for this target.
    pub alert_labels: BTreeMap<String, String>,
    /// What of its recent past is kept, for lookback and for its last profiles when its
    /// process ends.
    pub recorder: Option<RecorderConfig>,
    /// What its profiles are called in Pyroscope (the `service_name` label), when it is not
    /// the target's name.
    pub service_name: Option<String>,
}

/// How to find a target's local process for cgroup and /proc readings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessRef {
    ListenPort(u16),
    Pid(u32),
    /// Relative to `cgroup_root`.
    Cgroup(PathBuf),
    /// A templated target's: the alert's cgroup, rendered from its labels
    /// (`{{ labels.id }}`, cAdvisor's cgroup path), relative to `cgroup_root`.
    CgroupTemplate(UrlTemplate),
}

impl Target {
    /// What its profiles are called in Pyroscope: its `service_name`, else its name.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or(&self.name)
    }

    /// The URLs of this target for an alert with `labels`: the fixed ones, or the
    /// templates rendered and checked against `allowed_targets`.
    pub fn endpoint_for(&self, labels: &BTreeMap<String, String>) -> Result<Arc<Endpoint>, EndpointError> {
        match &self.endpoint {
            Some(fixed) => Ok(fixed.clone()),
            None => {
                let endpoint = Endpoint::render(
                    self.pprof_url.as_ref(),
                    self.metrics_url.as_ref(),
                    &self.allowed_targets,
                    labels,
                )?;
                match &self.process {
                    Some(ProcessRef::CgroupTemplate(template)) => {
                        let cgroup = Some(template.render_cgroup(labels)?);
                        Ok(Arc::new(Endpoint { cgroup, ..Arc::unwrap_or_clone(endpoint) }))
                    }
                    _ => Ok(endpoint),
                }
            }
        }
    }
}

pub(super) fn read_targets(w: &mut Walker, entry: Option<(String, &Value)>) -> Option<Vec<Target>> {
    let Some((path, value)) = entry else {
        return Some(Vec::new());
    };
    let items = w.list(&path, value)?;
    let mut seen = HashSet::new();
    let targets: Vec<Option<Target>> =
        items.iter().enumerate().map(|(i, item)| read_target(w, &index(&path, i), item, &mut seen)).collect();
    targets.into_iter().collect()
}

/// A target as written, even if it is otherwise invalid, so that rules naming it are not
/// reported as naming an unknown target too.
pub(super) struct Declared {
    pub(super) name: String,
    /// Its URLs or its cgroup come from alert labels.
    pub(super) templated: bool,
}

pub(super) fn declared_targets(entry: Option<(String, &Value)>) -> Vec<Declared> {
    let items = entry.and_then(|(_, value)| value.as_array().cloned()).unwrap_or_default();
    let text =
        |item: &Value, key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    items
        .iter()
        .map(|item| Declared {
            name: text(item, "name"),
            templated: text(item, "pprof_url").contains("{{")
                || text(item, "metrics_url").contains("{{")
                || item.get("process").is_some_and(|process| text(process, "cgroup").contains("{{")),
        })
        .collect()
}

fn read_target(w: &mut Walker, path: &str, value: &Value, seen: &mut HashSet<String>) -> Option<Target> {
    let object = w.object(
        path,
        value,
        &[
            "name",
            "pprof_url",
            "metrics_url",
            "process",
            "alert_labels",
            "allowed_targets",
            "recorder",
            "service_name",
        ],
    )?;
    let name = read_name(w, &object, seen, "target");
    let pprof_url = match object.get("pprof_url") {
        Some((p, v)) => read_url_spec(w, &p, v).map(Some),
        None if object.has("process") => Some(None),
        None => {
            w.report(
                path,
                "needs pprof_url, or a process to profile with perf (process: {pid | listen_port | cgroup})",
            );
            None
        }
    };
    let metrics_url = optional(w, &object, "metrics_url", None, |w, p, v| read_url_spec(w, p, v).map(Some));
    let process = optional(w, &object, "process", None, |w, p, v| read_process(w, p, v).map(Some));
    let alert_labels = optional(w, &object, "alert_labels", BTreeMap::new(), Walker::labels);
    let service_name =
        optional(w, &object, "service_name", None, |w, p, v| read_service_name(w, p, v).map(Some));
    let allowed_targets = optional(w, &object, "allowed_targets", Vec::new(), |w, p, v| {
        let items = w.list(p, v)?;
        let parsed: Vec<Option<AllowedTarget>> = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let item_path = index(p, i);
                let text = w.string(&item_path, item)?;
                AllowedTarget::parse(text).map_err(|error| w.report(&item_path, error.to_string())).ok()
            })
            .collect();
        parsed.into_iter().collect()
    });
    // From the text, so that a template with a mistake of its own is still taken as one.
    let templated = ["pprof_url", "metrics_url"]
        .iter()
        .any(|key| object.get(key).and_then(|(_, v)| v.as_str()).is_some_and(|t| t.contains("{{")));
    let allowed_path = field(path, "allowed_targets");
    match (&allowed_targets, templated) {
        (Some(allowed), true) if allowed.is_empty() => w.report(
            &allowed_path,
            "templated URLs need allowed_targets: the hosts and ports alert labels may lead to",
        ),
        (Some(allowed), false) if !allowed.is_empty() => {
            w.report(&allowed_path, "applies only to templated URLs ({{ labels.NAME }})")
        }
        _ => {}
    }
    match (templated, &process) {
        (true, Some(Some(ProcessRef::CgroupTemplate(_)))) | (_, None | Some(None)) => {}
        (true, Some(Some(_))) => w.report(
            &field(path, "process"),
            "a templated target has no one local process; give its cgroup from the alert's labels, as {cgroup: \"{{ labels.id }}\"}",
        ),
        // With no pprof endpoint at all, the alert's cgroup is profiled with perf.
        (false, Some(Some(ProcessRef::CgroupTemplate(_)))) if object.has("pprof_url") => {
            w.report(&field(path, "process.cgroup"), "templates need a templated pprof_url: the process is the alert's")
        }
        (false, Some(Some(_))) => {}
    }
    let has_pprof = object.has("pprof_url");
    let recorder =
        optional(w, &object, "recorder", None, |w, p, v| read_recorder(w, p, v, has_pprof).map(Some));
    let per_alert = templated || matches!(process, Some(Some(ProcessRef::CgroupTemplate(_))));
    if per_alert && matches!(recorder, Some(Some(_))) {
        w.report(&field(path, "recorder"), "a templated target has no one instance to record");
    }
    let pprof_url = pprof_url?;
    let metrics_url = metrics_url?;
    let process = process?;
    let fixed = match &process {
        Some(ProcessRef::CgroupTemplate(_)) => None,
        _ => Endpoint::fixed(pprof_url.as_ref(), metrics_url.as_ref()),
    };
    Some(Target {
        endpoint: fixed,
        name: name?.into(),
        pprof_url,
        metrics_url,
        allowed_targets: allowed_targets?,
        process,
        alert_labels: alert_labels?,
        recorder: recorder?,
        service_name: service_name?,
    })
}

fn read_process(w: &mut Walker, path: &str, value: &Value) -> Option<ProcessRef> {
    let object = w.object(path, value, &["listen_port", "pid", "cgroup"])?;
    let given: Vec<_> = ["listen_port", "pid", "cgroup"].into_iter().filter(|key| object.has(key)).collect();
    if given.len() != 1 {
        w.report(path, "give exactly one of listen_port, pid, cgroup");
        return None;
    }
    let (p, v) = object.get(given[0])?;
    match given[0] {
        "listen_port" => w.integer(&p, v, 1, 65535).map(|port| ProcessRef::ListenPort(port as u16)),
        "pid" => w.integer(&p, v, 1, u32::MAX as u64).map(|pid| ProcessRef::Pid(pid as u32)),
        _ => {
            let cgroup = w.string(&p, v)?;
            if cgroup.contains("{{") || cgroup.contains("}}") {
                return match UrlTemplate::parse(cgroup) {
                    Ok(template) => Some(ProcessRef::CgroupTemplate(template)),
                    Err(why) => {
                        w.report(&p, why.to_string());
                        None
                    }
                };
            }
            let relative = cgroup.trim_start_matches('/');
            if Path::new(relative).components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
                w.report(&p, format!("{cgroup:?} must be a cgroup path without `..`"));
                return None;
            }
            Some(ProcessRef::Cgroup(PathBuf::from(relative)))
        }
    }
}
