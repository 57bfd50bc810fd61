//! What the installer keeps of its base image: its layers (all, or the first of exactly two),
//! announced with OCI media types, and its runtime config.

use factory_pipeline::AssembleError;
use factory_upstream::{PlatformImage, ResolvedImage};
use serde::Deserialize;

use super::oci::oci_layer_media_type;
use super::{InstallerLayer, LayerSource};

/// The base layers the installer keeps (all, or the first of exactly two), with OCI media types
/// and their diff IDs from the base config; and the base config's runtime `config` object.
pub(super) fn keep_base_layers(
    base: &ResolvedImage,
    platform: &PlatformImage,
) -> Result<(Vec<InstallerLayer>, Option<serde_json::Value>), AssembleError> {
    let invalid = |reason: String| AssembleError::User(format!("base installer {}: {reason}", base.name()));
    let config: BaseConfig =
        serde_json::from_slice(&platform.config).map_err(|e| invalid(format!("image config: {e}")))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != platform.layers.len() {
        return Err(invalid(format!(
            "{} layers but {} diff IDs",
            platform.layers.len(),
            diff_ids.len()
        )));
    }
    let kept = match platform.layers.len() {
        // The pre-1.10 installer: base + its boot assets, which ours replace.
        2 => 1,
        n => n,
    };
    let mut layers = Vec::with_capacity(kept + 1);
    for (descriptor, diff_id) in platform.layers.iter().zip(diff_ids).take(kept) {
        layers.push(InstallerLayer {
            media_type: oci_layer_media_type(descriptor).map_err(invalid)?.to_owned(),
            digest: descriptor.digest.clone(),
            size: descriptor
                .size
                .ok_or_else(|| invalid(format!("layer {} has no size", descriptor.digest)))?,
            diff_id,
            source: LayerSource::Upstream {
                repository: base.repository.clone(),
            },
        });
    }
    Ok((layers, config.config))
}

/// The fields of the base image config the installer reads.
#[derive(Deserialize)]
struct BaseConfig {
    #[serde(default)]
    config: Option<serde_json::Value>,
    #[serde(default)]
    rootfs: Option<BaseRootFs>,
}

#[derive(Deserialize)]
struct BaseRootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::installer::fixtures::{config, descriptor, platform, resolved};
    use crate::installer::oci::DOCKER_LAYER_GZIP;
    use crate::installer::OCI_LAYER_GZIP;

    #[test]
    fn a_two_layer_base_keeps_its_first_layer_only() {
        let two = platform(
            vec![
                descriptor(DOCKER_LAYER_GZIP, "sha256:l1", 10),
                descriptor(DOCKER_LAYER_GZIP, "sha256:l2", 20),
            ],
            config(&["sha256:d1", "sha256:d2"]),
        );
        let (layers, runtime) = keep_base_layers(&resolved(), &two).unwrap();
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].digest, "sha256:l1");
        assert_eq!(layers[0].diff_id, "sha256:d1");
        assert_eq!(layers[0].size, 10);
        assert_eq!(layers[0].media_type, OCI_LAYER_GZIP);
        assert_eq!(runtime.unwrap()["Entrypoint"][0], "/bin/installer");

        let one = platform(
            vec![descriptor(OCI_LAYER_GZIP, "sha256:l1", 10)],
            config(&["sha256:d1"]),
        );
        assert_eq!(keep_base_layers(&resolved(), &one).unwrap().0.len(), 1);
        let three = platform(
            vec![
                descriptor(OCI_LAYER_GZIP, "sha256:l1", 10),
                descriptor(OCI_LAYER_GZIP, "sha256:l2", 10),
                descriptor(OCI_LAYER_GZIP, "sha256:l3", 10),
            ],
            config(&["sha256:d1", "sha256:d2", "sha256:d3"]),
        );
        assert_eq!(keep_base_layers(&resolved(), &three).unwrap().0.len(), 3);

        // Diff IDs that do not match the layers, or a layer type we do not carry, are refused.
        let short = platform(vec![descriptor(OCI_LAYER_GZIP, "sha256:l1", 10)], config(&[]));
        assert!(matches!(
            keep_base_layers(&resolved(), &short),
            Err(AssembleError::User(m)) if m.contains("diff IDs")
        ));
        let foreign = platform(
            vec![descriptor("application/x-foo", "sha256:l1", 10)],
            config(&["sha256:d1"]),
        );
        assert!(matches!(
            keep_base_layers(&resolved(), &foreign),
            Err(AssembleError::User(m)) if m.contains("application/x-foo")
        ));
    }
}
