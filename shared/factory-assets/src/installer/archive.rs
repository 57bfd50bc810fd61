//! The installer image as one tarball that is both a `docker save` archive and an OCI image
//! layout (see the `installer` module docs): the small documents, then the config and manifest
//! blobs, then the layers, streamed.

use std::io;

use factory_pipeline::AssembleError;
use factory_upstream::digest::content_mismatch;
use factory_upstream::{BlobStream, Upstream};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::oci::to_json;
use super::ustar::{padding, tar_header, BLOCK};
use super::{InstallerImage, InstallerLayer, LayerSource, OCI_INDEX, OCI_MANIFEST};

/// The chunk size of layer copies into the tarball.
const COPY_BYTES: usize = 256 << 10;

impl InstallerImage {
    /// Writes the image as a `docker save` / OCI layout tarball (see the module docs), streaming
    /// the layers.
    pub async fn write_archive(
        &self,
        upstream: &Upstream,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), AssembleError> {
        let write_error =
            |e: io::Error| AssembleError::Retryable(format!("writing the installer tarball: {e}"));
        for member in self.archive_members()? {
            let header = tar_header(&member.path, member.kind(), member.size)
                .map_err(|e| AssembleError::Retryable(format!("tar header {}: {e}", member.path)))?;
            out.write_all(header.as_bytes()).await.map_err(write_error)?;
            match member.data {
                MemberData::Dir => {}
                MemberData::Bytes(bytes) => out.write_all(&bytes).await.map_err(write_error)?,
                MemberData::Layer(index) => {
                    let stream = self.open_layer(upstream, index).await?;
                    let layer = &self.layers[index];
                    copy_layer(stream, layer, out).await?;
                }
            }
            out.write_all(&[0; BLOCK][..padding(member.size)])
                .await
                .map_err(write_error)?;
        }
        // The end of the archive: two zero blocks.
        out.write_all(&[0; 2 * BLOCK]).await.map_err(write_error)
    }

    /// The members of the tarball, in order (see the module docs).
    fn archive_members(&self) -> Result<Vec<Member>, AssembleError> {
        let blob = |digest: &str| -> Result<String, AssembleError> {
            let hex = factory_upstream::digest::sha256_hex(digest)
                .ok_or_else(|| AssembleError::User(format!("unsupported digest {digest:?}")))?;
            Ok(format!("blobs/sha256/{hex}"))
        };
        let docker = vec![DockerManifest {
            config: blob(&self.config_digest)?,
            repo_tags: Vec::new(),
            layers: self
                .layers
                .iter()
                .map(|l| blob(&l.digest))
                .collect::<Result<_, _>>()?,
        }];
        let index = OciIndex {
            schema_version: 2,
            media_type: OCI_INDEX,
            manifests: vec![IndexEntry {
                media_type: OCI_MANIFEST,
                digest: &self.manifest_digest,
                size: self.manifest.len() as u64,
                platform: EntryPlatform {
                    architecture: self.arch.as_str(),
                    os: "linux",
                },
            }],
        };
        let mut members = vec![
            Member::bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            Member::bytes("index.json", to_json(&index)?),
            Member::bytes("manifest.json", to_json(&docker)?),
            Member::dir("blobs/"),
            Member::dir("blobs/sha256/"),
            Member::bytes(&blob(&self.config_digest)?, self.config.clone()),
            Member::bytes(&blob(&self.manifest_digest)?, self.manifest.clone()),
        ];
        for (index, layer) in self.layers.iter().enumerate() {
            let path = blob(&layer.digest)?;
            // A blob is stored once, however many layers use it.
            if members.iter().any(|m| m.path == path) {
                continue;
            }
            members.push(Member {
                path,
                size: layer.size,
                data: MemberData::Layer(index),
            });
        }
        Ok(members)
    }
}

/// One member of the tarball.
#[derive(Debug)]
struct Member {
    path: String,
    size: u64,
    data: MemberData,
}

#[derive(Debug)]
enum MemberData {
    Dir,
    Bytes(Vec<u8>),
    Layer(usize),
}

impl Member {
    fn bytes(path: &str, bytes: Vec<u8>) -> Member {
        Member {
            path: path.to_owned(),
            size: bytes.len() as u64,
            data: MemberData::Bytes(bytes),
        }
    }

    fn dir(path: &str) -> Member {
        Member {
            path: path.to_owned(),
            size: 0,
            data: MemberData::Dir,
        }
    }

    fn kind(&self) -> tar::EntryType {
        match self.data {
            MemberData::Dir => tar::EntryType::Directory,
            _ => tar::EntryType::Regular,
        }
    }
}

/// Copies one layer into the tarball, exactly `layer.size` bytes: a read error is the source's
/// (a digest mismatch of a base layer is upstream's content, not retried; anything else,
/// including a damaged scratch file, is), a write error the output's.
async fn copy_layer(
    mut stream: BlobStream,
    layer: &InstallerLayer,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let mut buf = vec![0u8; COPY_BYTES];
    let mut copied = 0u64;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                let upstream = matches!(layer.source, LayerSource::Upstream { .. });
                return Err(match content_mismatch(&e) {
                    Some(m) if upstream => AssembleError::User(format!("layer {}: {m}", layer.digest)),
                    _ => AssembleError::Retryable(format!("reading layer {}: {e}", layer.digest)),
                });
            }
        };
        if n == 0 {
            break;
        }
        copied += n as u64;
        out.write_all(&buf[..n])
            .await
            .map_err(|e| AssembleError::Retryable(format!("writing the installer tarball: {e}")))?;
    }
    // The verifying reader enforces the size; this guards the tar framing regardless.
    if copied != layer.size {
        return Err(AssembleError::Retryable(format!(
            "layer {} has {copied} bytes, not {}",
            layer.digest, layer.size
        )));
    }
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex<'a> {
    schema_version: u32,
    media_type: &'static str,
    manifests: Vec<IndexEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry<'a> {
    media_type: &'static str,
    digest: &'a str,
    size: u64,
    platform: EntryPlatform<'a>,
}

#[derive(Serialize)]
struct EntryPlatform<'a> {
    architecture: &'a str,
    os: &'static str,
}

/// An entry of `docker save`'s `manifest.json`.
#[derive(Serialize)]
struct DockerManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use std::io::Read;

    use factory_upstream::digest::sha256_digest;

    use super::*;
    use crate::installer::fixtures::image;

    #[test]
    fn archive_members_are_docker_save_and_oci_layout() {
        let dir = tempfile::tempdir().unwrap();
        let image = image(dir.path());
        let members = image.archive_members().unwrap();
        let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
        let names: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
        let config = format!("blobs/sha256/{}", hex(&image.config_digest));
        let manifest = format!("blobs/sha256/{}", hex(&image.manifest_digest));
        let l1 = format!("blobs/sha256/{}", hex(&image.layers[0].digest));
        let l2 = format!("blobs/sha256/{}", hex(&image.layers[1].digest));
        assert_eq!(
            names,
            [
                "oci-layout",
                "index.json",
                "manifest.json",
                "blobs/",
                "blobs/sha256/",
                &config,
                &manifest,
                &l1,
                &l2
            ]
        );
        let bytes = |i: usize| match &members[i].data {
            MemberData::Bytes(b) => serde_json::from_slice::<serde_json::Value>(b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            bytes(2),
            serde_json::json!([{"Config": config, "RepoTags": [], "Layers": [l1, l2]}])
        );
        assert_eq!(
            bytes(1)["manifests"][0],
            serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": image.manifest_digest,
                "size": image.manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}
            })
        );
        assert_eq!(bytes(0)["imageLayoutVersion"], "1.0.0");
        assert!(matches!(members[8].data, MemberData::Layer(1)));
        assert_eq!(members[8].size, image.layers[1].size);
    }

    #[tokio::test]
    async fn the_tarball_frames_the_scratch_layer() {
        // Only the artifacts layer is local; write a one-layer image and read it back with `tar`.
        let dir = tempfile::tempdir().unwrap();
        let mut image = image(dir.path());
        image.layers.remove(0);
        let upstream = Upstream::new(
            std::sync::Arc::new(factory_upstream::LayoutSource::new(dir.path())),
            factory_upstream::UpstreamConfig::new(factory_upstream::Verification::Disabled),
        );
        let mut out = Vec::new();
        image.write_archive(&upstream, &mut out).await.unwrap();
        assert_eq!(out.len() % BLOCK, 0);
        let mut archive = tar::Archive::new(&out[..]);
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            found.push((path, data));
        }
        let layer = &image.layers[0];
        let (_, data) = found
            .iter()
            .find(|(p, _)| p.ends_with(layer.digest.trim_start_matches("sha256:")))
            .unwrap();
        assert_eq!(sha256_digest(data), layer.digest);
        assert_eq!(found.len(), 8);

        // A scratch layer that changed is caught by its digest (local trouble: retried).
        let LayerSource::Scratch(path) = &layer.source else {
            panic!()
        };
        let mut bytes = std::fs::read(path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(path, bytes).unwrap();
        let err = image.write_archive(&upstream, &mut Vec::new()).await.unwrap_err();
        assert!(
            matches!(&err, AssembleError::Retryable(m) if m.contains("mismatch")),
            "{err:?}"
        );
    }
}
