//! One suite, two sources: the test release as OCI layouts read by `LayoutSource`, and the same
//! layouts pushed by skopeo to a real registry (Debian's docker-registry) read by
//! `RegistrySource` through a namespace prefix and with tag pagination.

mod oci_support;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use factory_core::arch::Arch;
use factory_upstream::{
    LayoutSource, OciSource, RegistrySource, ResolvedImage, Upstream, UpstreamConfig, UpstreamError,
    Verification,
};
use oci_support::fixture::{Fixture, CORRUPT, EVIL, IMAGER};
use oci_support::registry::{free_port, Registry};

type Corrupt = Box<dyn Fn(&str, &dyn Fn(&mut Vec<u8>)) + Send + Sync>;

struct Backend {
    source: Arc<dyn OciSource>,
    /// Rewrites a stored blob in place (as a broken disk or a malicious mirror would).
    corrupt: Corrupt,
}

fn upstream(backend: &Backend, verification: Verification) -> Upstream {
    Upstream::new(backend.source.clone(), UpstreamConfig::new(verification))
}

fn key(pem: &str) -> Verification {
    Verification::from_public_key_pem(pem).expect("test key")
}

async fn resolve_unverified(backend: &Backend, repository: &str, tag: &str) -> ResolvedImage {
    upstream(backend, Verification::Disabled)
        .resolve(repository, tag)
        .await
        .unwrap_or_else(|e| panic!("resolve {repository}:{tag}: {e}"))
}

fn expect_signature_error(result: Result<ResolvedImage, UpstreamError>, needle: &str) {
    match result {
        Err(UpstreamError::Signature { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            )
        }
        other => panic!("expected a signature error mentioning {needle:?}, got {other:?}"),
    }
}

fn expect_invalid<T: std::fmt::Debug>(result: Result<T, UpstreamError>, needle: &str) {
    match result {
        Err(UpstreamError::Invalid { reason, .. }) => {
            assert!(
                reason.contains(needle),
                "reason {reason:?} should mention {needle:?}"
            )
        }
        other => panic!("expected Invalid mentioning {needle:?}, got {other:?}"),
    }
}

fn expect_not_found<T: std::fmt::Debug>(result: Result<T, UpstreamError>, needle: &str) {
    match result {
        Err(UpstreamError::NotFound(what)) => {
            assert!(what.contains(needle), "{what:?} should mention {needle:?}")
        }
        other => panic!("expected NotFound mentioning {needle:?}, got {other:?}"),
    }
}

async fn suite(backend: &Backend, fx: &Fixture) {
    tags(backend, fx).await;
    signatures(backend, fx).await;
    read_files(backend, fx).await;
    extract(backend, fx).await;
    platforms(backend).await;
    not_found(backend).await;
    hostile_layers(backend).await;
    // Last: it damages the stored blobs of `corrupt/image`.
    digest_mismatch(backend, fx).await;
}

async fn tags(backend: &Backend, fx: &Fixture) {
    let up = upstream(backend, Verification::Disabled);
    let mut got = up.tags(IMAGER).await.expect("tags");
    got.sort();
    let mut expected = fx
        .repositories
        .iter()
        .find(|(r, _)| r == IMAGER)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    expected.sort();
    assert_eq!(got, expected);
    assert!(got.iter().any(|t| t.ends_with(".sig")));
}

async fn signatures(backend: &Backend, fx: &Fixture) {
    let good = upstream(backend, key(&fx.public_pem));
    let resolved = good
        .resolve(IMAGER, "v1.0.0")
        .await
        .expect("signed image verifies");
    assert_eq!(resolved.digest, fx.index_digest, "digests survive the copy");
    assert_eq!(
        resolved.manifest.media_type,
        "application/vnd.oci.image.index.v1+json"
    );
    let by_digest = good.resolve(IMAGER, &fx.index_digest).await.expect("by digest");
    assert_eq!(by_digest.manifest.bytes, resolved.manifest.bytes);
    good.resolve(IMAGER, "docker")
        .await
        .expect("Docker list verifies");

    let wrong = upstream(backend, key(&fx.wrong_pem));
    expect_signature_error(
        wrong.resolve(IMAGER, "v1.0.0").await,
        "does not verify with the configured key",
    );
    expect_signature_error(
        good.resolve(IMAGER, "tampered").await,
        "does not verify with the configured key",
    );
    expect_signature_error(good.resolve(IMAGER, "replayed").await, "does not match the image");
    expect_signature_error(good.resolve(IMAGER, "amd64-only").await, "no signature");

    let disabled = upstream(backend, Verification::Disabled);
    let unsigned = disabled
        .resolve(IMAGER, "amd64-only")
        .await
        .expect("verification disabled");
    assert_eq!(unsigned.reference, "amd64-only");
    disabled
        .resolve(IMAGER, "tampered")
        .await
        .expect("verification disabled");
}

async fn read_files(backend: &Backend, fx: &Fixture) {
    let up = upstream(backend, key(&fx.public_pem));
    let image = up.resolve(IMAGER, "v1.0.0").await.expect("resolve");
    let files = up
        .read_files(
            &image,
            Arch::Amd64,
            &[
                "etc/a.txt",
                "etc/b.txt",
                "opt/old/x",
                "opt/keep-no",
                "opt/new",
                "opt/after",
                "catalog.yaml",
                "/usr/install/amd64/vmlinuz",
                "missing/file",
                "etc",
            ],
        )
        .await
        .expect("read_files amd64");
    let keys: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "/usr/install/amd64/vmlinuz",
            "catalog.yaml",
            "etc/a.txt",
            "opt/after",
            "opt/new"
        ]
    );
    assert_eq!(files["etc/a.txt"], b"a2", "the upper layer wins");
    assert_eq!(files["opt/new"], b"new");
    assert_eq!(files["opt/after"], b"after");
    assert_eq!(files["catalog.yaml"], b"overlays: []\n");
    assert_eq!(files["/usr/install/amd64/vmlinuz"], b"kernel-amd64");

    let arm = up
        .read_files(
            &image,
            Arch::Arm64,
            &["arch", "usr/install/arm64/vmlinuz", "etc/a.txt"],
        )
        .await;
    let arm = arm.expect("read_files arm64");
    assert_eq!(arm.get("arch").map(Vec::as_slice), Some(&b"arm64"[..]));
    assert_eq!(
        arm.get("usr/install/arm64/vmlinuz").map(Vec::as_slice),
        Some(&b"kernel-arm64"[..])
    );
    assert!(!arm.contains_key("etc/a.txt"));

    let docker = up.resolve(IMAGER, "docker").await.expect("resolve docker");
    let d = up
        .read_files(&docker, Arch::Arm64, &["docker.txt"])
        .await
        .expect("docker media types");
    assert_eq!(d.get("docker.txt").map(Vec::as_slice), Some(&b"docker-arm"[..]));

    let single = resolve_unverified(backend, IMAGER, "single").await;
    let small = up
        .read_files(&single, Arch::Amd64, &["small.txt"])
        .await
        .expect("single manifest");
    assert_eq!(small.get("small.txt").map(Vec::as_slice), Some(&b"small"[..]));
    expect_invalid(up.read_files(&single, Arch::Amd64, &["big.bin"]).await, "limit");
    expect_invalid(
        up.read_files(&single, Arch::Amd64, &["../x"]).await,
        "leaves the image root",
    );
    assert!(up
        .read_files(&single, Arch::Amd64, &[])
        .await
        .expect("nothing asked")
        .is_empty());
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

async fn extract(backend: &Backend, fx: &Fixture) {
    let up = upstream(backend, key(&fx.public_pem));
    let image = up.resolve(IMAGER, "v1.0.0").await.expect("resolve");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");
    let summary = up
        .extract(&image, Arch::Amd64, &root, &|_| true)
        .await
        .expect("extract");

    assert_eq!(read(&root.join("etc/a.txt")), b"a2");
    assert!(!root.join("etc/b.txt").exists(), "whiteout");
    assert!(!root.join("opt/old").exists(), "opaque directory");
    assert!(!root.join("opt/keep-no").exists(), "opaque directory");
    assert_eq!(
        read(&root.join("opt/new")),
        b"new",
        "the opaque layer's own entries stay"
    );
    assert_eq!(
        read(&root.join("opt/after")),
        b"after",
        "entries after the marker stay too"
    );
    assert_eq!(read(&root.join("catalog.yaml")), b"overlays: []\n");
    assert_eq!(
        std::fs::read_link(root.join("lib")).expect("symlink"),
        Path::new("usr/lib")
    );
    assert_eq!(
        read(&root.join("usr/lib/added.so")),
        b"added",
        "written through the symlink, inside the root"
    );
    assert_eq!(mode(&root.join("bin/tool")), 0o755);
    assert_eq!(mode(&root.join("etc/a.txt")), 0o644);
    assert_eq!(mode(&root.join("private")), 0o700);
    assert_eq!(mode(&root.join("private/secret")), 0o600);
    assert_eq!(mode(&root.join("readonly")), 0o555);
    assert_eq!(mode(&root.join("readonly/file")), 0o444);
    let tool = std::fs::metadata(root.join("bin/tool")).expect("tool");
    let tool2 = std::fs::metadata(root.join("bin/tool2")).expect("tool2");
    assert_eq!(tool.ino(), tool2.ino(), "hard link");
    assert!(!root.join("arch").exists(), "amd64 only");

    let expected: Vec<&[u8]> = vec![
        b"a2",
        b"libc",
        b"kernel-amd64",
        b"#!/bin/sh\necho tool\n",
        b"#!/bin/sh\necho tool\n",
        b"s",
        b"r",
        b"new",
        b"after",
        b"overlays: []\n",
        b"added",
    ];
    assert_eq!(summary.files, expected.len() as u64, "{summary:?}");
    assert_eq!(
        summary.bytes,
        expected.iter().map(|c| c.len() as u64).sum::<u64>(),
        "{summary:?}"
    );
    // Let the temporary directory be removed whoever runs the tests.
    std::fs::set_permissions(root.join("readonly"), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let filtered = dir.path().join("filtered");
    let only_install = |p: &str| p.starts_with("usr/install/");
    let summary = up
        .extract(&image, Arch::Amd64, &filtered, &only_install)
        .await
        .expect("filtered extract");
    assert_eq!(summary.files, 1);
    assert_eq!(read(&filtered.join("usr/install/amd64/vmlinuz")), b"kernel-amd64");
    assert!(!filtered.join("etc").exists());
    assert!(!filtered.join("lib").exists());

    let arm = dir.path().join("arm");
    up.extract(&image, Arch::Arm64, &arm, &|_| true)
        .await
        .expect("arm64 extract");
    assert_eq!(read(&arm.join("arch")), b"arm64");
}

async fn platforms(backend: &Backend) {
    let up = upstream(backend, Verification::Disabled);
    let single = resolve_unverified(backend, IMAGER, "single").await;
    expect_not_found(
        up.read_files(&single, Arch::Arm64, &["small.txt"]).await,
        "linux/amd64",
    );
    let amd64_only = resolve_unverified(backend, IMAGER, "amd64-only").await;
    let dir = tempfile::tempdir().expect("tempdir");
    expect_not_found(
        up.extract(&amd64_only, Arch::Arm64, dir.path(), &|_| true).await,
        "available platforms: linux/amd64",
    );
}

async fn not_found(backend: &Backend) {
    let up = upstream(backend, Verification::Disabled);
    expect_not_found(up.resolve(IMAGER, "v9.9.9").await, "v9.9.9");
    expect_not_found(up.tags("siderolabs/nonexistent").await, "nonexistent");
    expect_not_found(
        up.resolve("siderolabs/nonexistent", "v1.0.0").await,
        "nonexistent",
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    expect_not_found(up.resolve(IMAGER, &missing).await, "sha256:");
}

async fn hostile_layers(backend: &Backend) {
    let up = upstream(backend, Verification::Disabled);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("rootfs");

    let dotdot = resolve_unverified(backend, EVIL, "dotdot").await;
    expect_invalid(
        up.extract(&dotdot, Arch::Amd64, &root, &|_| true).await,
        "leaves the image root",
    );
    assert!(!dir.path().join("escape.txt").exists());
    expect_invalid(
        up.read_files(&dotdot, Arch::Amd64, &["fine.txt"]).await,
        "leaves the image root",
    );

    let absolute = resolve_unverified(backend, EVIL, "absolute").await;
    expect_invalid(
        up.extract(&absolute, Arch::Amd64, &root, &|_| true).await,
        "absolute",
    );

    let links = resolve_unverified(backend, EVIL, "symlinks").await;
    let root = dir.path().join("links");
    up.extract(&links, Arch::Amd64, &root, &|_| true)
        .await
        .expect("symlinks stay inside");
    assert!(!Path::new("/tmp/factory-upstream-escape-test/pwned").exists());
    assert!(!Path::new("/etc/factory-upstream-escape-test").exists());
    assert_eq!(
        read(&root.join("tmp/factory-upstream-escape-test/pwned")),
        b"pwned"
    );
    assert_eq!(read(&root.join("etc/factory-upstream-escape-test")), b"pwned");
}

async fn digest_mismatch(backend: &Backend, fx: &Fixture) {
    let up = upstream(backend, Verification::Disabled);

    // A content byte of the only file (after the 512-byte tar header): still a valid tar.
    (backend.corrupt)(&fx.corrupt_layer, &|bytes| bytes[512] ^= 0x20);
    let image = resolve_unverified(backend, CORRUPT, "layer").await;
    expect_invalid(
        up.read_files(&image, Arch::Amd64, &["only-here.txt"]).await,
        "digest mismatch",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    expect_invalid(
        up.extract(&image, Arch::Amd64, dir.path(), &|_| true).await,
        "digest mismatch",
    );

    // One hex digit of the config digest inside the manifest: still a valid manifest.
    (backend.corrupt)(&fx.corrupt_manifest, &|bytes| {
        let at = bytes.windows(7).position(|w| w == b"sha256:").expect("a digest") + 7;
        bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    });
    let image = resolve_unverified(backend, CORRUPT, "manifest").await;
    expect_invalid(
        up.read_files(&image, Arch::Arm64, &["manifest-test.txt"]).await,
        "digest mismatch",
    );
    expect_invalid(
        backend.source.manifest(CORRUPT, &fx.corrupt_manifest).await,
        "digest mismatch",
    );
}

fn rewrite(path: &Path, mutate: &dyn Fn(&mut Vec<u8>)) {
    let mut bytes = read(path);
    mutate(&mut bytes);
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_source() {
    let fx = Fixture::build();
    let root = fx.root.path().to_path_buf();
    let backend = Backend {
        source: Arc::new(LayoutSource::new(&root)),
        corrupt: Box::new(move |digest, mutate| {
            let hex = digest.trim_start_matches("sha256:");
            rewrite(&root.join(CORRUPT).join("blobs/sha256").join(hex), mutate)
        }),
    };
    assert!(backend.source.describe().contains("OCI layouts"));
    suite(&backend, &fx).await;
}

/// The default (current-thread) runtime on purpose: the blocking layer readers must not need a
/// second runtime thread to make progress.
#[tokio::test]
async fn registry_source() {
    let fx = Fixture::build();
    let registry = Arc::new(Registry::start());
    for (repository, tags) in &fx.repositories {
        for tag in tags {
            registry.push(&fx.layout_dir(repository), tag, &format!("proxy/{repository}"));
        }
    }
    let source = RegistrySource::new(&registry.url(), "proxy")
        .expect("registry source")
        .with_page_size(2);
    assert_eq!(source.describe(), format!("registry {}/proxy", registry.url()));
    let handle = registry.clone();
    let backend = Backend {
        source: Arc::new(source),
        corrupt: Box::new(move |digest, mutate| rewrite(&handle.blob_data(digest), mutate)),
    };
    suite(&backend, &fx).await;
}

#[tokio::test]
async fn unreachable_registry_is_unavailable_quickly() {
    let port = free_port();
    let source = RegistrySource::new(&format!("http://127.0.0.1:{port}"), "").expect("source");
    let up = Upstream::new(Arc::new(source), UpstreamConfig::new(Verification::Disabled));
    let started = Instant::now();
    match up.tags(IMAGER).await {
        Err(UpstreamError::Unavailable { source_name, message }) => {
            assert!(source_name.contains(&port.to_string()), "{source_name}");
            assert!(message.contains("tags of siderolabs/imager"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(matches!(
        up.resolve(IMAGER, "v1.0.0").await,
        Err(UpstreamError::Unavailable { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

/// The fixture's signatures are standard ones: openssl verifies them as cosign's format says
/// (spec §9.4), so the verifier is tested against the real format, not against itself.
#[test]
fn fixture_signature_verifies_with_openssl() {
    let fx = Fixture::build();
    let layout = fx.layout_dir(IMAGER);
    let index: serde_json::Value =
        serde_json::from_slice(&read(&layout.join("index.json"))).expect("index.json");
    let sig_tag = format!("{}.sig", fx.index_digest.replacen(':', "-", 1));
    let entry = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter()
                .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == sig_tag.as_str())
        })
        .expect("signature tag");
    let blob = |digest: &str| {
        read(
            &layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
    };
    let manifest = blob(entry["digest"].as_str().unwrap_or_default());
    let layer = oci_support::layout::first_layer(&manifest);
    let payload = blob(&layer["digest"]);
    use base64::Engine as _;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&layer["signature"])
        .expect("base64");

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("key.pub"), &fx.public_pem).expect("write");
    std::fs::write(dir.path().join("sig.der"), der).expect("write");
    std::fs::write(dir.path().join("payload.json"), &payload).expect("write");
    let out = std::process::Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            "key.pub",
            "-signature",
            "sig.der",
            "payload.json",
        ])
        .current_dir(dir.path())
        .output()
        .expect("openssl (scripts/install-test-deps installs it)");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claimed: serde_json::Value = serde_json::from_slice(&payload).expect("payload");
    assert_eq!(
        claimed["critical"]["image"]["docker-manifest-digest"],
        fx.index_digest.as_str()
    );
    assert_eq!(fx.amd64_manifest_digest.len(), 71);
}
