//! What the image and PXE routes look up first, in the Go handlers' order and wording: the
//! schematic (`404`), then the version (`v` optional; malformed → `400`, not offered → `404`).

use factory_core::schematic::{Schematic, SchematicId};
use factory_core::version::TalosVersion;

use crate::{ApiError, AppState};

/// The stored schematic and the offered version named by a request path.
pub(crate) struct Target {
    pub schematic: Schematic,
    pub version: TalosVersion,
    /// The version as asked for, with the `v` added when it was left out.
    pub version_tag: String,
}

pub(crate) async fn schematic_and_version(
    state: &AppState,
    schematic_id: &str,
    version_text: &str,
) -> Result<Target, ApiError> {
    let not_found = || ApiError::NotFound(format!("schematic ID {schematic_id:?} not found"));
    let id = SchematicId::parse(schematic_id).ok_or_else(not_found)?;
    let schematic = state.schematics().get(&id).await?.ok_or_else(not_found)?;

    let version_tag = if version_text.starts_with('v') {
        version_text.to_owned()
    } else {
        format!("v{version_text}")
    };
    let version = TalosVersion::parse(&version_tag).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !state.catalog()?.is_available(&version).await? {
        return Err(ApiError::VersionNotAvailable(version));
    }
    Ok(Target {
        schematic,
        version,
        version_tag,
    })
}
