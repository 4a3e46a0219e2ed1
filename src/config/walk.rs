//! Reads a parsed YAML tree field by field, collecting every problem with its place
//! (`rules[2].verify.cpu_percent.min: must be a number`) instead of stopping at the first.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

use super::units::{parse_duration, parse_size};
use crate::model::name::is_label_name;

/// One mistake in the config, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path into the document, e.g. `rules[0].capture[1]`; empty for the whole file.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// `parent.key`, or `key` at the top.
pub fn field(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_string() } else { format!("{parent}.{key}") }
}

/// `parent[index]`.
pub fn index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Collects problems while typed values are read out of the tree.
#[derive(Default)]
pub struct Walker {
    pub problems: Vec<Problem>,
}

/// A mapping whose keys were checked against the known ones; `get` treats YAML `null`
/// (an empty value) as absent.
pub struct Object<'a> {
    pub path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Object<'a> {
    pub fn get(&self, key: &str) -> Option<(String, &'a Value)> {
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some((field(&self.path, key), value)),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl Walker {
    pub fn report(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem { path: path.to_string(), message: message.into() });
    }

    /// A mapping with only `known` keys; every unknown key is reported.
    pub fn object<'a>(&mut self, path: &str, value: &'a Value, known: &[&str]) -> Option<Object<'a>> {
        let Value::Object(map) = value else {
            self.report(path, format!("must be a mapping, not {}", kind(value)));
            return None;
        };
        for key in map.keys() {
            if !known.contains(&key.as_str()) {
                let message = match known {
                    [] => format!("unknown key {key:?}"),
                    _ => format!("unknown key {key:?} (known: {})", known.join(", ")),
                };
                self.report(&field(path, key), message);
            }
        }
        Some(Object { path: path.to_string(), map })
    }

    pub fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        match value {
            Value::String(text) => Some(text),
            other => {
                self.report(path, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }

    pub fn number(&mut self, path: &str, value: &Value) -> Option<f64> {
        match value.as_f64() {
            Some(number) if number.is_finite() => Some(number),
            _ => {
                self.report(path, "must be a number");
                None
            }
        }
    }

    /// A whole number in `low..=high`.
    pub fn integer(&mut self, path: &str, value: &Value, low: u64, high: u64) -> Option<u64> {
        match value.as_u64() {
            Some(number) if (low..=high).contains(&number) => Some(number),
            _ => {
                self.report(path, format!("must be a whole number from {low} to {high}"));
                None
            }
        }
    }

    pub fn boolean(&mut self, path: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(flag) => Some(*flag),
            _ => {
                self.report(path, "must be true or false");
                None
            }
        }
    }

    pub fn duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        if value.is_number() {
            self.report(path, format!("{value} needs a unit: a duration like 500ms, 30s, 5m or 1h30m"));
            return None;
        }
        let text = self.string(path, value)?;
        parse_duration(text).map_err(|error| self.report(path, error.to_string())).ok()
    }

    /// A duration that must be longer than zero.
    pub fn positive_duration(&mut self, path: &str, value: &Value) -> Option<Duration> {
        let duration = self.duration(path, value)?;
        if duration.is_zero() {
            self.report(path, "must be longer than 0s");
            return None;
        }
        Some(duration)
    }

    pub fn size(&mut self, path: &str, value: &Value) -> Option<u64> {
        match value {
            Value::Number(_) => self.integer(path, value, 0, u64::MAX),
            _ => {
                let text = self.string(path, value)?;
                parse_size(text).map_err(|error| self.report(path, error.to_string())).ok()
            }
        }
    }

    pub fn list<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a Vec<Value>> {
        match value {
            Value::Array(items) => Some(items),
            other => {
                self.report(path, format!("must be a list, not {}", kind(other)));
                None
            }
        }
    }

    /// A list of distinct label names.
    pub fn label_names(&mut self, path: &str, value: &Value) -> Option<Vec<String>> {
        let items = self.list(path, value)?;
        let mut names: Vec<String> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let item_path = index(path, i);
            let Some(name) = self.string(&item_path, item) else {
                ok = false;
                continue;
            };
            if !is_label_name(name) {
                self.report(&item_path, format!("{name:?} is not a valid label name"));
                ok = false;
            } else if names.iter().any(|n| n == name) {
                self.report(&item_path, format!("{name:?} is listed twice"));
                ok = false;
            } else {
                names.push(name.to_string());
            }
        }
        ok.then_some(names)
    }

    /// A mapping of label names to string values (numbers and booleans are taken as text,
    /// as Prometheus labels always are).
    pub fn labels(&mut self, path: &str, value: &Value) -> Option<BTreeMap<String, String>> {
        let Value::Object(map) = value else {
            self.report(path, format!("must be a mapping of label names to values, not {}", kind(value)));
            return None;
        };
        let mut labels = BTreeMap::new();
        for (name, value) in map {
            let label_path = field(path, name);
            if !is_label_name(name) {
                self.report(&label_path, format!("{name:?} is not a valid label name"));
                continue;
            }
            let text = match value {
                Value::String(text) => text.clone(),
                Value::Number(number) => number.to_string(),
                Value::Bool(flag) => flag.to_string(),
                other => {
                    self.report(&label_path, format!("must be a string, not {}", kind(other)));
                    continue;
                }
            };
            labels.insert(name.clone(), text);
        }
        Some(labels)
    }
}

/// Reads `key` with `read` if present, else the default.
pub fn optional<T>(
    w: &mut Walker,
    object: &Object<'_>,
    key: &str,
    default: T,
    read: impl FnOnce(&mut Walker, &str, &Value) -> Option<T>,
) -> Option<T> {
    match object.get(key) {
        Some((path, value)) => read(w, &path, value),
        None => Some(default),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
