//! The release catalog: which Talos versions exist upstream (spec §10.1) and, per version, the
//! official extensions and overlays (spec §10.2, §10.3), cached in the content store so that
//! every Lambda and the local server share one copy.
//!
//! Cache objects (JSON; each names the upstream it came from, so a store reused with another
//! upstream never serves the other one's answers):
//! * `cache/versions.json`: the imager's tags and when they were fetched; fresh for
//!   [`CatalogConfig::versions_ttl`]. The raw tags are kept, not the filtered list, so that
//!   processes configured with different broken versions can share the entry. When the upstream
//!   fails, a stale entry is served (with a warning) rather than failing the request.
//! * `cache/catalog/<v>/extensions.json`, `cache/catalog/<v>/overlays.json`: the parsed
//!   catalogs of a release, which never change once published, so they have no TTL.
//!
//! Only successes are written: a failed fetch, a refused signature or a malformed catalog leaves
//! the cache as it was, and the next request tries again.
//!
//! In front of the store cache, each process keeps what it read in memory ([`Memo`]): the
//! filtered version list until the same moment the store entry goes stale (`fetched_at` +
//! TTL: a new release shows up no later than it did without the memo), and each version's
//! catalogs for good (a published release's catalog does not change). A warm request then asks
//! the store nothing for them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use factory_core::arch::Arch;
use factory_core::catalog::{parse_extensions, parse_overlays, ExtensionEntry, OverlayEntry};
use factory_core::version::{filter_versions, TalosVersion, DEFAULT_MIN_VERSION};
use factory_store::{ContentStore, Memo, PutCondition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Upstream, UpstreamError};

/// Where the version list is cached.
pub const VERSIONS_CACHE_KEY: &str = "cache/versions.json";

/// The Go factory's `artifacts.talosVersionRecheckInterval` default.
pub const DEFAULT_VERSIONS_TTL: Duration = Duration::from_secs(15 * 60);

/// The registry shown in the `ref` of catalog entries by default (the Go factory's
/// `artifacts.core.registry`).
pub const DEFAULT_DISPLAY_REGISTRY: &str = "ghcr.io";

/// The catalog files of an extensions release image.
const IMAGE_DIGESTS: &str = "image-digests";
const DESCRIPTIONS: &str = "descriptions.yaml";
/// The catalog file of an overlays release image.
const OVERLAYS: &str = "overlays.yaml";

/// Where the catalog of `kind` (`extensions`, `overlays`) of a version is cached.
pub fn catalog_cache_key(version: &TalosVersion, kind: &str) -> String {
    format!("cache/catalog/{version}/{kind}.json")
}

/// What the catalog offers and how long it trusts its version list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogConfig {
    /// Older versions are not offered (`build.minTalosVersion`, default 1.2.0).
    pub min_version: TalosVersion,
    /// Versions hidden from the list and refused by every route (`build.brokenTalosVersions`),
    /// in configuration order (as `/versions?broken=true` shows them).
    pub broken: Vec<TalosVersion>,
    /// How long a fetched version list is used before the upstream is asked again.
    pub versions_ttl: Duration,
    /// The registry shown in `ref` (`ghcr.io`): the configured upstream registry, not where a
    /// mirror or layout actually serves the images from.
    pub display_registry: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            min_version: DEFAULT_MIN_VERSION,
            broken: Vec::new(),
            versions_ttl: DEFAULT_VERSIONS_TTL,
            display_registry: DEFAULT_DISPLAY_REGISTRY.to_owned(),
        }
    }
}

/// Why a catalog question got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The version is not offered (unknown upstream, too old, broken, or a dropped pre-release).
    /// Printed without `v`, as the Go factory does: `version 1.99.0 is not available`.
    #[error("version {} is not available", .0.semver())]
    NotAvailable(TalosVersion),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The cached version list.
#[derive(Debug, Serialize, Deserialize)]
struct CachedTags {
    /// [`Upstream::describe`] of the source the tags came from.
    source: String,
    /// Seconds since the Unix epoch (shared by processes on different hosts, unlike `Instant`).
    fetched_at: u64,
    tags: Vec<String>,
}

/// A cached catalog of one version.
#[derive(Debug, Serialize, Deserialize)]
struct CachedCatalog<T> {
    source: String,
    entries: Vec<T>,
}

/// Versions, extensions and overlays of the upstream release, cached in the content store.
#[derive(Debug)]
pub struct ReleaseCatalog {
    upstream: Arc<Upstream>,
    store: Arc<dyn ContentStore>,
    config: CatalogConfig,
    /// The offered versions, until the list they were filtered from goes stale (one key: `()`).
    versions: Memo<(), Arc<Vec<TalosVersion>>>,
    /// Catalogs by the version's tag (as offered): immutable once published.
    extensions: Memo<String, Arc<Vec<ExtensionEntry>>>,
    overlays: Memo<String, Arc<Vec<OverlayEntry>>>,
}

/// Versions whose catalogs a process keeps in memory (a few dozen are offered at a time).
const CATALOG_MEMO_VERSIONS: usize = 256;

impl ReleaseCatalog {
    pub fn new(upstream: Arc<Upstream>, store: Arc<dyn ContentStore>, config: CatalogConfig) -> Self {
        Self {
            upstream,
            store,
            config,
            versions: Memo::new(1),
            extensions: Memo::new(CATALOG_MEMO_VERSIONS),
            overlays: Memo::new(CATALOG_MEMO_VERSIONS),
        }
    }

    pub fn config(&self) -> &CatalogConfig {
        &self.config
    }

    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The configured broken versions, in configuration order.
    pub fn broken(&self) -> &[TalosVersion] {
        &self.config.broken
    }

    /// The versions offered, ascending (spec §10.1).
    pub async fn versions(&self) -> Result<Vec<TalosVersion>, UpstreamError> {
        Ok(self.offered().await?.as_ref().clone())
    }

    /// Whether `version` is offered.
    pub async fn is_available(&self, version: &TalosVersion) -> Result<bool, UpstreamError> {
        Ok(self.offered().await?.contains(version))
    }

    /// The offered versions, from memory while the list they came from is fresh.
    async fn offered(&self) -> Result<Arc<Vec<TalosVersion>>, UpstreamError> {
        if let Some(versions) = self.versions.get(&()) {
            return Ok(versions);
        }
        let (tags, fresh_until) = self.version_tags().await?;
        let versions = Arc::new(filter_versions(
            &tags,
            &self.config.min_version,
            &self.config.broken,
        ));
        if let Some(until) = fresh_until {
            self.versions.insert_until((), Arc::clone(&versions), Some(until));
        }
        Ok(versions)
    }

    /// The official extensions of an offered version, in catalog order.
    pub async fn extensions(&self, version: &TalosVersion) -> Result<Vec<ExtensionEntry>, CatalogError> {
        let version = &self.require_available(version).await?;
        let tag = version.to_string();
        if let Some(entries) = self.extensions.get(&tag) {
            return Ok(entries.as_ref().clone());
        }
        let key = catalog_cache_key(version, "extensions");
        if let Some(entries) = self.read_catalog(&key).await {
            self.extensions.insert(tag, Arc::new(entries.clone()));
            return Ok(entries);
        }
        let repository = self.upstream.config().components.extensions.clone();
        let files = self
            .release_files(&repository, version, &[IMAGE_DIGESTS, DESCRIPTIONS])
            .await?;
        let invalid = |reason: String| UpstreamError::Invalid {
            image: format!("{repository}:{version}"),
            reason,
        };
        let digests = files
            .get(IMAGE_DIGESTS)
            .ok_or_else(|| invalid(format!("{IMAGE_DIGESTS} is missing")))?;
        let digests = utf8(IMAGE_DIGESTS, digests).map_err(invalid)?;
        // `descriptions.yaml` came with later releases; without it authors and descriptions are empty.
        let descriptions = match files.get(DESCRIPTIONS) {
            Some(bytes) => Some(utf8(DESCRIPTIONS, bytes).map_err(invalid)?),
            None => None,
        };
        let entries = parse_extensions(digests, descriptions).map_err(|e| invalid(e.to_string()))?;
        self.write_catalog(&key, &entries).await;
        self.extensions.insert(tag, Arc::new(entries.clone()));
        Ok(entries)
    }

    /// The official overlays of an offered version, in catalog order; empty below 1.7 (without
    /// asking the upstream, and whether or not the version is offered, as the Go factory does).
    pub async fn overlays(&self, version: &TalosVersion) -> Result<Vec<OverlayEntry>, CatalogError> {
        if !version.supports_overlays() {
            return Ok(Vec::new());
        }
        let version = &self.require_available(version).await?;
        let tag = version.to_string();
        if let Some(entries) = self.overlays.get(&tag) {
            return Ok(entries.as_ref().clone());
        }
        let key = catalog_cache_key(version, "overlays");
        if let Some(entries) = self.read_catalog(&key).await {
            self.overlays.insert(tag, Arc::new(entries.clone()));
            return Ok(entries);
        }
        let repository = self.upstream.config().components.overlays.clone();
        let files = self.release_files(&repository, version, &[OVERLAYS]).await?;
        let invalid = |reason: String| UpstreamError::Invalid {
            image: format!("{repository}:{version}"),
            reason,
        };
        let yaml = files
            .get(OVERLAYS)
            .ok_or_else(|| invalid(format!("{OVERLAYS} is missing")))?;
        let entries =
            parse_overlays(utf8(OVERLAYS, yaml).map_err(invalid)?).map_err(|e| invalid(e.to_string()))?;
        self.write_catalog(&key, &entries).await;
        self.overlays.insert(tag, Arc::new(entries.clone()));
        Ok(entries)
    }

    /// The offered version equal to `version`, as listed: equality ignores build metadata
    /// (`1.12.1+x`), and the tag and cache key must be those of the release itself.
    async fn require_available(&self, version: &TalosVersion) -> Result<TalosVersion, CatalogError> {
        self.offered()
            .await?
            .iter()
            .find(|offered| *offered == version)
            .cloned()
            .ok_or_else(|| CatalogError::NotAvailable(version.clone()))
    }

    /// Files of the verified release image `<repository>:v<version>`, read from its linux/amd64
    /// image (catalog images carry the same files for every platform).
    async fn release_files(
        &self,
        repository: &str,
        version: &TalosVersion,
        paths: &[&str],
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, UpstreamError> {
        let image = self.upstream.resolve(repository, &version.to_string()).await?;
        self.upstream.read_files(&image, Arch::Amd64, paths).await
    }

    /// The imager's tags: from the cache while fresh, else from the upstream (then cached), else
    /// from a stale cache entry when the upstream fails.
    /// Also says until when the list is fresh (`None` for a stale or empty one, which the caller
    /// must not keep: the next request tries the upstream again).
    async fn version_tags(&self) -> Result<(Vec<String>, Option<Instant>), UpstreamError> {
        let source = self.upstream.describe();
        let cached = self
            .read_json::<CachedTags>(VERSIONS_CACHE_KEY)
            .await
            .filter(|c| c.source == source);
        let now = unix_now();
        if let Some(c) = &cached {
            // A timestamp ahead of this host's clock (skew between hosts) counts as just fetched.
            let age = now.saturating_sub(c.fetched_at);
            if age < self.config.versions_ttl.as_secs() {
                let left = self.config.versions_ttl.saturating_sub(Duration::from_secs(age));
                return Ok((c.tags.clone(), Instant::now().checked_add(left)));
            }
        }
        let imager = &self.upstream.config().components.imager;
        match self.upstream.tags(imager).await {
            // An empty list is not worth caching: it would hide every version for a whole TTL.
            Ok(tags) if tags.is_empty() => match cached {
                Some(stale) => {
                    tracing::warn!(%source, repository = %imager, "the upstream lists no tags; serving the previous version list");
                    Ok((stale.tags, None))
                }
                None => Ok((tags, None)),
            },
            Ok(tags) => {
                let entry = CachedTags {
                    source,
                    fetched_at: now,
                    tags,
                };
                self.write_json(VERSIONS_CACHE_KEY, &entry).await;
                Ok((entry.tags, Instant::now().checked_add(self.config.versions_ttl)))
            }
            Err(error) => match cached {
                Some(stale) => {
                    tracing::warn!(%error, age_secs = now.saturating_sub(stale.fetched_at), "listing Talos versions failed; serving the stale cached list");
                    Ok((stale.tags, None))
                }
                None => Err(error),
            },
        }
    }

    async fn read_catalog<T: DeserializeOwned>(&self, key: &str) -> Option<Vec<T>> {
        let source = self.upstream.describe();
        self.read_json::<CachedCatalog<T>>(key)
            .await
            .filter(|c| c.source == source)
            .map(|c| c.entries)
    }

    async fn write_catalog<T: Serialize>(&self, key: &str, entries: &[T]) {
        #[derive(Serialize)]
        struct Borrowed<'a, T> {
            source: String,
            entries: &'a [T],
        }
        let entry = Borrowed {
            source: self.upstream.describe(),
            entries,
        };
        self.write_json(key, &entry).await;
    }

    /// A cache object, or `None` when absent, unreadable or not what we wrote: the cache is an
    /// optimisation, so its failures are logged and the answer is fetched upstream instead.
    async fn read_json<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        match self.store.get(key).await {
            Ok(Some((_, bytes))) => match serde_json::from_slice(&bytes) {
                Ok(value) => Some(value),
                Err(error) => {
                    tracing::warn!(key, %error, "ignoring a malformed cache object");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(key, %error, "reading the cache failed; asking the upstream");
                None
            }
        }
    }

    /// Writes a cache object; a failure costs only a later upstream round trip, so it is logged,
    /// not returned.
    async fn write_json<T: Serialize>(&self, key: &str, value: &T) {
        let bytes = match serde_json::to_vec(value) {
            Ok(bytes) => Bytes::from(bytes),
            Err(error) => {
                tracing::warn!(key, %error, "encoding a cache object failed");
                return;
            }
        };
        if let Err(error) = self
            .store
            .put(key, bytes, Some("application/json"), PutCondition::Overwrite)
            .await
        {
            tracing::warn!(key, %error, "writing the cache failed");
        }
    }
}

fn utf8<'a>(file: &str, bytes: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|e| format!("{file} is not UTF-8: {e}"))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use factory_store::fs::FsStore;

    use super::*;
    use crate::verify::Verification;
    use crate::{BlobStream, OciSource, RawManifest, UpstreamConfig};

    /// A source whose tag list can be switched to failing; counts what it is asked.
    #[derive(Debug, Default)]
    struct FakeSource {
        tags: Mutex<Option<Vec<String>>>,
        name: String,
        tag_calls: AtomicUsize,
        manifest_calls: AtomicUsize,
    }

    impl FakeSource {
        fn new(name: &str, tags: &[&str]) -> Arc<Self> {
            Arc::new(Self {
                tags: Mutex::new(Some(tags.iter().map(|t| (*t).to_owned()).collect())),
                name: name.to_owned(),
                ..Self::default()
            })
        }

        fn go_down(&self) {
            *self.tags.lock().expect("lock") = None;
        }

        fn unavailable(&self) -> UpstreamError {
            UpstreamError::Unavailable {
                source_name: self.name.clone(),
                message: "connection refused".into(),
            }
        }
    }

    #[async_trait]
    impl OciSource for FakeSource {
        async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
            assert_eq!(repository, "siderolabs/imager");
            self.tag_calls.fetch_add(1, Ordering::SeqCst);
            let tags = self.tags.lock().expect("lock").clone();
            tags.ok_or_else(|| self.unavailable())
        }

        async fn manifest(&self, repository: &str, reference: &str) -> Result<RawManifest, UpstreamError> {
            self.manifest_calls.fetch_add(1, Ordering::SeqCst);
            Err(UpstreamError::NotFound(format!("{repository}:{reference}")))
        }

        async fn blob(&self, repository: &str, digest: &str) -> Result<BlobStream, UpstreamError> {
            Err(UpstreamError::NotFound(format!("{repository}@{digest}")))
        }

        fn describe(&self) -> String {
            self.name.clone()
        }
    }

    const TAGS: &[&str] = &[
        "v1.1.2",
        "v1.6.4",
        "v1.7.6",
        "v1.12.1",
        "v1.13.0-alpha.1",
        "v1.12.0-alpha.0-12-gabc",
    ];

    fn catalog(
        source: &Arc<FakeSource>,
        dir: &std::path::Path,
        config: CatalogConfig,
    ) -> (ReleaseCatalog, FsStore) {
        let store = FsStore::new(dir).expect("store");
        let source: Arc<dyn OciSource> = Arc::clone(source) as Arc<dyn OciSource>;
        let upstream = Arc::new(Upstream::new(source, UpstreamConfig::new(Verification::Disabled)));
        (
            ReleaseCatalog::new(upstream, Arc::new(store.clone()), config),
            store,
        )
    }

    fn shown(versions: &[TalosVersion]) -> Vec<String> {
        versions.iter().map(ToString::to_string).collect()
    }

    async fn cached_tags(store: &FsStore) -> Option<serde_json::Value> {
        store
            .get(VERSIONS_CACHE_KEY)
            .await
            .expect("get")
            .map(|(_, b)| serde_json::from_slice(&b).expect("json"))
    }

    #[tokio::test]
    async fn versions_are_filtered_and_cached_for_the_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = FakeSource::new("registry a", TAGS);
        let (catalog, store) = catalog(&source, dir.path(), CatalogConfig::default());
        let expected = ["v1.6.4", "v1.7.6", "v1.12.1", "v1.13.0-alpha.1"];
        assert_eq!(shown(&catalog.versions().await.expect("versions")), expected);
        assert_eq!(shown(&catalog.versions().await.expect("versions")), expected);
        assert_eq!(
            source.tag_calls.load(Ordering::SeqCst),
            1,
            "the second answer came from the cache"
        );
        let entry = cached_tags(&store).await.expect("cached");
        assert_eq!(entry["source"], "registry a");
        assert_eq!(
            entry["tags"].as_array().map(Vec::len),
            Some(TAGS.len()),
            "raw tags are cached"
        );

        // Another process with other broken versions shares the entry.
        let broken = CatalogConfig {
            broken: vec![TalosVersion::new(1, 7, 6)],
            ..CatalogConfig::default()
        };
        let (other, _) = self::catalog(&source, dir.path(), broken);
        assert_eq!(
            shown(&other.versions().await.expect("versions")),
            ["v1.6.4", "v1.12.1", "v1.13.0-alpha.1"]
        );
        assert_eq!(source.tag_calls.load(Ordering::SeqCst), 1);
        assert!(!other
            .is_available(&TalosVersion::new(1, 7, 6))
            .await
            .expect("available"));
        assert!(other
            .is_available(&TalosVersion::new(1, 12, 1))
            .await
            .expect("available"));

        // A cache written for another upstream is not used.
        let elsewhere = FakeSource::new("registry b", &["v1.9.0"]);
        let (b, _) = self::catalog(&elsewhere, dir.path(), CatalogConfig::default());
        assert_eq!(shown(&b.versions().await.expect("versions")), ["v1.9.0"]);
    }

    #[tokio::test]
    async fn a_stale_list_is_served_when_the_upstream_fails_and_failures_are_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = FakeSource::new("registry a", TAGS);
        let expired = CatalogConfig {
            versions_ttl: Duration::ZERO,
            ..CatalogConfig::default()
        };
        let (catalog, store) = catalog(&source, dir.path(), expired);
        let first = catalog.versions().await.expect("versions");
        let entry = cached_tags(&store).await.expect("cached");
        source.go_down();
        assert_eq!(catalog.versions().await.expect("stale"), first);
        assert_eq!(
            source.tag_calls.load(Ordering::SeqCst),
            2,
            "the upstream was asked again"
        );
        assert_eq!(
            cached_tags(&store).await,
            Some(entry),
            "the stale entry stays as it was"
        );

        let empty = tempfile::tempdir().expect("tempdir");
        let (cold, cold_store) = self::catalog(&source, empty.path(), CatalogConfig::default());
        let error = cold.versions().await.expect_err("no cache, no upstream");
        assert!(matches!(error, UpstreamError::Unavailable { .. }), "{error}");
        assert_eq!(cached_tags(&cold_store).await, None, "nothing cached");
    }

    #[tokio::test]
    async fn catalogs_check_availability_and_cache_only_successes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = FakeSource::new("registry a", TAGS);
        let (catalog, store) = catalog(&source, dir.path(), CatalogConfig::default());

        // Overlays below 1.7: empty at once, nothing asked (not even the version list).
        assert!(catalog
            .overlays(&TalosVersion::new(1, 6, 4))
            .await
            .expect("empty")
            .is_empty());
        assert!(catalog
            .overlays(&TalosVersion::new(1, 5, 0))
            .await
            .expect("empty")
            .is_empty());
        assert_eq!(source.tag_calls.load(Ordering::SeqCst), 0);

        // Unknown, too old and dropped versions are not available, without reading any image.
        for version in ["1.99.0", "1.1.2", "1.12.0-alpha.0-12-gabc"] {
            let version = TalosVersion::parse(version).expect("version");
            let error = catalog.extensions(&version).await.expect_err("not available");
            assert_eq!(
                error.to_string(),
                format!("version {} is not available", version.semver())
            );
            if version.supports_overlays() {
                assert!(matches!(
                    catalog.overlays(&version).await,
                    Err(CatalogError::NotAvailable(_))
                ));
            }
        }
        assert_eq!(source.manifest_calls.load(Ordering::SeqCst), 0);

        // An upstream failure is returned and not cached.
        let v = TalosVersion::new(1, 12, 1);
        let error = catalog.extensions(&v).await.expect_err("no image");
        assert!(
            matches!(error, CatalogError::Upstream(UpstreamError::NotFound(_))),
            "{error}"
        );
        let key = catalog_cache_key(&v, "extensions");
        assert_eq!(key, "cache/catalog/v1.12.1/extensions.json");
        assert!(store.get(&key).await.expect("get").is_none());

        // A cached catalog is served without touching the upstream image.
        let entries = vec![ExtensionEntry {
            name: "siderolabs/gvisor".into(),
            reference_tag: "20231214.0-v1.12.1".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            author: "Sidero Labs".into(),
            description: "gVisor".into(),
        }];
        catalog.write_catalog(&key, &entries).await;
        let calls = source.manifest_calls.load(Ordering::SeqCst);
        assert_eq!(catalog.extensions(&v).await.expect("cached"), entries);
        assert_eq!(source.manifest_calls.load(Ordering::SeqCst), calls);
        // Build metadata does not make another version: the release's own entry is used.
        let with_build = TalosVersion::parse("1.12.1+build.7").expect("version");
        assert_eq!(catalog.extensions(&with_build).await.expect("cached"), entries);
        assert_eq!(source.manifest_calls.load(Ordering::SeqCst), calls);
    }
}
