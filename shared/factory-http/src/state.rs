use std::sync::Arc;
use std::time::Duration;

use factory_pipeline::Pipeline;
use factory_registry::RegistryReader;
use factory_store::{ContentStore, Memo};
use factory_upstream::ReleaseCatalog;

use crate::{ApiError, HttpConfig, SchematicRepo};

/// What the handlers share: built once per process (per Lambda cold start), cloned per request.
#[derive(Debug, Clone)]
pub struct AppState {
    store: Arc<dyn ContentStore>,
    schematics: SchematicRepo,
    signing_key_pem: Option<Arc<str>>,
    catalog: CatalogSlot,
    config: Arc<HttpConfig>,
    pipeline: Option<Arc<Pipeline>>,
    image_wait_budget: Duration,
    registry: Option<Arc<RegistryReader>>,
    registry_wait_budget: Duration,
    /// The image route's resolved requests (see [`PlanMemo`]).
    plans: Arc<PlanMemo>,
}

/// The image route's successful resolutions, `(schematic ID, version as asked, path)` → cache key
/// and build spec: everything before the pipeline, which a warm download would otherwise redo
/// (profile, extensions, digests, spec JSON, its hash). What they derive from is immutable
/// (the schematic, the catalogs) or memoised for a while itself (the version list, the imager
/// tag's digest, 15 minutes); kept [`PLAN_TTL`] so that a change of those shows up as soon as it
/// would without this memo, give or take that. Failures are not kept.
pub(crate) type PlanMemo = Memo<(String, String, String), Arc<crate::routes::build::BuildRequest>>;

/// How long a resolved image request is reused.
pub(crate) const PLAN_TTL: Duration = Duration::from_secs(5 * 60);
/// Resolved image requests a process keeps.
const PLAN_ENTRIES: usize = 16 * 1024;

/// How long an image request waits for a build before answering `503` (well under API
/// Gateway's 29 s).
pub const DEFAULT_IMAGE_WAIT_BUDGET: Duration = Duration::from_secs(20);

/// The release catalog of the catalog routes, if this process serves them.
#[derive(Debug, Clone)]
enum CatalogSlot {
    /// Not given to this function: the routes answer 500 (a deployment mistake).
    Absent,
    /// Deliberately off, for this reason (the local server without a cosign key): 503.
    Disabled(Arc<str>),
    Ready(Arc<ReleaseCatalog>),
}

impl AppState {
    /// State without a signing key: enough for every route but `/oci/cosign/signing-key.pub`
    /// (which then answers 500), so a function that never serves the key never holds it.
    pub fn new(store: Arc<dyn ContentStore>, config: HttpConfig) -> Self {
        Self {
            schematics: SchematicRepo::new(Arc::clone(&store)),
            store,
            signing_key_pem: None,
            catalog: CatalogSlot::Absent,
            config: Arc::new(config),
            pipeline: None,
            image_wait_budget: DEFAULT_IMAGE_WAIT_BUDGET,
            registry: None,
            registry_wait_budget: DEFAULT_IMAGE_WAIT_BUDGET,
            plans: Arc::new(Memo::with_ttl(PLAN_ENTRIES, PLAN_TTL)),
        }
    }

    pub(crate) fn plans(&self) -> &PlanMemo {
        &self.plans
    }

    /// Adds the build-on-miss pipeline the image route uses.
    pub fn with_pipeline(mut self, pipeline: Arc<Pipeline>) -> Self {
        self.pipeline = Some(pipeline);
        self
    }

    /// How long an image request waits for a build (default [`DEFAULT_IMAGE_WAIT_BUDGET`]).
    pub fn with_image_wait_budget(mut self, budget: Duration) -> Self {
        self.image_wait_budget = budget;
        self
    }

    /// The pipeline, or the error the image route answers without one.
    pub fn pipeline(&self) -> Result<&Pipeline, ApiError> {
        self.pipeline
            .as_deref()
            .ok_or_else(|| ApiError::Internal("no build pipeline is configured for this function".into()))
    }

    pub fn image_wait_budget(&self) -> Duration {
        self.image_wait_budget
    }

    /// Adds the reader of published registry content (manifests, blobs, tag records) the `/v2`
    /// routes use; it checks tag signatures with the factory's public key.
    pub fn with_registry_reader(mut self, reader: Arc<RegistryReader>) -> Self {
        self.registry = Some(reader);
        self
    }

    /// The registry reader, or the error the `/v2` routes answer without one.
    pub fn registry_reader(&self) -> Result<&RegistryReader, ApiError> {
        self.registry
            .as_deref()
            .ok_or_else(|| ApiError::Internal("no registry reader is configured for this function".into()))
    }

    /// How long a manifest request for a cold tag waits for its build before `503` (default
    /// [`DEFAULT_IMAGE_WAIT_BUDGET`]; the local server waits longer, as pull clients do not
    /// retry a `503` on their own).
    pub fn with_registry_wait_budget(mut self, budget: Duration) -> Self {
        self.registry_wait_budget = budget;
        self
    }

    pub fn registry_wait_budget(&self) -> Duration {
        self.registry_wait_budget
    }

    /// Adds the public signing key (PKIX PEM) served at `/oci/cosign/signing-key.pub`.
    pub fn with_signing_key_pem(mut self, public_key_pem: impl Into<String>) -> Self {
        self.signing_key_pem = Some(Arc::from(public_key_pem.into()));
        self
    }

    /// Adds the release catalog served by `/versions` and `/version/...`.
    pub fn with_catalog(mut self, catalog: Arc<ReleaseCatalog>) -> Self {
        self.catalog = CatalogSlot::Ready(catalog);
        self
    }

    /// Serves the catalog routes as `503` with `reason` (why there is no catalog and how to get
    /// one), so that the rest of the API works without an upstream.
    pub fn with_catalog_disabled(mut self, reason: impl Into<String>) -> Self {
        self.catalog = CatalogSlot::Disabled(Arc::from(reason.into()));
        self
    }

    /// The release catalog, or the error the catalog routes answer without one.
    pub fn catalog(&self) -> Result<&ReleaseCatalog, ApiError> {
        match &self.catalog {
            CatalogSlot::Ready(catalog) => Ok(catalog),
            CatalogSlot::Disabled(reason) => Err(ApiError::CatalogDisabled(reason.to_string())),
            CatalogSlot::Absent => Err(ApiError::Internal(
                "no release catalog is configured for this function".into(),
            )),
        }
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
