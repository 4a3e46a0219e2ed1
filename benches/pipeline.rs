//! In-process parts on the hot paths: webhook parsing and matching, the trigger rule,
//! validating a profile (streamed and fully decoded), and one local sample of a process.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use alertprof::config::Config;
use alertprof::intake::parse;
use alertprof::model::Threshold;
use alertprof::profile::proto::{Profile, ValueType};
use alertprof::profile::{decode_profile, scan_profile};
use alertprof::rules::match_alert;
use alertprof::verify::sampler::Probe;
use alertprof::verify::trigger::evaluate;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use serde_json::json;

fn payload(alerts: usize) -> Vec<u8> {
    let alerts: Vec<_> = (0..alerts)
        .map(|i| {
            json!({"status": "firing", "labels": {"alertname": "HighCPU", "job": "svc", "instance": format!("10.0.0.{i}:6060")},
                   "annotations": {"summary": "CPU over 80%"}, "startsAt": "2026-11-21T10:00:00Z",
                   "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph", "fingerprint": format!("{i:016x}")})
        })
        .collect();
    json!({"version": "4", "status": "firing", "receiver": "alertprof", "groupLabels": {}, "commonLabels": {},
           "commonAnnotations": {}, "externalURL": "http://am", "groupKey": "g", "truncatedAlerts": 0, "alerts": alerts})
    .to_string()
    .into_bytes()
}

fn intake(c: &mut Criterion) {
    let config = Arc::new(
        Config::parse(
            "targets: [{name: svc, pprof_url: \"http://127.0.0.1:6060\", alert_labels: {job: svc}}]\n\
             rules: [{name: cpu, alert_labels: {alertname: HighCPU}, capture: [cpu]}]\n",
            Path::new("/nonexistent"),
        )
        .unwrap(),
    );
    let mut group = c.benchmark_group("intake");
    for alerts in [1, 100] {
        let body = payload(alerts);
        group.throughput(Throughput::Elements(alerts as u64));
        group.bench_function(format!("parse_and_match/{alerts}"), |b| {
            b.iter(|| {
                let payload = parse(&body).unwrap();
                payload
                    .alerts
                    .iter()
                    .map(|alert| {
                        match_alert(
                            &config,
                            alert,
                            chrono::Utc::now(),
                            |_: &alertprof::gate::DedupeKey, _: &alertprof::gate::CooldownKey<'_>| Ok(None),
                        )
                        .len()
                    })
                    .sum::<usize>()
            })
        });
    }
    group.finish();
}

fn trigger(c: &mut Criterion) {
    let threshold =
        Threshold { min: Some(20.0), abs: Some(70.0), diff: Some(25.0), max: Some(400.0), zscore: None };
    let history = [30.0, 31.0, 29.0, 30.0, 32.0, 28.0, 30.0, 31.0, 29.0, 30.0];
    c.bench_function("trigger/evaluate_diff", |b| {
        b.iter(|| evaluate("cpu_percent", &threshold, 45.0, &history, 10))
    });
}

fn validation(c: &mut Criterion) {
    let strings: Vec<String> =
        std::iter::once(String::new()).chain((0..40_000).map(|i| format!("main.function{i}"))).collect();
    let profile = Profile {
        string_table: strings,
        sample_type: vec![ValueType { r#type: 1, unit: 2 }],
        ..Default::default()
    };
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&profile.encode_to_vec()).unwrap();
    let body = encoder.finish().unwrap();
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(profile.encoded_len() as u64));
    group.bench_function("streamed", |b| b.iter(|| scan_profile(body.as_slice(), 1 << 30).unwrap()));
    group.bench_function("decoded", |b| b.iter(|| decode_profile(body.as_slice(), 1 << 30).unwrap()));
    group.finish();
}

fn sampling(c: &mut Criterion) {
    let pid = std::process::id();
    let config = Config::parse(
        &format!("targets: [{{name: me, pprof_url: \"http://127.0.0.1:1\", process: {{pid: {pid}}}}}]\n"),
        Path::new("."),
    )
    .unwrap();
    let mut probe = Probe::new(&config.targets[0], &[], Path::new("/sys/fs/cgroup"), Path::new("/proc"));
    let start = std::time::Instant::now();
    c.bench_function("sample/local_process_and_cgroup", |b| b.iter(|| probe.sample_local(start.elapsed())));
}

criterion_group!(benches, intake, trigger, validation, sampling);
criterion_main!(benches);
