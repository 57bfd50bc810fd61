//! Cosign signatures in the legacy "simple signing" format (spec §9.4), made with our own ECDSA
//! P-256 key type: for a manifest digest `sha256:<hex>` in repository `R`, an image tagged
//! `sha256-<hex>.sig` in `R` whose single layer is the payload
//!
//! ```json
//! {"critical":{"identity":{"docker-reference":"ghcr.io/R"},"image":{"docker-manifest-digest":"sha256:<hex>"},"type":"cosign container image signature"},"optional":null}
//! ```
//!
//! with media type `application/vnd.dev.cosign.simplesigning.v1+json` and the base64 DER
//! signature over the payload in the layer annotation `dev.cosignproject.cosign/signature`.
//! ECDSA signing with p256 is RFC 6979 deterministic, so signatures keep the release
//! reproducible.

use std::collections::BTreeMap;

use base64::Engine;
use factory_signing::SigningKey;
use serde::Serialize;

use crate::images::REGISTRY;
use crate::oci::spec::{to_json, Descriptor, Manifest, MEDIA_CONFIG, MEDIA_MANIFEST};
use crate::oci::Repo;

pub const MEDIA_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const ANNOTATION_SIGNATURE: &str = "dev.cosignproject.cosign/signature";

/// The fixed TEST key the stand-in release is signed with unless `--key` is given. It is public
/// (checked into this repository): never trust it for anything but tests.
pub const TEST_KEY_PEM: &str = include_str!("test-key.pem");

/// The tag of the signature of `digest` (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Whether `tag` is a cosign signature tag (these are not signed themselves).
pub fn is_signature_tag(tag: &str) -> bool {
    tag.starts_with("sha256-") && tag.ends_with(".sig")
}

#[derive(Serialize)]
struct Payload<'a> {
    critical: Critical<'a>,
    optional: Option<()>,
}

#[derive(Serialize)]
struct Critical<'a> {
    identity: Identity<'a>,
    image: Image<'a>,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
struct Identity<'a> {
    #[serde(rename = "docker-reference")]
    docker_reference: &'a str,
}

#[derive(Serialize)]
struct Image<'a> {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: &'a str,
}

/// The simple-signing payload for `digest` in `repository` (named as on `ghcr.io`).
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let reference = format!("{REGISTRY}/{repository}");
    to_json(&Payload {
        critical: Critical {
            identity: Identity {
                docker_reference: &reference,
            },
            image: Image {
                docker_manifest_digest: digest,
            },
            kind: "cosign container image signature",
        },
        optional: None,
    })
}

/// The config cosign writes for signature images (empty platform, the payload as only diff_id).
#[derive(Serialize)]
struct SignatureConfig<'a> {
    architecture: &'a str,
    created: &'a str,
    history: [History<'a>; 1],
    os: &'a str,
    rootfs: RootFs<'a>,
    config: Empty,
}

#[derive(Serialize)]
struct History<'a> {
    created: &'a str,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: [&'a str; 1],
}

#[derive(Serialize)]
struct Empty {}

/// Signs `target` (a top-level manifest or index of `repo`) and stores the signature image;
/// returns `(tag, descriptor)` of the signature image.
pub fn sign(
    repo: &mut Repo,
    repository: &str,
    target: &Descriptor,
    key: &SigningKey,
) -> (String, Descriptor) {
    let payload = payload(repository, &target.digest);
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign_sha256(&payload));
    let mut layer = repo.blob(MEDIA_SIMPLE_SIGNING, payload);
    layer.annotations = BTreeMap::from([(ANNOTATION_SIGNATURE.to_owned(), signature)]);
    const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
    let config = SignatureConfig {
        architecture: "",
        created: ZERO_TIME,
        history: [History { created: ZERO_TIME }],
        os: "",
        rootfs: RootFs {
            kind: "layers",
            diff_ids: [&layer.digest],
        },
        config: Empty {},
    };
    let config = repo.blob(MEDIA_CONFIG, to_json(&config));
    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_owned(),
        config,
        layers: vec![layer],
        annotations: BTreeMap::new(),
    };
    (signature_tag(&target.digest), repo.manifest(&manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_matches_the_simple_signing_format() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let text = String::from_utf8(payload("siderolabs/imager", &digest)).expect("utf-8");
        assert_eq!(
            text,
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"ghcr.io/siderolabs/imager\"}},\
                 \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\"type\":\"cosign container image \
                 signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(signature_tag(&digest), format!("sha256-{}.sig", "ab".repeat(32)));
        assert!(is_signature_tag(&signature_tag(&digest)));
    }

    #[test]
    fn signatures_are_deterministic() {
        let key = SigningKey::from_pem(TEST_KEY_PEM).expect("test key");
        assert_eq!(key.sign_sha256(b"payload"), key.sign_sha256(b"payload"));
    }
}
