//! Cosign key signatures (spec §9.4): the simple-signing payload, the signature image that
//! carries it, and the verification `cosign verify --key` does (offline, no transparency log).
//!
//! # The signature image
//!
//! * payload: `{"critical":{"identity":{"docker-reference":"<identity>"},"image":
//!   {"docker-manifest-digest":"sha256:<hex>"},"type":"cosign container image signature"},
//!   "optional":null}`, exactly these bytes (they are what is signed);
//! * signature: ECDSA P-256 over SHA-256 of the payload, ASN.1 DER, standard base64, in the
//!   layer annotation `dev.cosignproject.cosign/signature`;
//! * manifest: an OCI image manifest whose one layer is the payload
//!   (`application/vnd.dev.cosign.simplesigning.v1+json`) and whose config is the config file
//!   cosign's image library writes for such an image (empty architecture/os, zero timestamps,
//!   the payload's digest as the one diff ID); cosign reads only the layers.
//! * `subject` = the signed index, which also makes the signature an OCI 1.1 referrer of it (cosign
//!   ignores the field; registries without referrers support ignore it too). `artifactType` is
//!   left unset, as cosign's own key signatures do: setting it would make this an "artifact"
//!   manifest that older cosign versions were never tested against. So a referrers listing
//!   reports the config media type (`application/vnd.oci.image.config.v1+json`) as its
//!   artifact type, which is what the OCI distribution spec prescribes for such a manifest and
//!   what a real registry would answer for it.
//!
//! P-256 signing here is deterministic (RFC 6979), so signing the same digest for the same
//! identity with the same key gives the same signature image, byte for byte: a rebuild of a tag
//! rewrites identical objects.

use std::collections::BTreeMap;

use base64::Engine as _;
use factory_signing::SigningKey;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, VerifyingKey};
use serde::Deserialize;

use crate::media;
use crate::oci::{Descriptor, ImageManifest};

/// The layer annotation holding the base64 DER signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The `critical.type` of a container image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// The simple-signing payload signing `digest` as `identity` (see the module documentation).
pub fn simple_signing_payload(identity: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"{SIGNATURE_TYPE}"}},"optional":null}}"#,
        json_string(identity),
        json_string(digest),
    )
    .into_bytes()
}

/// The config blob of a signature image whose one layer is the payload with `payload_digest`.
pub fn signature_config(payload_digest: &str) -> Vec<u8> {
    format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":[{}]}},"config":{{}}}}"#,
        json_string(payload_digest)
    )
    .into_bytes()
}

/// A signed signature image, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureImage {
    pub payload: Vec<u8>,
    /// The base64 DER signature over `payload`.
    pub signature: String,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

impl SignatureImage {
    /// Signs `subject` (the index descriptor) as `identity`.
    pub fn sign(key: &SigningKey, identity: &str, subject: &Descriptor) -> Self {
        let payload = simple_signing_payload(identity, &subject.digest);
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign_sha256(&payload));
        let payload_descriptor = Descriptor {
            annotations: Some(BTreeMap::from([(
                SIGNATURE_ANNOTATION.to_owned(),
                signature.clone(),
            )])),
            ..Descriptor::of(media::COSIGN_SIMPLE_SIGNING, &payload)
        };
        let config = signature_config(&payload_descriptor.digest);
        let manifest = ImageManifest {
            schema_version: 2,
            media_type: Some(media::OCI_MANIFEST.to_owned()),
            artifact_type: None,
            config: Descriptor::of(media::OCI_CONFIG, &config),
            layers: vec![payload_descriptor],
            subject: Some(Descriptor {
                platform: None,
                artifact_type: None,
                annotations: None,
                ..subject.clone()
            }),
            annotations: None,
        }
        .to_bytes();
        let manifest_digest = factory_upstream::digest::sha256_digest(&manifest);
        SignatureImage {
            payload,
            signature,
            config,
            manifest,
            manifest_digest,
        }
    }

    /// Its descriptor in its subject's referrers listing.
    pub fn referrer(&self) -> Descriptor {
        Descriptor {
            artifact_type: Some(media::OCI_CONFIG.to_owned()),
            ..Descriptor::of(media::OCI_MANIFEST, &self.manifest)
        }
    }
}

#[derive(Deserialize)]
struct SimpleSigning {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    identity: Identity,
    image: Image,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Identity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
struct Image {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Verifies one signature layer's content as `cosign verify --key` does: the base64 DER
/// `signature` over `payload` with `key`, then the signed claims: the type, the digest it signs
/// (`digest`) and, when given, the identity (cosign checks it when asked to; the tag check always
/// does, so a signature of the same index under another name does not pass).
pub fn verify_payload(
    key: &VerifyingKey,
    payload: &[u8],
    signature: &str,
    identity: Option<&str>,
    digest: &str,
) -> Result<(), String> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature.trim())
        .map_err(|e| format!("signature is not base64: {e}"))?;
    let der = DerSignature::try_from(der.as_slice()).map_err(|e| format!("signature is not DER: {e}"))?;
    key.verify(payload, &der)
        .map_err(|_| "signature does not verify with the factory key".to_owned())?;
    let claims: SimpleSigning =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not simple signing: {e}"))?;
    let critical = claims.critical;
    if critical.kind != SIGNATURE_TYPE {
        return Err(format!("payload type {:?}", critical.kind));
    }
    if critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "payload signs {}, not {digest}",
            critical.image.docker_manifest_digest
        ));
    }
    match identity {
        Some(identity) if critical.identity.docker_reference != identity => Err(format!(
            "payload identity {:?}, not {identity:?}",
            critical.identity.docker_reference
        )),
        _ => Ok(()),
    }
}

fn json_string(s: &str) -> String {
    // Serialising a `&str` cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use p256::pkcs8::DecodePublicKey;

    const DIGEST: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const IDENTITY: &str =
        "factory.test:8080/metal-installer/376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

    fn verifying(key: &SigningKey) -> VerifyingKey {
        VerifyingKey::from_public_key_pem(&key.public_key_pem()).unwrap()
    }

    fn subject() -> Descriptor {
        Descriptor {
            media_type: media::OCI_INDEX.into(),
            digest: DIGEST.into(),
            size: 5,
            platform: None,
            artifact_type: None,
            annotations: None,
        }
    }

    #[test]
    fn payload_is_byte_exact() {
        let payload = simple_signing_payload(IDENTITY, DIGEST);
        assert_eq!(
            String::from_utf8(payload).unwrap(),
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{IDENTITY}\"}},\"image\":{{\"docker-manifest-digest\":\"{DIGEST}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(
            String::from_utf8(signature_config(DIGEST)).unwrap(),
            format!(
                "{{\"architecture\":\"\",\"created\":\"0001-01-01T00:00:00Z\",\"history\":[{{\"created\":\"0001-01-01T00:00:00Z\"}}],\"os\":\"\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{DIGEST}\"]}},\"config\":{{}}}}"
            )
        );
    }

    #[test]
    fn signature_image_signs_and_verifies_and_is_deterministic() {
        let key = SigningKey::generate();
        let image = SignatureImage::sign(&key, IDENTITY, &subject());
        assert_eq!(image, SignatureImage::sign(&key, IDENTITY, &subject()));
        let manifest: ImageManifest = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest.media_type.as_deref(), Some(media::OCI_MANIFEST));
        assert_eq!(manifest.artifact_type, None);
        assert_eq!(manifest.config, Descriptor::of(media::OCI_CONFIG, &image.config));
        assert_eq!(manifest.subject, Some(subject()));
        let [layer] = manifest.layers.as_slice() else {
            panic!("one layer expected: {manifest:?}")
        };
        assert_eq!(layer.media_type, media::COSIGN_SIMPLE_SIGNING);
        assert_eq!(
            layer.digest,
            factory_upstream::digest::sha256_digest(&image.payload)
        );
        let signature = &layer.annotations.as_ref().unwrap()[SIGNATURE_ANNOTATION];
        assert_eq!(signature, &image.signature);
        verify_payload(
            &verifying(&key),
            &image.payload,
            signature,
            Some(IDENTITY),
            DIGEST,
        )
        .unwrap();
        // Without an identity, only the key and the digest count.
        verify_payload(&verifying(&key), &image.payload, signature, None, DIGEST).unwrap();
        let referrer = image.referrer();
        assert_eq!(referrer.digest, image.manifest_digest);
        assert_eq!(referrer.artifact_type.as_deref(), Some(media::OCI_CONFIG));
        assert_eq!(referrer.artifact_type.unwrap(), manifest.referrer_artifact_type());
    }

    #[test]
    fn verification_failures() {
        let key = SigningKey::generate();
        let image = SignatureImage::sign(&key, IDENTITY, &subject());
        let good = verifying(&key);
        let check = |key: &VerifyingKey, payload: &[u8], signature: &str, identity: &str, digest: &str| {
            verify_payload(key, payload, signature, Some(identity), digest).unwrap_err()
        };

        let mut tampered = image.payload.clone();
        tampered[20] ^= 1;
        let e = check(&good, &tampered, &image.signature, IDENTITY, DIGEST);
        assert!(e.contains("does not verify"), "{e}");

        let other = verifying(&SigningKey::generate());
        let e = check(&other, &image.payload, &image.signature, IDENTITY, DIGEST);
        assert!(e.contains("does not verify"), "{e}");

        let wrong_digest = DIGEST.replace("2cf2", "0000");
        let e = check(&good, &image.payload, &image.signature, IDENTITY, &wrong_digest);
        assert!(e.contains("payload signs"), "{e}");

        let e = check(
            &good,
            &image.payload,
            &image.signature,
            "factory.test/installer/x",
            DIGEST,
        );
        assert!(e.contains("identity"), "{e}");

        let e = check(&good, &image.payload, "not base64!", IDENTITY, DIGEST);
        assert!(e.contains("base64"), "{e}");
        let e = check(&good, &image.payload, "AAAA", IDENTITY, DIGEST);
        assert!(e.contains("DER"), "{e}");

        // A validly signed payload of another type is not an image signature.
        let forged = String::from_utf8(image.payload.clone())
            .unwrap()
            .replace(SIGNATURE_TYPE, "something else");
        let sig = base64::engine::general_purpose::STANDARD.encode(key.sign_sha256(forged.as_bytes()));
        let e = check(&good, forged.as_bytes(), &sig, IDENTITY, DIGEST);
        assert!(e.contains("payload type"), "{e}");
    }
}
