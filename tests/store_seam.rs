//! A second store behind the `ProfileStore` seam, kept in memory here: the service keeps
//! its captures there with nothing else changed, and the API and the web page serve them.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alertprof::model::{CaptureMeta, ProfileKind, capture_id};
use alertprof::store::{CaptureFilter, Derived, ProfileStore, StagedFile, StoreError, StoredFile};
use chrono::Utc;
use serde_json::json;
use support::{Demo, Running, client, payload};

/// A capture's metadata and, if kept, its body.
type Kept = (CaptureMeta, Option<Vec<u8>>);

/// Captures and their bodies in memory.
#[derive(Default)]
struct MemoryStore {
    captures: Mutex<BTreeMap<String, Kept>>,
    derived: Mutex<HashMap<(String, &'static str), Vec<u8>>>,
    ids: AtomicU64,
}

impl ProfileStore for MemoryStore {
    fn new_id(&self, rule: &str, kind: ProfileKind) -> String {
        let n = self.ids.fetch_add(1, Ordering::SeqCst);
        format!("{}-{n}", capture_id(Utc::now(), rule, kind))
    }

    fn keep(&self, mut meta: CaptureMeta, body: Option<StagedFile>) -> Result<CaptureMeta, StoreError> {
        let bytes = match body.filter(|_| meta.is_ok()) {
            Some(staged) => {
                Some(std::fs::read(staged.path()).map_err(StoreError::io("read", staged.path()))?)
            }
            None => None,
        };
        meta.file = bytes.as_ref().map(|_| format!("{}{}", meta.id, meta.kind.extension()));
        self.captures.lock().unwrap().insert(meta.id.clone(), (meta.clone(), bytes));
        Ok(meta)
    }

    fn get(&self, id: &str) -> Option<CaptureMeta> {
        self.captures.lock().unwrap().get(id).map(|(meta, _)| meta.clone())
    }

    fn list(&self, filter: &CaptureFilter) -> Vec<CaptureMeta> {
        let captures = self.captures.lock().unwrap();
        let matching = captures.values().rev().map(|(meta, _)| meta).filter(|meta| filter.matches(meta));
        matching.take(filter.limit.unwrap_or(usize::MAX)).cloned().collect()
    }

    fn open_profile(&self, id: &str) -> Result<StoredFile, StoreError> {
        let captures = self.captures.lock().unwrap();
        let (meta, bytes) = captures.get(id).ok_or_else(|| StoreError::NotFound(id.into()))?;
        let bytes = bytes.clone().ok_or_else(|| StoreError::NoProfile(id.into()))?;
        let name = meta.file.clone().unwrap_or_default();
        Ok(StoredFile { len: bytes.len() as u64, reader: Box::new(Cursor::new(bytes)), name })
    }

    fn open_derived(&self, id: &str, derived: Derived) -> Result<Option<StoredFile>, StoreError> {
        let bytes = self.derived.lock().unwrap().get(&(id.to_string(), derived.suffix())).cloned();
        Ok(bytes.map(|bytes| StoredFile {
            len: bytes.len() as u64,
            reader: Box::new(Cursor::new(bytes)),
            name: id.into(),
        }))
    }

    fn put_derived(&self, id: &str, derived: Derived, bytes: &[u8]) -> Result<(), StoreError> {
        self.derived.lock().unwrap().insert((id.to_string(), derived.suffix()), bytes.to_vec());
        Ok(())
    }

    fn enforce_retention(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// An alert's heap profile goes to the other store: listed, served byte for byte, its
/// flame graph drawn and kept there, its page shown; the local directory holds only the
/// staging area and the gate state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_takes_the_captures() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::default());
    let config = format!(
        "storage: {{dir: \"{{data}}\"}}\ntargets: [{{name: demo, pprof_url: \"{}\", alert_labels: {{job: demo}}}}]\n\
         rules: [{{name: mem, alert_labels: {{alertname: HighMemory}}, capture: [heap, goroutine_text]}}]\n",
        demo.url()
    );
    let running = Running::start_with_store(&config, data.path(), store.clone()).await;
    let (status, _) =
        running.post_alerts(&payload(&[(json!({"alertname": "HighMemory", "job": "demo"}), "m1")])).await;
    assert_eq!(status, 200);
    let decision = running.wait_outcome("captured", Duration::from_secs(20)).await;
    assert_eq!(decision["captures"].as_array().unwrap().len(), 2, "{decision}");

    let listed = running.get_json("/api/v1/captures?kind=heap").await;
    let heap = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(listed[0]["summary"]["top"].as_array().is_some_and(|top| !top.is_empty()), "{listed}");
    let served = client().get(running.url(&format!("/api/v1/captures/{heap}/profile"))).send().await.unwrap();
    assert_eq!(served.status(), 200);
    let kept = store.captures.lock().unwrap()[&heap].1.clone().unwrap();
    assert_eq!(served.bytes().await.unwrap().to_vec(), kept);

    let graph =
        client().get(running.url(&format!("/api/v1/captures/{heap}/flamegraph.svg"))).send().await.unwrap();
    assert_eq!(graph.status(), 200);
    assert!(store.derived.lock().unwrap().contains_key(&(heap.clone(), "flamegraph.svg")));
    let page = running.get_text(&format!("/captures/{heap}")).await;
    assert!(page.contains(&format!("Download {heap}.pb.gz")), "{page}");

    let mut local = support::files_in(data.path());
    local.retain(|name| !name.starts_with('.'));
    assert!(local.is_empty(), "nothing kept locally but staging and state: {local:?}");
    assert!(support::files_in(&data.path().join(".tmp")).is_empty(), "nothing left staged");
    running.stop().await;
}
