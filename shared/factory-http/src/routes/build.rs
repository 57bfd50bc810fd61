//! From a request to a pipeline build, shared by the image route and the registry: the asset path
//! becomes a profile (parsed, enhanced from the schematic, its official extensions resolved in
//! the version's catalog), is checked against what this factory builds, and its upstream inputs
//! are resolved to exact digests, which give the cache key and the build spec.
//!
//! Split in two because the image route validates `?filename=` between them (a `501` for an
//! unbuilt profile comes before a `400` for a bad download name, and neither pulls anything).

use factory_assets::{
    base_installer_repository, imager_reference, is_profile_built, resolve_official_extensions,
    unbuilt_reason, BuildInputs, ResolvedExtension,
};
use factory_core::profile::{
    enhance, parse_path, resolve_overlay, EnhanceError, OutputKind, Profile, ASSET_FORMAT_VERSION,
};
use factory_core::schematic::Schematic;
use factory_core::version::TalosVersion;

use crate::{ApiError, AppState};

/// A profile this factory builds, with its resolved official extensions.
pub(crate) struct Planned {
    pub profile: Profile,
    extensions: Vec<ResolvedExtension>,
}

/// What to ask the pipeline for.
#[derive(Debug)]
pub(crate) struct BuildRequest {
    pub cache_key: String,
    pub spec: serde_json::Value,
}

/// `path` (without a checksum suffix) → a profile: `400` for a bad path, a schematic the version
/// cannot take or an unknown extension; `501` for a profile this factory does not build.
pub(crate) async fn plan(
    state: &AppState,
    schematic: &Schematic,
    version: &TalosVersion,
    path: &str,
) -> Result<Planned, ApiError> {
    let catalog = state.catalog()?;
    let parsed = parse_path(path)
        .map_err(|e| ApiError::BadRequest(format!("error parsing profile from path: {e}")))?;
    let enhance_error =
        |e: EnhanceError| ApiError::BadRequest(format!("error enhancing profile from schematic: {e}"));
    let profile = enhance(parsed, schematic, version).map_err(enhance_error)?;
    // Checked before anything is enqueued, so that the user gets the 400 at once (the catalog is
    // cached per version in the store).
    let extensions = if profile.inputs.system_extensions.is_empty() {
        Vec::new()
    } else {
        let entries = catalog.extensions(version).await?;
        resolve_official_extensions(
            &profile.inputs.system_extensions,
            &entries,
            version,
            &catalog.config().display_registry,
        )
        .map_err(enhance_error)?
    };
    if !is_profile_built(&profile) {
        return Err(ApiError::NotImplemented(match unbuilt_reason(&profile) {
            Some(reason) => format!("{path}: {reason}"),
            None => format!("{path} is not built by this factory yet"),
        }));
    }
    Ok(Planned { profile, extensions })
}

/// The exact digests of the profile's upstream images (imager; base installer for installers;
/// the overlay image for installers with an overlay, found by name in the version's overlays
/// catalog: `400` when it has none of that name), hence its cache key and spec.
pub(crate) async fn resolve(
    state: &AppState,
    schematic: &Schematic,
    planned: &Planned,
) -> Result<BuildRequest, ApiError> {
    let profile = &planned.profile;
    let upstream = state.catalog()?.upstream();
    let components = &upstream.config().components;
    let imager = upstream
        .resolve(&components.imager, &imager_reference(profile))
        .await?;
    let mut inputs = BuildInputs::new(
        profile,
        schematic,
        imager.digest,
        &planned.extensions,
        &state.config().external_url,
    );
    if let Some(repository) = base_installer_repository(profile, components) {
        let base = upstream.resolve(repository, &imager_reference(profile)).await?;
        inputs = inputs.with_base_installer(base.digest);
    }
    if let Some(overlay) = &profile.inputs.overlay {
        // `enhance` only checks that the version takes overlays; the name is checked here, in the
        // Go wording (`official overlay "x" is not available for Talos version vX`).
        let entries = state.catalog()?.overlays(&profile.version).await?;
        let entry = resolve_overlay(&overlay.name, &entries, &profile.version)
            .map_err(|e| ApiError::BadRequest(format!("error enhancing profile from schematic: {e}")))?;
        // Only the installer is made of the overlay image (the other built kinds with an
        // overlay, initramfs, do not depend on it): their cache keys stay as they were.
        if profile.output.kind == OutputKind::Installer {
            inputs = inputs.with_overlay(&entry.image, entry.digest.clone());
        }
    }
    Ok(BuildRequest {
        cache_key: profile.cache_key(inputs.digests(), ASSET_FORMAT_VERSION),
        spec: inputs.spec(profile),
    })
}
