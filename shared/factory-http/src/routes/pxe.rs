//! `GET|HEAD /pxe/{schematic}/{version}/{platform}-{arch}[-secureboot]` (spec §7): the iPXE
//! script that boots Talos from the image routes, `200 text/plain; charset=utf-8`.
//!
//! Processing order, as the image route (and the Go handler, which parses the segment as the
//! path `cmdline-<segment>`): load the schematic (404); the version (`v` added; malformed → 400,
//! where Go answers 500; not offered → 404); parse `cmdline-<segment>` (400
//! `error parsing profile from path: …`); enhance from the schematic (400
//! `error enhancing profile from schematic: …`); render.
//!
//! The script ([`factory_core::pxe::render_script`], whose documentation explains how and why it
//! differs from Go's) points at `<base>/image/<schematic>/<vVersion>/kernel-<arch>` and
//! `.../initramfs-<arch>.xz` (SecureBoot: `.../<platform>-<arch>-secureboot-uki.efi`), where the
//! base is [`HttpConfig::pxe_base_url`](crate::HttpConfig::pxe_base_url): the external PXE URL,
//! else the external URL.
//!
//! The kernel command line is **computed here** rather than read from a built
//! `cmdline-<platform>-<arch>[-secureboot]` asset (Go builds that asset and reads it back): it is
//! a pure function of the enhanced `cmdline-…` profile ([`kernel_cmdline`] over the profile's
//! platform, arch, version, SecureBoot flag, extra kernel args, overlay args and META), exactly
//! what the cmdline assembler writes, so the script is answered without a build, a queue or a
//! wait, and the function needs no access to the pipeline. `tests/tests/pxe_api.rs` checks that
//! the script's arguments equal the body of `GET /image/.../cmdline-<platform>-<arch>`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use factory_core::profile::{enhance, parse_path};
use factory_core::pxe::{render_script, PxeScript, RetryPolicy};
use http::header;

use crate::cache_control;
use crate::{ApiError, AppState};

/// The PXE route.
pub fn pxe_router(state: AppState) -> Router {
    Router::new()
        .route("/pxe/{schematic}/{version}/{path}", get(pxe))
        .with_state(state)
}

async fn pxe(
    State(state): State<AppState>,
    params: Result<Path<(String, String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((schematic_id, version_text, segment)) =
        params.map_err(|e| ApiError::BadRequest(format!("invalid request path: {e}")))?;

    let super::lookup::Target {
        schematic,
        version,
        version_tag,
    } = super::lookup::schematic_and_version(&state, &schematic_id, &version_text).await?;

    // The segment is `<platform>-<arch>[-secureboot]`: as a cmdline path it parses (and fails)
    // exactly as in Go.
    let parsed = parse_path(&format!("cmdline-{segment}"))
        .map_err(|e| ApiError::BadRequest(format!("error parsing profile from path: {e}")))?;
    let profile = enhance(parsed, &schematic, &version)
        .map_err(|e| ApiError::BadRequest(format!("error enhancing profile from schematic: {e}")))?;

    let cmdline = profile.kernel_cmdline();
    let script = render_script(
        &PxeScript {
            base_url: state.config().pxe_base_url(),
            schematic: &schematic_id,
            version: &version_tag,
            platform: &profile.platform,
            arch: profile.arch,
            secureboot: profile.secureboot,
            cmdline: &cmdline,
        },
        RetryPolicy::default(),
    );
    Ok(cache_control::with(
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], script).into_response(),
        cache_control::PXE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use factory_core::profile::Profile;
    use factory_core::schematic::{MetaValue, Schematic};
    use factory_core::version::TalosVersion;

    fn profile(segment: &str, schematic: &Schematic) -> Profile {
        let version = TalosVersion::parse("v1.12.1").expect("version");
        enhance(
            parse_path(&format!("cmdline-{segment}")).expect("path"),
            schematic,
            &version,
        )
        .expect("enhance")
    }

    #[test]
    fn cmdline_carries_extra_args_and_meta() {
        let mut schematic = Schematic::default();
        schematic.customization.extra_kernel_args = vec!["net.ifnames=0".into(), "console=ttyS1".into()];
        schematic.customization.meta = vec![MetaValue {
            key: 0xa,
            value: "{}".into(),
        }];
        let cmdline = Profile::kernel_cmdline(&profile("metal-x86_64", &schematic));
        assert!(cmdline.starts_with("talos.platform=metal "), "{cmdline}");
        assert!(
            cmdline.contains(" talos.environment=INSTALLER_META_BASE64="),
            "{cmdline}"
        );
        assert!(cmdline.ends_with(" net.ifnames=0"), "{cmdline}");
        assert!(cmdline.contains(" console=ttyS1"), "{cmdline}");
        assert!(!cmdline.contains("lockdown"), "{cmdline}");
        let secure = Profile::kernel_cmdline(&profile("metal-amd64-secureboot", &schematic));
        assert!(secure.contains(" lockdown=confidentiality"), "{secure}");
    }
}
