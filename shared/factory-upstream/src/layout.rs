//! [`OciSource`] over OCI image layout directories: repository `R` is the layout `<root>/<R>/`
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), its tags are the
//! `org.opencontainers.image.ref.name` annotations of `index.json` (what `skopeo copy … oci:DIR:TAG`
//! and the stand-in release generator write; cosign signatures are the `sha256-<hex>.sig` tags).
//! [`Upstream::from_layout_dir`] reads a self-contained signed release: the layouts and the
//! [`COSIGN_KEY_FILE`] next to them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use crate::config::UpstreamConfig;
use crate::digest::{is_digest_reference, sha256_hex, verify_bytes};
use crate::image::manifest::detect_media_type;
use crate::image::Upstream;
use crate::registry::{is_valid_repository, is_valid_tag};
use crate::source::{BlobStream, OciSource, RawManifest, UpstreamError};
use crate::verify::Verification;

/// The file, at the root of a directory of layouts, holding the PEM public key (what `cosign
/// generate-key-pair` writes) the images are signed with: where the stand-in release generator
/// (`tools/stand-in-release`) writes its key.
pub const COSIGN_KEY_FILE: &str = "cosign.pub";

/// The annotation naming an `index.json` entry.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

const INDEX_LIMIT: u64 = 16 << 20;
const MANIFEST_LIMIT: u64 = 4 << 20;

/// A directory of OCI image layouts, one per repository.
#[derive(Debug, Clone)]
pub struct LayoutSource {
    root: PathBuf,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    media_type: Option<String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

impl LayoutSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LayoutSource { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout directory of a repository; the name is validated first, so it stays under the
    /// root.
    fn layout_dir(&self, repository: &str) -> Result<PathBuf, UpstreamError> {
        if !is_valid_repository(repository) {
            return Err(UpstreamError::NotFound(format!(
                "invalid repository name {repository:?}"
            )));
        }
        Ok(repository
            .split('/')
            .fold(self.root.clone(), |dir, part| dir.join(part)))
    }

    fn blob_path(&self, repository: &str, digest: &str) -> Result<PathBuf, UpstreamError> {
        let hex = sha256_hex(digest).ok_or_else(|| UpstreamError::Invalid {
            image: format!("{repository}@{digest}"),
            reason: "only sha256 digests are supported".into(),
        })?;
        Ok(self
            .layout_dir(repository)?
            .join("blobs")
            .join("sha256")
            .join(hex))
    }

    fn unavailable(&self, what: &str, err: &io::Error) -> UpstreamError {
        UpstreamError::Unavailable {
            source_name: self.describe(),
            message: format!("{what}: {err}"),
        }
    }

    async fn read_index(&self, repository: &str) -> Result<Index, UpstreamError> {
        let path = self.layout_dir(repository)?.join("index.json");
        let bytes = match read_small(&path, INDEX_LIMIT).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(UpstreamError::NotFound(format!(
                    "repository {repository} in {}",
                    self.describe()
                )))
            }
            Err(e) => return Err(self.unavailable(&format!("reading {}", path.display()), &e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Invalid {
            image: repository.to_string(),
            reason: format!("bad index.json: {e}"),
        })
    }

    /// A manifest blob by digest, verified against it.
    async fn read_manifest_blob(
        &self,
        repository: &str,
        digest: &str,
        what: &str,
    ) -> Result<Bytes, UpstreamError> {
        let path = self.blob_path(repository, digest)?;
        let bytes = match read_small(&path, MANIFEST_LIMIT).await {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(UpstreamError::NotFound(format!("{what} in {}", self.describe())))
            }
            Err(e) => return Err(self.unavailable(&format!("reading {}", path.display()), &e)),
        };
        verify_bytes(digest, &bytes).map_err(|e| UpstreamError::Invalid {
            image: what.to_string(),
            reason: format!("manifest {e}"),
        })?;
        Ok(Bytes::from(bytes))
    }
}

impl Upstream {
    /// An upstream over the OCI layouts in `dir` ([`LayoutSource`]), every image verified with
    /// the PEM public key in `dir/cosign.pub` ([`COSIGN_KEY_FILE`]), with the default
    /// [`UpstreamConfig`] otherwise. This is the shape of a self-contained signed release such as
    /// the generated stand-in release, which the local server reads with `--upstream demo`
    /// (unless given another key) and tests build their upstream over.
    ///
    /// # Errors
    /// [`UpstreamError::Unavailable`] when the key file cannot be read,
    /// [`UpstreamError::Invalid`] when it is not a PEM ECDSA P-256 public key.
    pub fn from_layout_dir(dir: &Path) -> Result<Upstream, UpstreamError> {
        let source = LayoutSource::new(dir);
        let key_file = dir.join(COSIGN_KEY_FILE);
        let pem = std::fs::read_to_string(&key_file)
            .map_err(|e| source.unavailable(&format!("reading {}", key_file.display()), &e))?;
        let verification = Verification::from_public_key_pem(&pem).map_err(|e| UpstreamError::Invalid {
            image: key_file.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Upstream::new(Arc::new(source), UpstreamConfig::new(verification)))
    }
}

/// Reads a whole small file, refusing files over `limit` (a corrupted index must not exhaust
/// memory).
async fn read_small(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let file = tokio::fs::File::open(path).await?;
    let mut out = Vec::new();
    file.take(limit + 1).read_to_end(&mut out).await?;
    if out.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(out)
}

#[async_trait]
impl OciSource for LayoutSource {
    async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        let index = self.read_index(repository).await?;
        let mut tags: Vec<String> = Vec::new();
        for entry in &index.manifests {
            if let Some(tag) = entry.annotations.get(REF_NAME_ANNOTATION) {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
        }
        Ok(tags)
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Result<RawManifest, UpstreamError> {
        if is_digest_reference(reference) {
            let what = format!("{repository}@{reference}");
            let bytes = self.read_manifest_blob(repository, reference, &what).await?;
            let media_type = detect_media_type(&bytes, None);
            return Ok(RawManifest {
                digest: reference.to_string(),
                media_type,
                bytes,
            });
        }
        let what = format!("{repository}:{reference}");
        if !is_valid_tag(reference) {
            return Err(UpstreamError::NotFound(format!("{what} (invalid tag)")));
        }
        let index = self.read_index(repository).await?;
        // The last entry wins, as when a tool re-tags by appending.
        let entry = index
            .manifests
            .iter()
            .rev()
            .find(|e| e.annotations.get(REF_NAME_ANNOTATION).map(String::as_str) == Some(reference))
            .ok_or_else(|| UpstreamError::NotFound(format!("{what} in {}", self.describe())))?;
        let bytes = self.read_manifest_blob(repository, &entry.digest, &what).await?;
        let media_type = detect_media_type(&bytes, entry.media_type.as_deref());
        Ok(RawManifest {
            digest: entry.digest.clone(),
            media_type,
            bytes,
        })
    }

    async fn blob(&self, repository: &str, digest: &str) -> Result<BlobStream, UpstreamError> {
        let path = self.blob_path(repository, digest)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(UpstreamError::NotFound(format!(
                "blob {repository}@{digest} in {}",
                self.describe()
            ))),
            Err(e) => Err(self.unavailable(&format!("opening {}", path.display()), &e)),
        }
    }

    fn describe(&self) -> String {
        format!("OCI layouts in {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use p256::pkcs8::EncodePublicKey as _;

    use super::*;

    #[test]
    fn from_layout_dir_needs_a_valid_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = Upstream::from_layout_dir(dir.path()).expect_err("no key file");
        assert!(
            matches!(missing, UpstreamError::Unavailable { .. }),
            "{missing:?}"
        );

        let key_file = dir.path().join(COSIGN_KEY_FILE);
        std::fs::write(
            &key_file,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .expect("write");
        let invalid = Upstream::from_layout_dir(dir.path()).expect_err("not a key");
        assert!(matches!(invalid, UpstreamError::Invalid { .. }), "{invalid:?}");

        // Any P-256 public key does: a fixed non-zero scalar below n is a private key.
        let pem = p256::ecdsa::SigningKey::from_slice(&[1; 32])
            .expect("valid scalar")
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("pem");
        std::fs::write(&key_file, pem).expect("write");
        let upstream = Upstream::from_layout_dir(dir.path()).expect("upstream");
        assert!(!upstream.config().verification.is_disabled());
        assert_eq!(
            upstream.source().describe(),
            format!("OCI layouts in {}", dir.path().display())
        );
    }
}
