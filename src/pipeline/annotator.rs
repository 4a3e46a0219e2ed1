//! Grafana annotations of kept captures, made after the captures are done (a slow Grafana
//! never holds up a capture) and counted; rebuilt with the config on reload.

use std::sync::{Arc, RwLock};

use tokio_util::sync::CancellationToken;

use crate::annotate::{Annotation, GrafanaClient};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::{AnnotationOutcome, CaptureId, CaptureMeta};

#[derive(Clone)]
pub struct Annotator {
    /// `None` without a `grafana` section.
    grafana: Arc<RwLock<Option<GrafanaClient>>>,
    metrics: Arc<Metrics>,
    /// Stops annotations still running when the shutdown grace has passed.
    abort: CancellationToken,
}

impl Annotator {
    pub fn new(config: &Config, metrics: Arc<Metrics>, abort: CancellationToken) -> Annotator {
        Annotator { grafana: Arc::new(RwLock::new(client(config))), metrics, abort }
    }

    /// Follows a new config.
    pub fn reconfigure(&self, config: &Config) {
        *self.grafana.write().unwrap() = client(config);
    }

    /// One annotation per kept capture (not of snapshots kept to compare with), saying
    /// `why` the capture was made.
    pub async fn captures(&self, captures: &[CaptureMeta], why: &[String]) -> Vec<AnnotationOutcome> {
        let Some(grafana) = self.grafana.read().unwrap().clone() else { return Vec::new() };
        let mut outcomes = Vec::new();
        for capture in captures.iter().filter(|capture| capture.is_ok() && !capture.is_before_window()) {
            let annotation = grafana.annotation(capture, why);
            outcomes.push(self.send(&grafana, &annotation, &capture.id).await);
        }
        outcomes
    }

    /// One annotation for a process's end: what held its memory, and links to its last
    /// profiles.
    pub async fn exit(&self, captures: &[CaptureMeta], why: &str) -> Vec<AnnotationOutcome> {
        let Some(grafana) = self.grafana.read().unwrap().clone() else { return Vec::new() };
        let kept: Vec<&CaptureMeta> = captures.iter().filter(|capture| capture.is_ok()).collect();
        let Some(annotation) = grafana.exit_annotation(&kept, why) else { return Vec::new() };
        vec![self.send(&grafana, &annotation, &kept[0].id).await]
    }

    async fn send(
        &self,
        grafana: &GrafanaClient,
        annotation: &Annotation,
        capture: &CaptureId,
    ) -> AnnotationOutcome {
        match grafana.annotate(annotation, &self.abort).await {
            Ok(id) => {
                self.metrics.annotation("ok");
                tracing::info!(id = %capture, annotation = id, "Grafana annotation added.");
                AnnotationOutcome { capture: capture.clone(), id: Some(id), error: None }
            }
            Err(error) => {
                self.metrics.annotation(error.result());
                tracing::warn!(id = %capture, error = %error, "Grafana annotation failed.");
                AnnotationOutcome { capture: capture.clone(), id: None, error: Some(error.to_string()) }
            }
        }
    }
}

fn client(config: &Config) -> Option<GrafanaClient> {
    let ui_url = config.pyroscope.as_ref().and_then(|pyroscope| pyroscope.ui_url.clone());
    let grafana = config.grafana.as_ref()?;
    Some(GrafanaClient::new(grafana, &config.external_url).with_profile_views(ui_url))
}
