//! The running config: swapped whole on reload, and followed by everything that runs on it.
//! Jobs keep the snapshot they were made with.

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;

/// The running config, shared: read it now, or wait for the next one.
#[derive(Clone)]
pub struct LiveConfig(Arc<watch::Sender<Arc<Config>>>);

impl LiveConfig {
    pub fn new(config: Config) -> LiveConfig {
        LiveConfig(Arc::new(watch::channel(Arc::new(config)).0))
    }

    pub fn current(&self) -> Arc<Config> {
        self.0.borrow().clone()
    }

    /// Each reload from now on; `borrow_and_update` gives the config to run with.
    pub fn changes(&self) -> watch::Receiver<Arc<Config>> {
        self.0.subscribe()
    }

    pub fn replace(&self, config: Config) {
        self.0.send_replace(Arc::new(config));
    }
}
