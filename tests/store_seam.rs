//! A second backend behind the store's `Backend` seam, kept in memory here: it only moves
//! bytes, and the service keeps its captures there with nothing else changed; the API and
//! the web page serve them.

mod support;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alertprof::store::{Backend, Listed, ProfileStore, StagedFile, StoreError, StoredFile};
use serde_json::json;
use support::{Demo, Running, client, payload};

/// Objects by key, in memory.
#[derive(Default, Clone)]
struct MemoryBackend {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl Backend for MemoryBackend {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn put_file(&self, key: &str, body: StagedFile) -> Result<(), StoreError> {
        let bytes = std::fs::read(body.path()).map_err(StoreError::io("read", body.path()))?;
        self.objects.lock().unwrap().insert(key.to_string(), bytes);
        Ok(())
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.objects.lock().unwrap().insert(key.to_string(), bytes.to_vec());
        Ok(())
    }

    fn open(&self, key: &str) -> Result<Option<StoredFile>, StoreError> {
        let bytes = self.objects.lock().unwrap().get(key).cloned();
        Ok(bytes.map(|bytes| StoredFile {
            len: bytes.len() as u64,
            reader: Box::new(Cursor::new(bytes)),
            name: key.into(),
        }))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }

    fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .map(|(key, bytes)| Listed { key: key.clone(), size: bytes.len() as u64, version: None })
            .collect())
    }
}

/// An alert's heap profile goes to the other store: listed, served byte for byte, its
/// flame graph drawn and kept there, its page shown; the local directory holds only the
/// staging area and the gate state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_store_takes_the_captures() {
    let demo = Demo::start();
    let data = tempfile::tempdir().unwrap();
    let backend = MemoryBackend::default();
    let store = Arc::new(ProfileStore::with_backend(Box::new(backend.clone()), None, None));
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
    let kept = backend.objects.lock().unwrap()[&format!("demo/{heap}.pb.gz")].clone();
    assert_eq!(served.bytes().await.unwrap().to_vec(), kept);

    let graph =
        client().get(running.url(&format!("/api/v1/captures/{heap}/flamegraph.svg"))).send().await.unwrap();
    assert_eq!(graph.status(), 200);
    assert!(backend.objects.lock().unwrap().contains_key(&format!("demo/{heap}.flamegraph.svg")));
    let page = running.get_text(&format!("/captures/{heap}")).await;
    assert!(page.contains(&format!("Download {heap}.pb.gz")), "{page}");

    let mut local = support::files_in(data.path());
    local.retain(|name| !name.starts_with('.'));
    assert!(local.is_empty(), "nothing kept locally but staging and state: {local:?}");
    assert!(support::files_in(&data.path().join(".tmp")).is_empty(), "nothing left staged");
    running.stop().await;
}
