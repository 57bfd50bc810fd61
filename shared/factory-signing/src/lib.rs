//! The factory's signing key: ECDSA over NIST P-256 with SHA-256, the key type cosign uses.
//!
//! The Go factory signs its cache entries and installer images with a cosign-compatible ECDSA key
//! and publishes the public half at `GET /oci/cosign/signing-key.pub`. This crate holds that key:
//! it loads it from PEM (PKCS#8 or SEC1), generates and persists one on a local server's first
//! start, exports the public key as PKIX PEM and produces DER signatures over SHA-256.

mod error;
mod key;
mod pem;
mod persist;

pub use error::SigningError;
pub use key::{public_key_pem_from_pem, SigningKey};
