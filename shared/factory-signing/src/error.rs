use std::path::PathBuf;

/// Why a signing key could not be loaded, generated, stored or exported.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The text holds no PEM block at all.
    #[error(
        "no PEM block found: expected \"-----BEGIN PRIVATE KEY-----\" or \"-----BEGIN EC PRIVATE KEY-----\""
    )]
    NoPem,
    /// A PEM block of a kind this crate does not read (an RSA key, a certificate, ...).
    #[error("unsupported PEM block {0:?}: expected PRIVATE KEY (PKCS#8) or EC PRIVATE KEY (SEC1)")]
    UnsupportedPem(String),
    /// The block has the right label but is not a valid P-256 key.
    #[error("invalid P-256 key in {label:?} PEM block: {detail}")]
    InvalidKey { label: String, detail: String },
    /// The key could not be encoded (should not happen with a valid key).
    #[error("encoding the key as PEM failed: {0}")]
    Encode(String),
    /// Reading or writing the key file failed.
    #[error("{action} signing key file {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but does not hold a usable key.
    #[error("signing key file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: Box<SigningError>,
    },
}
