//! Any text as a target's /metrics: parsing and lookups never panic.
#![no_main]

use std::collections::BTreeMap;

use alertprof::verify::target_metrics::TargetMetrics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(metrics) = TargetMetrics::parse(&text) {
        let _ = (metrics.goroutines(), metrics.threads(), metrics.heap_inuse_bytes());
        let labels = BTreeMap::from([("code".to_string(), "500".to_string())]);
        let _ = metrics.value("http_requests_total", &labels);
    }
});
