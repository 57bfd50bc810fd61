use std::fmt;
use std::path::Path;

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, Signature};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use p256::{PublicKey, SecretKey};
use rand_core::OsRng;

use crate::{pem, persist, SigningError};

const PKCS8_LABEL: &str = "PRIVATE KEY";
const SEC1_LABEL: &str = "EC PRIVATE KEY";
const PKIX_LABEL: &str = "PUBLIC KEY";

/// An ECDSA P-256 private key. `Debug` shows only the public half, so the key never lands in logs.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    signer: p256::ecdsa::SigningKey,
}

impl SigningKey {
    /// Reads a private key from PEM: PKCS#8 (`PRIVATE KEY`, what `cosign generate-key-pair` and
    /// `openssl genpkey` write once decrypted) or SEC1 (`EC PRIVATE KEY`, what
    /// `openssl ecparam -genkey` writes and what the Go factory's docs show).
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        let label = pem::first_label(text).ok_or(SigningError::NoPem)?;
        let invalid = |detail: String| SigningError::InvalidKey {
            label: label.to_owned(),
            detail,
        };
        let secret = match label {
            PKCS8_LABEL => SecretKey::from_pkcs8_pem(text).map_err(|e| invalid(e.to_string()))?,
            SEC1_LABEL => SecretKey::from_sec1_pem(text).map_err(|e| invalid(e.to_string()))?,
            other => return Err(SigningError::UnsupportedPem(other.to_owned())),
        };
        Ok(Self::from_secret(secret))
    }

    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_secret(SecretKey::random(&mut OsRng))
    }

    /// Loads the key stored at `path`, or generates one and stores it there (PKCS#8 PEM, mode
    /// 0600) when the file does not exist yet. The file is written atomically and never replaced:
    /// if two processes start at once, both end up with the key of the one that wrote first.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, SigningError> {
        let path = path.as_ref();
        match persist::read_if_exists(path)? {
            Some(text) => Self::from_file_text(path, &text),
            None => {
                let key = Self::generate();
                let pem = key.private_key_pem()?;
                match persist::write_new(path, pem.as_bytes())? {
                    persist::Written::Created => Ok(key),
                    // Lost a race with another process: its key is the one on disk, use it.
                    persist::Written::AlreadyExisted => {
                        let text = persist::read_if_exists(path)?.unwrap_or_default();
                        Self::from_file_text(path, &text)
                    }
                }
            }
        }
    }

    /// The private key as PKCS#8 PEM (what [`SigningKey::load_or_generate`] stores).
    pub fn private_key_pem(&self) -> Result<String, SigningError> {
        let pem = self
            .secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SigningError::Encode(e.to_string()))?;
        Ok(pem.as_str().to_owned())
    }

    /// The public key as PKIX `PUBLIC KEY` PEM, as served at `/oci/cosign/signing-key.pub`.
    pub fn public_key_pem(&self) -> String {
        encode_public(&self.secret.public_key())
    }

    /// An ECDSA signature over the SHA-256 of `payload`, DER-encoded: the form cosign stores
    /// (base64) in its signature annotations.
    pub fn sign_sha256(&self, payload: &[u8]) -> Vec<u8> {
        let signature: Signature = self.signer.sign(payload);
        let der: DerSignature = signature.to_der();
        der.as_bytes().to_vec()
    }

    fn from_secret(secret: SecretKey) -> Self {
        let signer = p256::ecdsa::SigningKey::from(&secret);
        Self { secret, signer }
    }

    fn from_file_text(path: &Path, text: &str) -> Result<Self, SigningError> {
        Self::from_pem(text).map_err(|e| SigningError::File {
            path: path.to_owned(),
            source: Box::new(e),
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &"ECDSA P-256 SHA-256")
            .field("public_key", &self.public_key_pem())
            .finish_non_exhaustive()
    }
}

/// The PKIX public key PEM of any key PEM this crate reads: a private key (PKCS#8 or SEC1) or a
/// public key (`PUBLIC KEY`). Lets a component that only publishes the key (the `keys` Lambda)
/// be configured with the public half alone.
pub fn public_key_pem_from_pem(text: &str) -> Result<String, SigningError> {
    match pem::first_label(text) {
        Some(PKIX_LABEL) => {
            let public = PublicKey::from_public_key_pem(text).map_err(|e| SigningError::InvalidKey {
                label: PKIX_LABEL.to_owned(),
                detail: e.to_string(),
            })?;
            Ok(encode_public(&public))
        }
        _ => SigningKey::from_pem(text).map(|key| key.public_key_pem()),
    }
}

fn encode_public(public: &PublicKey) -> String {
    // A `PublicKey` is always a valid curve point, and encoding one as SPKI only fails on an
    // encoder bug; threading an impossible error through every caller would buy nothing.
    public
        .to_public_key_pem(LineEnding::LF)
        .expect("a valid P-256 public key encodes as SPKI PEM")
}

#[cfg(test)]
mod tests;
