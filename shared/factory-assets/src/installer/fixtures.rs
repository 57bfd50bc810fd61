//! Test fixtures of the installer's modules: a base image and its platform image, scratch
//! artifacts and a whole [`InstallerImage`] made of them.

// Panicking is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use factory_core::arch::Arch;
use factory_upstream::digest::sha256_digest;
use factory_upstream::image::manifest::Descriptor;
use factory_upstream::{PlatformImage, ResolvedImage};

use super::base::keep_base_layers;
use super::layer::write_artifacts_layer;
use super::oci::{image_config, image_manifest, DOCKER_LAYER_GZIP};
use super::{InstallerImage, InstallerLayer, LayerSource, OCI_LAYER_GZIP, OCI_MANIFEST};

pub(super) fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    serde_json::from_value(serde_json::json!({
        "mediaType": media_type, "digest": digest, "size": size
    }))
    .unwrap()
}

pub(super) fn resolved() -> ResolvedImage {
    ResolvedImage {
        repository: "siderolabs/installer".into(),
        reference: "sha256:00".into(),
        digest: "sha256:00".into(),
        manifest: factory_upstream::RawManifest {
            digest: "sha256:00".into(),
            media_type: OCI_MANIFEST.into(),
            bytes: Default::default(),
        },
    }
}

pub(super) fn platform(layers: Vec<Descriptor>, config: serde_json::Value) -> PlatformImage {
    let config = serde_json::to_vec(&config).unwrap();
    PlatformImage {
        manifest: resolved().manifest,
        config_digest: sha256_digest(&config),
        config: config.into(),
        layers,
    }
}

pub(super) fn config(diff_ids: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2025-01-01T00:00:00Z",
        "config": {"Entrypoint": ["/bin/installer"], "Env": ["VERSION=v1.9.5"],
                   "Labels": {"alpha.talos.dev/version": "v1.9.5"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "x"}]
    })
}

/// Two scratch artifacts, given out of order.
pub(super) fn scratch_files() -> (tempfile::TempDir, Vec<(String, PathBuf)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    // Given out of order: the layer sorts them.
    for (name, content) in [
        ("vmlinuz.efi", b"MZ uki".to_vec()),
        ("systemd-boot.efi", vec![7u8; 1000]),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        files.push((name.to_owned(), path));
    }
    (dir, files)
}

/// An arm64 image: the first layer of a two-layer Docker base and an artifacts layer written to
/// `dir/layer`.
pub(super) fn image(dir: &Path) -> InstallerImage {
    let (_files_dir, files) = scratch_files();
    let path = dir.join("layer");
    let written = write_artifacts_layer(Arch::Arm64, &files, &path).unwrap();
    let (mut layers, runtime) = keep_base_layers(
        &resolved(),
        &platform(
            vec![
                descriptor(DOCKER_LAYER_GZIP, &sha256_digest(b"l1"), 2),
                descriptor(DOCKER_LAYER_GZIP, &sha256_digest(b"l2"), 2),
            ],
            config(&["sha256:d1", "sha256:d2"]),
        ),
    )
    .unwrap();
    layers.push(InstallerLayer {
        media_type: OCI_LAYER_GZIP.into(),
        digest: written.digest,
        size: written.size,
        diff_id: written.diff_id,
        source: LayerSource::Scratch(path),
    });
    let config = image_config(Arch::Arm64, runtime.as_ref(), &layers).unwrap();
    let config_digest = sha256_digest(&config);
    let manifest = image_manifest(&config, &config_digest, &layers).unwrap();
    InstallerImage {
        arch: Arch::Arm64,
        base: resolved(),
        manifest_digest: sha256_digest(&manifest),
        config,
        config_digest,
        manifest,
        layers,
        _scratch: tempfile::tempdir().unwrap(),
    }
}
