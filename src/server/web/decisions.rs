//! The decision log as the pages show it: newest first, each linking the captures it made.

use super::links;
use crate::model::Decision;
use crate::model::text::time;

/// A table of decisions (`templates/decisions.html`), or what to say when there are none.
pub struct DecisionTable<'a> {
    pub rows: Vec<DecisionRow<'a>>,
    pub none: &'static str,
}

pub struct DecisionRow<'a> {
    pub decision: &'a Decision,
    pub time: String,
    pub rule: &'a str,
    pub target: &'a str,
    pub alertname: &'a str,
    pub reason: String,
    /// The captures it made: link and id.
    pub captures: Vec<(String, &'a str)>,
}

impl<'a> DecisionTable<'a> {
    pub fn new(decisions: &'a [Decision], none: &'static str) -> DecisionTable<'a> {
        let rows = decisions
            .iter()
            .map(|decision| DecisionRow {
                decision,
                time: time(&decision.at),
                rule: decision.rule.as_deref().unwrap_or(""),
                target: decision.target.as_deref().unwrap_or(""),
                alertname: decision.alertname.as_deref().unwrap_or(""),
                reason: decision.reason.to_string(),
                captures: decision.captures.iter().map(|id| (links::page(id), id.as_str())).collect(),
            })
            .collect();
        DecisionTable { rows, none }
    }
}
