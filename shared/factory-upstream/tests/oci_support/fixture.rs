//! The test release: a few repositories of OCI layouts under one root, exercising every path of
//! the upstream code (multi-arch index, whiteouts, gzip/zstd/plain layers, Docker media types,
//! signatures good and bad, hostile layers, blobs to corrupt).

use std::path::{Path, PathBuf};

use p256::ecdsa::SigningKey;
use p256::pkcs8::{EncodePublicKey as _, LineEnding};

use super::layout::*;

pub const IMAGER: &str = "siderolabs/imager";
pub const CORRUPT: &str = "corrupt/image";
pub const EVIL: &str = "evil/image";

/// A file larger than `read_files` accepts (16 MiB); zeros, so the layer stays tiny.
pub const BIG: usize = (16 << 20) + 1;

pub struct Fixture {
    pub root: tempfile::TempDir,
    pub key: SigningKey,
    pub public_pem: String,
    pub wrong_pem: String,
    /// Digest of the signed multi-arch index tagged v1.0.0.
    pub index_digest: String,
    pub amd64_manifest_digest: String,
    /// Per repository, the tags to copy to a registry.
    pub repositories: Vec<(String, Vec<String>)>,
    /// Blobs the digest-mismatch checks corrupt (both in `CORRUPT`).
    pub corrupt_layer: String,
    pub corrupt_manifest: String,
}

fn test_key(seed: u8) -> SigningKey {
    let bytes: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(7).wrapping_add(seed));
    SigningKey::from_slice(&bytes).expect("valid scalar")
}

fn pem(key: &SigningKey) -> String {
    key.verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .expect("pem")
}

impl Fixture {
    pub fn build() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let key = test_key(1);
        let wrong = test_key(2);
        let mut repositories = Vec::new();

        let (index_digest, amd64_manifest_digest, tags) = imager(&root.path().join(IMAGER), &key);
        repositories.push((IMAGER.to_string(), tags));

        let (corrupt_layer, corrupt_manifest, tags) = corrupt(&root.path().join(CORRUPT));
        repositories.push((CORRUPT.to_string(), tags));

        repositories.push((EVIL.to_string(), evil(&root.path().join(EVIL))));

        Fixture {
            public_pem: pem(&key),
            wrong_pem: pem(&wrong),
            root,
            key,
            index_digest,
            amd64_manifest_digest,
            repositories,
            corrupt_layer,
            corrupt_manifest,
        }
    }

    pub fn layout_dir(&self, repository: &str) -> PathBuf {
        self.root.path().join(repository)
    }
}

/// `siderolabs/imager`: the main image and its signature variants.
fn imager(dir: &Path, key: &SigningKey) -> (String, String, Vec<String>) {
    let mut layout = Layout::new(dir);
    let lower = tar(&[
        E::Dir("etc", 0o755),
        E::File("etc/a.txt", b"a1", 0o644),
        E::File("etc/b.txt", b"b1", 0o644),
        E::Dir("opt", 0o755),
        E::Dir("opt/old", 0o755),
        E::File("opt/old/x", b"x", 0o644),
        E::File("opt/keep-no", b"gone with the opaque dir", 0o644),
        E::Dir("usr", 0o755),
        E::Dir("usr/lib", 0o755),
        E::File("usr/lib/libc.so", b"libc", 0o755),
        E::Symlink("lib", "usr/lib"),
        E::Dir("usr/install", 0o755),
        E::Dir("usr/install/amd64", 0o755),
        E::File("usr/install/amd64/vmlinuz", b"kernel-amd64", 0o644),
        E::Dir("bin", 0o755),
        E::File("bin/tool", b"#!/bin/sh\necho tool\n", 0o755),
        E::Hardlink("bin/tool2", "bin/tool"),
        E::Dir("private", 0o700),
        E::File("private/secret", b"s", 0o600),
        E::Dir("readonly", 0o555),
        E::File("readonly/file", b"r", 0o444),
    ]);
    let upper = tar(&[
        E::File("etc/.wh.b.txt", b"", 0o644),
        E::File("etc/a.txt", b"a2", 0o644),
        E::File("opt/new", b"new", 0o644),
        E::File("opt/.wh..wh..opq", b"", 0o644),
        E::File("opt/after", b"after", 0o644),
        E::File("catalog.yaml", b"overlays: []\n", 0o644),
        // Through the `lib -> usr/lib` symlink of the lower layer.
        E::File("lib/added.so", b"added", 0o644),
    ]);
    let amd64 = layout.image(
        "amd64",
        &[
            (lower.clone(), gzip(&lower), OCI_GZIP),
            (upper.clone(), zstd(&upper), OCI_ZSTD),
        ],
        false,
    );
    let arm_tar = tar(&[
        E::File("arch", b"arm64", 0o644),
        E::Dir("usr/install/arm64", 0o755),
        E::File("usr/install/arm64/vmlinuz", b"kernel-arm64", 0o644),
    ]);
    let arm64 = layout.image("arm64", &[(arm_tar.clone(), arm_tar.clone(), OCI_TAR)], false);

    let index = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")], false, "");
    let index_digest = sha256(&index);
    for tag in ["v1.0.0", "v1.1.0", "v1.2.0-alpha.1", "latest"] {
        layout.tag(tag, &index);
    }
    layout.sign(&index_digest, &index_digest, Signing::Key(key));

    // Unsigned, and without arm64.
    let amd64_only = layout.index(&[(&amd64, "amd64")], false, "");
    layout.tag("amd64-only", &amd64_only);

    // A signature over other bytes: does not verify.
    let tampered = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")], false, "tampered");
    layout.tag("tampered", &tampered);
    layout.sign(&sha256(&tampered), &sha256(&tampered), Signing::OtherMessage(key));

    // A valid signature of a payload naming another image (a replayed signature).
    let replayed = layout.index(&[(&amd64, "amd64"), (&arm64, "arm64")], false, "replayed");
    layout.tag("replayed", &replayed);
    layout.sign(&sha256(&replayed), &index_digest, Signing::Key(key));

    // A single-platform manifest with a file over the read_files limit.
    let big = vec![0u8; BIG];
    let single_tar = tar(&[
        E::File("small.txt", b"small", 0o644),
        E::File("big.bin", &big, 0o644),
    ]);
    let single = layout.image(
        "amd64",
        &[(single_tar.clone(), gzip(&single_tar), OCI_GZIP)],
        false,
    );
    layout.tag("single", &single);

    // Docker v2 media types.
    let docker_tar = tar(&[E::File("docker.txt", b"docker", 0o644)]);
    let docker_amd64 = layout.image(
        "amd64",
        &[(docker_tar.clone(), gzip(&docker_tar), DOCKER_GZIP)],
        true,
    );
    let docker_arm_tar = tar(&[E::File("docker.txt", b"docker-arm", 0o644)]);
    let docker_arm64 = layout.image(
        "arm64",
        &[(docker_arm_tar.clone(), gzip(&docker_arm_tar), DOCKER_GZIP)],
        true,
    );
    let docker = layout.index(&[(&docker_amd64, "amd64"), (&docker_arm64, "arm64")], true, "");
    layout.tag("docker", &docker);
    layout.sign(&sha256(&docker), &sha256(&docker), Signing::Key(key));

    layout.finish();
    (index_digest, sha256(&amd64), layout.tags())
}

/// `corrupt/image`: blobs nothing else shares (registries store blobs once for all
/// repositories), which the digest checks corrupt in place.
fn corrupt(dir: &Path) -> (String, String, Vec<String>) {
    let mut layout = Layout::new(dir);
    // Uncompressed, so that changing a content byte keeps a valid tar: only the digest check
    // can notice.
    let layer_tar = tar(&[E::File(
        "only-here.txt",
        b"unique content for the corrupt layer test",
        0o644,
    )]);
    let layer = layer_tar.clone();
    let image = layout.image("amd64", &[(layer_tar.clone(), layer.clone(), OCI_TAR)], false);
    let index = layout.index(&[(&image, "amd64")], false, "corrupt-layer");
    layout.tag("layer", &index);

    let other_tar = tar(&[E::File("manifest-test.txt", b"another unique file", 0o644)]);
    let other = layout.image("arm64", &[(other_tar.clone(), other_tar.clone(), OCI_TAR)], false);
    let index = layout.index(&[(&other, "arm64")], false, "corrupt-manifest");
    layout.tag("manifest", &index);
    layout.finish();
    (sha256(&layer), sha256(&other), layout.tags())
}

/// `evil/image`: hostile layers.
fn evil(dir: &Path) -> Vec<String> {
    let mut layout = Layout::new(dir);
    let escape = tar(&[
        E::File("fine.txt", b"fine", 0o644),
        E::RawName(b"../escape.txt", b"escaped"),
    ]);
    let image = layout.image("amd64", &[(escape.clone(), escape, OCI_TAR)], false);
    layout.tag("dotdot", &image);

    let absolute = tar(&[E::RawName(b"/abs.txt", b"absolute")]);
    let image = layout.image("amd64", &[(absolute.clone(), absolute, OCI_TAR)], false);
    layout.tag("absolute", &image);

    let links = tar(&[
        E::Symlink(
            "up",
            "../../../../../../../../../../tmp/factory-upstream-escape-test",
        ),
        E::File("up/pwned", b"pwned", 0o644),
        E::Symlink("abs", "/etc"),
        E::File("abs/factory-upstream-escape-test", b"pwned", 0o644),
    ]);
    let image = layout.image("amd64", &[(links.clone(), gzip(&links), OCI_GZIP)], false);
    layout.tag("symlinks", &image);
    layout.finish();
    layout.tags()
}
