//! Content addressing: `sha256:<hex>` digests, and a reader that checks a blob against its digest
//! while it streams and turns a mismatch into an error at EOF, so that unverified content is never
//! reported as read successfully.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// The only digest algorithm the factory accepts (Talos images use nothing else).
pub const SHA256_PREFIX: &str = "sha256:";

/// The hex part of a well-formed `sha256:<64 lowercase hex>` digest, `None` for anything else.
/// Callers use it before building paths or URLs from a digest.
pub fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix(SHA256_PREFIX)?;
    let well_formed = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then_some(hex)
}

/// Whether a manifest reference is a digest (`algorithm:encoded`) rather than a tag: tags cannot
/// contain `:`.
pub fn is_digest_reference(reference: &str) -> bool {
    reference.contains(':')
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("{SHA256_PREFIX}{}", hex::encode(Sha256::digest(bytes)))
}

/// Content that does not match its descriptor. Travels inside `io::Error` (kind `InvalidData`)
/// through readers and decompressors, so the layer code can tell it from transport errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentMismatch {
    #[error("digest mismatch: expected {expected}, content has {actual}")]
    Digest { expected: String, actual: String },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    Size {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("{digest} is larger than the {limit}-byte limit")]
    TooLarge { digest: String, limit: u64 },
    #[error("unsupported digest {0:?} (only sha256 is accepted)")]
    Unsupported(String),
}

impl From<ContentMismatch> for io::Error {
    fn from(e: ContentMismatch) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The [`ContentMismatch`] inside an `io::Error`, if that is what it carries.
pub fn content_mismatch(err: &io::Error) -> Option<&ContentMismatch> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<ContentMismatch>())
}

/// Checks bytes already in memory against a digest.
pub fn verify_bytes(expected: &str, bytes: &[u8]) -> Result<(), ContentMismatch> {
    if sha256_hex(expected).is_none() {
        return Err(ContentMismatch::Unsupported(expected.to_string()));
    }
    let actual = sha256_digest(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(ContentMismatch::Digest {
            expected: expected.to_string(),
            actual,
        })
    }
}

/// Wraps a blob stream: hashes what passes through and, at EOF, fails with [`ContentMismatch`]
/// if the digest (or the descriptor's size) does not match. It also fails as soon as more bytes
/// arrive than the descriptor announced, so a lying upstream cannot make us read forever.
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: R,
    expected: String,
    expected_size: Option<u64>,
    hasher: Sha256,
    read: u64,
    state: State,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Reading,
    Verified,
    Failed(ContentMismatch),
}

impl<R> VerifyingReader<R> {
    /// `expected` must be a `sha256:` digest; anything else fails on the first read (so a caller
    /// cannot accidentally skip verification by passing an unsupported algorithm).
    pub fn new(inner: R, expected: &str, expected_size: Option<u64>) -> Self {
        let state = match sha256_hex(expected) {
            Some(_) => State::Reading,
            None => State::Failed(ContentMismatch::Unsupported(expected.to_string())),
        };
        VerifyingReader {
            inner,
            expected: expected.to_string(),
            expected_size,
            hasher: Sha256::new(),
            read: 0,
            state,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    fn finish(&mut self) -> Result<(), ContentMismatch> {
        if let Some(expected) = self.expected_size {
            if expected != self.read {
                return Err(ContentMismatch::Size {
                    digest: self.expected.clone(),
                    expected,
                    actual: self.read,
                });
            }
        }
        let actual = format!("{SHA256_PREFIX}{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.expected {
            return Err(ContentMismatch::Digest {
                expected: self.expected.clone(),
                actual,
            });
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for VerifyingReader<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &this.state {
            State::Failed(e) => return Poll::Ready(Err(e.clone().into())),
            State::Verified => return Poll::Ready(Ok(())),
            State::Reading => {}
        }
        // A zero-length read is only EOF when there was room to read into.
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {
                let fresh = &buf.filled()[before..];
                if fresh.is_empty() {
                    return Poll::Ready(match this.finish() {
                        Ok(()) => {
                            this.state = State::Verified;
                            Ok(())
                        }
                        Err(e) => {
                            this.state = State::Failed(e.clone());
                            Err(e.into())
                        }
                    });
                }
                this.hasher.update(fresh);
                this.read += fresh.len() as u64;
                if let Some(expected) = this.expected_size {
                    if this.read > expected {
                        let e = ContentMismatch::Size {
                            digest: this.expected.clone(),
                            expected,
                            actual: this.read,
                        };
                        this.state = State::Failed(e.clone());
                        return Poll::Ready(Err(e.into()));
                    }
                }
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// Reads a whole (small) blob into memory, verified, refusing more than `limit` bytes: used for
/// configs and signature payloads, never for layers.
pub async fn read_verified<R: AsyncRead + Unpin>(
    reader: R,
    digest: &str,
    expected_size: Option<u64>,
    limit: u64,
) -> io::Result<Vec<u8>> {
    if expected_size.is_some_and(|size| size > limit) {
        return Err(ContentMismatch::TooLarge {
            digest: digest.to_string(),
            limit,
        }
        .into());
    }
    let mut verifying = VerifyingReader::new(reader, digest, expected_size);
    let mut out = Vec::new();
    // One byte past the limit tells "too large" from "exactly at the limit".
    let read = (&mut verifying).take(limit + 1).read_to_end(&mut out).await?;
    if read as u64 > limit {
        return Err(ContentMismatch::TooLarge {
            digest: digest.to_string(),
            limit,
        }
        .into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_well_formed_digests_only() {
        let d = sha256_digest(b"hello");
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(sha256_hex(&d).is_some());
        assert!(sha256_hex("sha256:../../etc/passwd").is_none());
        assert!(sha256_hex(&d.to_uppercase()).is_none());
        assert!(sha256_hex("sha512:abcd").is_none());
        assert!(is_digest_reference(&d));
        assert!(!is_digest_reference("v1.10.0"));
    }

    #[tokio::test]
    async fn good_content_reads_through() {
        let data = b"some blob".to_vec();
        let digest = sha256_digest(&data);
        let got = read_verified(&data[..], &digest, Some(data.len() as u64), 1024).await;
        assert_eq!(got.ok(), Some(data));
    }

    #[tokio::test]
    async fn mismatch_fails_at_eof() {
        let digest = sha256_digest(b"expected");
        let mut reader = VerifyingReader::new(&b"tampered"[..], &digest, None);
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).await.err();
        let mismatch = err.as_ref().and_then(content_mismatch);
        assert!(
            matches!(mismatch, Some(ContentMismatch::Digest { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn size_and_limit_are_enforced() {
        let data = b"0123456789".to_vec();
        let digest = sha256_digest(&data);
        let err = read_verified(&data[..], &digest, Some(4), 1024).await.err();
        assert!(matches!(
            err.as_ref().and_then(content_mismatch),
            Some(ContentMismatch::Size { .. })
        ));
        let err = read_verified(&data[..], &digest, None, 5).await.err();
        assert!(matches!(
            err.as_ref().and_then(content_mismatch),
            Some(ContentMismatch::TooLarge { .. })
        ));
        let err = read_verified(&data[..], "md5:abc", None, 100).await.err();
        assert!(matches!(
            err.as_ref().and_then(content_mismatch),
            Some(ContentMismatch::Unsupported(_))
        ));
    }
}
