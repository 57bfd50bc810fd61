//! The OCI side of the installer image: the media types it announces (and how a base layer's
//! type maps to one), its image config and manifest JSON.

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_upstream::image::manifest::Descriptor;
use serde::Serialize;

use super::InstallerLayer;

/// `application/vnd.oci.image.manifest.v1+json`.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar+gzip`: the artifacts layer's media type.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The image config's `created`: Talos' `SOURCE_DATE_EPOCH` (1559424892), see the `installer`
/// module docs.
pub const CREATED: &str = "2019-06-01T21:34:52Z";

/// `application/vnd.docker.image.rootfs.diff.tar.gzip`: announced as [`OCI_LAYER_GZIP`] (the same
/// bytes).
pub(super) const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The OCI layer media types kept as they are.
const OCI_LAYERS: [&str; 3] = [
    "application/vnd.oci.image.layer.v1.tar",
    OCI_LAYER_GZIP,
    "application/vnd.oci.image.layer.v1.tar+zstd",
];

/// The OCI media type a base layer is published with: Docker gzip layers become OCI gzip layers
/// (the same bytes), OCI layer types stay.
pub(super) fn oci_layer_media_type(descriptor: &Descriptor) -> Result<&'static str, String> {
    let media_type = descriptor.media_type.as_deref().unwrap_or_default();
    if media_type == DOCKER_LAYER_GZIP {
        return Ok(OCI_LAYER_GZIP);
    }
    OCI_LAYERS.into_iter().find(|t| *t == media_type).ok_or_else(|| {
        format!(
            "layer {} has media type {media_type:?}, which the installer does not carry over",
            descriptor.digest
        )
    })
}

/// The OCI image config (field order fixed).
#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'static str,
    architecture: &'a str,
    os: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a serde_json::Value>,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifest<'a> {
    schema_version: u32,
    media_type: &'static str,
    config: ManifestDescriptor<'a>,
    layers: Vec<ManifestDescriptor<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDescriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AssembleError> {
    serde_json::to_vec(value).map_err(|e| AssembleError::Retryable(format!("serialising JSON: {e}")))
}

/// The image config of the installer (see the module docs).
pub(super) fn image_config(
    arch: Arch,
    runtime: Option<&serde_json::Value>,
    layers: &[InstallerLayer],
) -> Result<Vec<u8>, AssembleError> {
    to_json(&ImageConfig {
        created: CREATED,
        architecture: arch.as_str(),
        os: "linux",
        config: runtime,
        rootfs: RootFs {
            kind: "layers",
            diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
        },
    })
}

/// The OCI image manifest of the installer.
pub(super) fn image_manifest(
    config: &[u8],
    config_digest: &str,
    layers: &[InstallerLayer],
) -> Result<Vec<u8>, AssembleError> {
    to_json(&ImageManifest {
        schema_version: 2,
        media_type: OCI_MANIFEST,
        config: ManifestDescriptor {
            media_type: OCI_CONFIG,
            digest: config_digest,
            size: config.len() as u64,
        },
        layers: layers
            .iter()
            .map(|l| ManifestDescriptor {
                media_type: &l.media_type,
                digest: &l.digest,
                size: l.size,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use factory_upstream::digest::sha256_digest;

    use super::*;
    use crate::installer::fixtures::{descriptor, image};

    #[test]
    fn media_types_map_to_oci() {
        let d = |t: &str| oci_layer_media_type(&descriptor(t, "sha256:1", 1));
        assert_eq!(d(DOCKER_LAYER_GZIP), Ok(OCI_LAYER_GZIP));
        assert_eq!(d(OCI_LAYER_GZIP), Ok(OCI_LAYER_GZIP));
        assert_eq!(
            d("application/vnd.oci.image.layer.v1.tar+zstd"),
            Ok("application/vnd.oci.image.layer.v1.tar+zstd")
        );
        assert!(d("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip").is_err());
        assert!(d("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip").is_err());
    }

    #[test]
    fn config_and_manifest_shape() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
        let diff_id = image.layers[1].diff_id.clone();
        assert_eq!(
            config,
            serde_json::json!({
                "created": CREATED, "architecture": "arm64", "os": "linux",
                "config": {"Entrypoint": ["/bin/installer"], "Env": ["VERSION=v1.9.5"],
                           "Labels": {"alpha.talos.dev/version": "v1.9.5"}},
                "rootfs": {"type": "layers", "diff_ids": ["sha256:d1", diff_id]}
            })
        );
        // Fixed field order.
        assert!(std::str::from_utf8(&image.config).unwrap().starts_with(
            r#"{"created":"2019-06-01T21:34:52Z","architecture":"arm64","os":"linux","config":{"#
        ));
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["schemaVersion"], 2);
        assert_eq!(manifest["mediaType"], OCI_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.len());
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0]["mediaType"], OCI_LAYER_GZIP);
        assert_eq!(layers[0]["digest"], sha256_digest(b"l1").as_str());
        assert_eq!(layers[1]["digest"], image.layers[1].digest.as_str());
        assert_eq!(layers[1]["size"], image.layers[1].size);
    }
}
