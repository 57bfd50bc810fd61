//! Cosign signature verification of source images (spec §9.4, §9.5), key-based and offline: the
//! legacy `.sig` tag scheme with "simple signing" payloads, which is what a cosign public key
//! verifies. Keyless (Fulcio/Rekor) verification is not implemented.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

use crate::digest::{content_mismatch, read_verified, sha256_hex};
use crate::image::manifest::ManifestDoc;
use crate::source::{OciSource, UpstreamError};

/// Media type of a cosign simple-signing layer.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Layer annotation holding the base64 DER ECDSA signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign payload.
pub const COSIGN_PAYLOAD_TYPE: &str = "cosign container image signature";

/// Payloads are a few hundred bytes; anything much larger is not a signature.
const PAYLOAD_LIMIT: u64 = 1 << 20;

/// How source images are checked before use.
#[derive(Debug, Clone)]
pub enum Verification {
    /// Signatures must verify with this ECDSA P-256 key (`containerSignature.publicKeyFile`).
    Key(VerifyingKey),
    /// No verification (`containerSignature.disabled`): for tests and trusted mirrors only.
    Disabled,
}

/// A public key that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid cosign public key: {0}")]
pub struct KeyError(String);

impl Verification {
    /// Key verification with a PEM `PUBLIC KEY` (SubjectPublicKeyInfo, what `cosign
    /// generate-key-pair` writes to `cosign.pub`).
    pub fn from_public_key_pem(pem: &str) -> Result<Self, KeyError> {
        VerifyingKey::from_public_key_pem(pem.trim())
            .map(Verification::Key)
            .map_err(|e| KeyError(format!("{e} (expected a PEM ECDSA P-256 public key)")))
    }

    pub fn is_disabled(&self) -> bool {
        matches!(self, Verification::Disabled)
    }
}

/// The cosign signature tag of a digest: `sha256:<hex>` → `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Checks that `repository@digest` has a `.sig` image with at least one simple-signing layer
/// whose signature verifies with `key` over a payload naming exactly this digest.
pub async fn verify_image(
    source: &dyn OciSource,
    repository: &str,
    digest: &str,
    key: &VerifyingKey,
) -> Result<(), UpstreamError> {
    let image = format!("{repository}@{digest}");
    let fail = |reason: String| UpstreamError::Signature {
        image: image.clone(),
        reason,
    };
    if sha256_hex(digest).is_none() {
        return Err(fail(format!("cannot look up a signature for digest {digest:?}")));
    }
    let tag = signature_tag(digest);
    let manifest = match source.manifest(repository, &tag).await {
        Ok(m) => m,
        Err(UpstreamError::NotFound(_)) => {
            return Err(fail(format!("no signature ({repository}:{tag} not found)")))
        }
        Err(e) => return Err(e),
    };
    let doc: ManifestDoc = serde_json::from_slice(&manifest.bytes).map_err(|e| {
        fail(format!(
            "signature manifest {repository}:{tag} is not valid JSON: {e}"
        ))
    })?;

    let mut payload_mismatch = None;
    for layer in doc.layers.iter().flatten() {
        if layer.media_type.as_deref() != Some(SIMPLE_SIGNING_MEDIA_TYPE) {
            continue;
        }
        let Some(encoded) = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
        else {
            continue;
        };
        let Some(signature) = decode_signature(encoded) else {
            continue;
        };
        let payload = match read_payload(source, repository, &layer.digest, layer.size).await? {
            Some(p) => p,
            None => continue,
        };
        if key.verify(&payload, &signature).is_err() {
            continue;
        }
        match check_payload(&payload, digest) {
            Ok(()) => return Ok(()),
            Err(reason) => payload_mismatch = Some(reason),
        }
    }
    Err(fail(match payload_mismatch {
        Some(reason) => format!("signed payload does not match the image: {reason}"),
        None => "signature does not verify with the configured key".to_string(),
    }))
}

/// Base64 → DER ECDSA signature. Go's crypto/ecdsa emits high-S values half the time; p256
/// accepts them, as cosign does.
fn decode_signature(encoded: &str) -> Option<Signature> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    Signature::from_der(&der).ok()
}

/// The payload blob, digest-verified. `None` when it is missing or does not match its digest
/// (that layer simply does not count); transport failures are errors, since then nothing can be
/// concluded about the signature.
async fn read_payload(
    source: &dyn OciSource,
    repository: &str,
    digest: &str,
    size: Option<u64>,
) -> Result<Option<Vec<u8>>, UpstreamError> {
    let stream = match source.blob(repository, digest).await {
        Ok(s) => s,
        Err(UpstreamError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    match read_verified(stream, digest, size, PAYLOAD_LIMIT).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if content_mismatch(&e).is_some() => {
            tracing::warn!(repository, digest, error = %e, "cosign payload does not match its digest");
            Ok(None)
        }
        Err(e) => Err(UpstreamError::Unavailable {
            source_name: source.describe(),
            message: e.to_string(),
        }),
    }
}

fn check_payload(payload: &[u8], digest: &str) -> Result<(), String> {
    let parsed: Payload =
        serde_json::from_slice(payload).map_err(|e| format!("payload is not a cosign payload: {e}"))?;
    if parsed.critical.kind != COSIGN_PAYLOAD_TYPE {
        return Err(format!("payload type is {:?}", parsed.critical.kind));
    }
    if parsed.critical.image.docker_manifest_digest != digest {
        return Err(format!(
            "payload is for {}",
            parsed.critical.image.docker_manifest_digest
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    fn key() -> SigningKey {
        // A fixed scalar keeps the test deterministic; any non-zero value below n is a key.
        let bytes: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
        SigningKey::from_slice(&bytes).expect("valid scalar")
    }

    #[test]
    fn signature_tag_format() {
        assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
    }

    #[test]
    fn parses_pem_public_keys() {
        let pem = key()
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("pem");
        assert!(matches!(
            Verification::from_public_key_pem(&pem),
            Ok(Verification::Key(_))
        ));
        assert!(Verification::from_public_key_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        )
        .is_err());
        assert!(Verification::Disabled.is_disabled());
    }

    #[test]
    fn accepts_high_s_signatures() {
        let payload = b"payload";
        let sig: Signature = key().sign(payload);
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r, -*s).expect("valid scalars");
        let vk = *key().verifying_key();
        assert!(vk.verify(payload, &sig).is_ok());
        assert!(vk.verify(payload, &high).is_ok());
        let der = base64::engine::general_purpose::STANDARD.encode(high.to_der().as_bytes());
        assert!(decode_signature(&der).is_some_and(|s| vk.verify(payload, &s).is_ok()));
    }

    #[test]
    fn payload_must_name_the_digest() {
        let digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
        let good = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{COSIGN_PAYLOAD_TYPE}"}},"optional":null}}"#
        );
        assert!(check_payload(good.as_bytes(), digest).is_ok());
        assert!(check_payload(good.replace("cosign container", "other").as_bytes(), digest).is_err());
        assert!(check_payload(good.as_bytes(), &digest.replace('0', "1")).is_err());
        assert!(check_payload(b"{}", digest).is_err());
    }
}
