//! The release catalog of the local server, from `--upstream`: a registry, OCI layouts, or the
//! stand-in release generated on first start (`demo`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use factory_store::ContentStore;
use factory_upstream::catalog::DEFAULT_DISPLAY_REGISTRY;
use factory_upstream::layout::{LayoutSource, COSIGN_KEY_FILE};
use factory_upstream::registry::RegistrySource;
use factory_upstream::verify::Verification;
use factory_upstream::{
    CatalogConfig, CountingSource, OciSource, ReleaseCatalog, SourceCounts, Upstream, UpstreamConfig,
};

use crate::options::UpstreamChoice;
use crate::{LocalError, Options};

/// The catalog, or why the catalog routes are off (then they answer 503 with this reason).
pub(crate) type CatalogSetup = Result<Arc<ReleaseCatalog>, String>;

/// Builds the catalog `--upstream` asks for, generating the stand-in release first for `demo`.
/// Returns it (or the reason it is off), a one-line description for the banner, and the
/// counters of the requests made of the upstream.
pub(crate) async fn catalog(
    options: &Options,
    store: Arc<dyn ContentStore>,
) -> Result<(CatalogSetup, String, Arc<SourceCounts>), LocalError> {
    let (source, display_registry, default_key): (Arc<dyn OciSource>, String, Option<PathBuf>) =
        match &options.upstream {
            UpstreamChoice::Registry(url) => {
                let source = RegistrySource::new(url, &options.upstream_namespace)?;
                let host = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                (Arc::new(source), host.to_owned(), None)
            }
            UpstreamChoice::Layout(dir) => (
                Arc::new(LayoutSource::new(dir)),
                DEFAULT_DISPLAY_REGISTRY.to_owned(),
                None,
            ),
            UpstreamChoice::Demo => {
                let dir = options.stand_in_release_dir();
                ensure_stand_in_release(&dir).await?;
                let key = dir.join(COSIGN_KEY_FILE);
                (
                    Arc::new(LayoutSource::new(&dir)),
                    DEFAULT_DISPLAY_REGISTRY.to_owned(),
                    Some(key),
                )
            }
        };
    let description = source.describe();
    let counting = CountingSource::new(source);
    let counts = counting.counts();
    let source: Arc<dyn OciSource> = Arc::new(counting);

    let key_file = options.upstream_cosign_key.clone().or(default_key);
    let verification = match (key_file, options.upstream_no_verify) {
        (_, true) => {
            tracing::warn!(upstream = %description, "--upstream-no-verify: signatures of release images are NOT verified");
            Verification::Disabled
        }
        (Some(path), false) => read_key(&path)?,
        (None, false) => {
            let reason = format!(
                "the release catalog is off: no cosign public key to verify {description} with \
                 (start the server with --upstream-cosign-key FILE, or --upstream-no-verify; \
                 keyless verification is not supported)"
            );
            tracing::warn!("{reason}");
            return Ok((
                Err(reason),
                format!("{description} (catalog off: no cosign key)"),
                counts,
            ));
        }
    };
    let verified = if verification.is_disabled() {
        "signatures NOT verified"
    } else {
        "signatures verified"
    };
    let upstream = Arc::new(Upstream::new(source, UpstreamConfig::new(verification)));
    let config = CatalogConfig {
        min_version: options.min_talos_version.clone(),
        broken: options.broken_versions.clone(),
        display_registry,
        ..CatalogConfig::default()
    };
    let catalog = ReleaseCatalog::new(upstream, store, config);
    Ok((
        Ok(Arc::new(catalog)),
        format!("{description} ({verified})"),
        counts,
    ))
}

fn read_key(path: &Path) -> Result<Verification, LocalError> {
    let key_error = |reason: String| LocalError::CosignKey {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| key_error(e.to_string()))?;
    Verification::from_public_key_pem(&pem).map_err(|e| key_error(e.to_string()))
}

/// Generates the stand-in release into `dir` unless it is there. It is written next to `dir` and
/// renamed into place when complete, so an interrupted first start is redone, never half used.
async fn ensure_stand_in_release(dir: &Path) -> Result<(), LocalError> {
    if dir.join(COSIGN_KEY_FILE).is_file() {
        return Ok(());
    }
    let dir = dir.to_owned();
    let failed = |reason: String| LocalError::StandInRelease {
        path: dir.clone(),
        reason,
    };
    let partial = dir.with_extension("partial");
    tracing::info!(dir = %dir.display(), "generating the stand-in release (first start with --upstream demo)");
    let generated = {
        let partial = partial.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            if partial.exists() {
                std::fs::remove_dir_all(&partial)
                    .map_err(|e| format!("removing {}: {e}", partial.display()))?;
            }
            // Real boot parts when `scripts/fetch-boot-parts` left them, placeholders otherwise.
            let options = stand_in_release::GenerateOptions {
                out: partial.clone(),
                ..stand_in_release::GenerateOptions::default()
            };
            stand_in_release::generate(&options).map_err(|e| e.to_string())?;
            Ok(())
        })
        .await
        .map_err(|e| failed(format!("the generator stopped: {e}")))?
    };
    generated.map_err(failed)?;
    if dir.exists() {
        // A directory without `cosign.pub` is not a usable release: replace it.
        std::fs::remove_dir_all(&dir).map_err(|e| failed(format!("removing the incomplete release: {e}")))?;
    }
    std::fs::rename(&partial, &dir).map_err(|e| failed(format!("moving it into place: {e}")))?;
    tracing::info!(dir = %dir.display(), "stand-in release ready");
    Ok(())
}
