use std::sync::Arc;

use factory_store::ContentStore;

use crate::{HttpConfig, SchematicRepo};

/// What the handlers share: built once per process (per Lambda cold start), cloned per request.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<dyn ContentStore>,
    schematics: SchematicRepo,
    signing_key_pem: Option<Arc<str>>,
    config: Arc<HttpConfig>,
}

impl AppState {
    /// State without a signing key: enough for every route but `/oci/cosign/signing-key.pub`
    /// (which then answers 500), so a function that never serves the key never holds it.
    pub fn new(store: Arc<dyn ContentStore>, config: HttpConfig) -> Self {
        Self {
            schematics: SchematicRepo::new(Arc::clone(&store)),
            store,
            signing_key_pem: None,
            config: Arc::new(config),
        }
    }

    /// Adds the public signing key (PKIX PEM) served at `/oci/cosign/signing-key.pub`.
    pub fn with_signing_key_pem(mut self, public_key_pem: impl Into<String>) -> Self {
        self.signing_key_pem = Some(Arc::from(public_key_pem.into()));
        self
    }

    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    pub fn schematics(&self) -> &SchematicRepo {
        &self.schematics
    }

    pub fn signing_key_pem(&self) -> Option<&str> {
        self.signing_key_pem.as_deref()
    }

    pub fn config(&self) -> &HttpConfig {
        &self.config
    }
}
