//! Writes OCI image layouts for the tests: tar layers (plain, gzip, zstd), manifests, indexes and
//! cosign simple-signing signatures, all by hand so that every byte is known.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry.
pub enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A regular file whose name is written raw, bypassing the tar crate's path checks: for
    /// hostile layers.
    RawName(&'a [u8], &'a [u8]),
}

pub fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(1_559_424_892);
        match entry {
            E::Dir(path, mode) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_path(path).expect("path");
                header.set_mode(*mode);
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, &[][..]).expect("append");
            }
            E::File(path, data, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_path(path).expect("path");
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, *data).expect("append");
            }
            E::Symlink(path, target) | E::Hardlink(path, target) => {
                let kind = if matches!(entry, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_path(path).expect("path");
                header.set_link_name(target).expect("link");
                header.set_mode(0o777);
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, &[][..]).expect("append");
            }
            E::RawName(name, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.as_old_mut().name[..name.len()].copy_from_slice(name);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, *data).expect("append");
            }
        }
    }
    builder.into_inner().expect("tar")
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

/// A descriptor as JSON.
pub fn descriptor(media_type: &str, bytes: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(bytes), "size": bytes.len()})
}

/// An OCI layout being written: blobs go to disk at once, `index.json` on [`Layout::finish`].
pub struct Layout {
    pub dir: PathBuf,
    entries: Vec<Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("write");
        Layout {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    pub fn blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).expect("write blob");
        digest
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }

    /// An image manifest for `layers` (uncompressed tar, compressed bytes, media type); returns
    /// the manifest bytes.
    pub fn image(&self, arch: &str, layers: &[(Vec<u8>, Vec<u8>, &str)], docker: bool) -> Vec<u8> {
        let diff_ids: Vec<String> = layers.iter().map(|(tar, _, _)| sha256(tar)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "config": {}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("json");
        self.blob(&config);
        let layer_descriptors: Vec<Value> = layers
            .iter()
            .map(|(_, blob, media_type)| {
                self.blob(blob);
                descriptor(media_type, blob)
            })
            .collect();
        let (manifest_type, config_type) = if docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, &config),
            "layers": layer_descriptors,
        }))
        .expect("json");
        self.blob(&manifest);
        manifest
    }

    /// An index over (manifest bytes, arch) pairs; returns its bytes.
    pub fn index(&self, manifests: &[(&[u8], &str)], docker: bool, annotation: &str) -> Vec<u8> {
        let (index_type, manifest_type) = if docker {
            (DOCKER_LIST, DOCKER_MANIFEST)
        } else {
            (OCI_INDEX, OCI_MANIFEST)
        };
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(bytes, arch)| {
                let mut d = descriptor(manifest_type, bytes);
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let mut index = json!({"schemaVersion": 2, "mediaType": index_type, "manifests": entries});
        if !annotation.is_empty() && !docker {
            index["annotations"] = json!({"test": annotation});
        }
        let bytes = serde_json::to_vec(&index).expect("json");
        self.blob(&bytes);
        bytes
    }

    /// Tags a manifest or index in `index.json`.
    pub fn tag(&mut self, tag: &str, manifest: &[u8]) {
        let media_type = match serde_json::from_slice::<Value>(manifest).expect("json")["mediaType"].as_str()
        {
            // skopeo only looks at OCI-typed entries of index.json; the blob keeps its Docker
            // type, which is what readers go by.
            Some(DOCKER_LIST) => OCI_INDEX,
            Some(DOCKER_MANIFEST) | None => OCI_MANIFEST,
            Some(other) => other,
        }
        .to_string();
        let mut d = descriptor(&media_type, manifest);
        d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        self.entries.push(d);
    }

    /// A cosign signature image for `digest`, tagged `sha256-<hex>.sig`: `payload_digest` is what
    /// the payload claims, and `signature` decides what the annotation holds.
    pub fn sign(&mut self, digest: &str, payload_digest: &str, signature: Signing<'_>) -> Vec<u8> {
        let payload = cosign_payload("127.0.0.1/test", payload_digest);
        let sig_b64 = match signature {
            Signing::Key(key) => {
                let sig: Signature = key.sign(&payload);
                base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
            }
            Signing::OtherMessage(key) => {
                let sig: Signature = key.sign(b"something else entirely");
                base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
            }
        };
        self.blob(&payload);
        let config = serde_json::to_vec(&json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&payload)]},
        }))
        .expect("json");
        self.blob(&config);
        let mut layer = descriptor(SIMPLE_SIGNING, &payload);
        layer["annotations"] = json!({"dev.cosignproject.cosign/signature": sig_b64});
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, &config),
            "layers": [layer],
        }))
        .expect("json");
        self.blob(&manifest);
        let tag = format!("{}.sig", digest.replacen(':', "-", 1));
        self.tag(&tag, &manifest);
        manifest
    }

    pub fn tags(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| {
                e["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn finish(&self) {
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.entries});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("write");
    }
}

pub enum Signing<'a> {
    Key(&'a SigningKey),
    /// A valid signature, but over other bytes than the payload.
    OtherMessage(&'a SigningKey),
}

/// The cosign simple-signing payload (spec §9.4).
pub fn cosign_payload(reference: &str, digest: &str) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
    )
    .into_bytes()
}

/// Annotations of the first layer of a signature manifest, for the openssl cross-check.
pub fn first_layer(manifest: &[u8]) -> BTreeMap<String, String> {
    let v: Value = serde_json::from_slice(manifest).expect("json");
    let layer = &v["layers"][0];
    let mut out = BTreeMap::new();
    out.insert(
        "digest".into(),
        layer["digest"].as_str().unwrap_or_default().to_string(),
    );
    out.insert(
        "signature".into(),
        layer["annotations"]["dev.cosignproject.cosign/signature"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    );
    out
}
