//! A registry job end to end: the stand-in Talos release (`tools/stand-in-release`, read as OCI
//! layouts) → the installer images of both architectures → the published, signed index → read
//! back and verified; then `skopeo` (an independent OCI implementation) copies the published
//! multi-arch image and its signature image out of the store, checking every digest.

// Panicking is how a test reports failure.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use factory_assets::{base_installer_repository, BuildInputs};
use factory_core::arch::Arch;
use factory_core::profile::{enhance, parse_path};
use factory_core::schematic::Schematic;
use factory_core::version::TalosVersion;
use factory_pipeline::Assembler;
use factory_registry::job::{registry_job, PlatformBuild};
use factory_registry::keys::BLOB_PREFIX;
use factory_registry::media;
use factory_registry::name::ImageName;
use factory_registry::oci::ImageIndex;
use factory_registry::{FactoryAssembler, RegistryReader, TagRecord};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::ContentStore;
use factory_upstream::Upstream;
use serde_json::json;

const VERSION: &str = "v1.12.1";
const SCHEMATIC_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

struct Release {
    _dir: tempfile::TempDir,
    upstream: Arc<Upstream>,
}

fn release() -> Release {
    let dir = tempfile::tempdir().unwrap();
    stand_in_release::generate_with_placeholders(dir.path()).unwrap();
    let upstream = Arc::new(Upstream::from_layout_dir(dir.path()).unwrap());
    Release { _dir: dir, upstream }
}

/// The installer asset of `path` as the request side would enqueue it.
async fn platform_build(upstream: &Upstream, path: &str, arch: Arch) -> PlatformBuild {
    let schematic = Schematic::default();
    let profile = enhance(
        parse_path(path).unwrap(),
        &schematic,
        &TalosVersion::parse(VERSION).unwrap(),
    )
    .unwrap();
    let imager = upstream.resolve("siderolabs/imager", VERSION).await.unwrap();
    let mut inputs = BuildInputs::new(&profile, &schematic, imager.digest, &[], "http://factory.test/");
    if let Some(repository) = base_installer_repository(&profile, &upstream.config().components) {
        let base = upstream.resolve(repository, VERSION).await.unwrap();
        inputs = inputs.with_base_installer(base.digest);
    }
    PlatformBuild {
        arch,
        cache_key: profile.cache_key(inputs.digests(), "test"),
        spec: inputs.spec(&profile),
    }
}

fn have_skopeo() -> bool {
    let found = Command::new("skopeo").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping the skopeo checks: skopeo is not installed");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Lays the store's blobs out as an OCI image layout with the given tags (name → descriptor).
async fn oci_layout(store: &dyn ContentStore, dir: &Path, tags: &[(&str, &str, String, u64)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for key in store.list(BLOB_PREFIX).await.unwrap() {
        let (_, bytes) = store.get(&key).await.unwrap().unwrap();
        std::fs::write(blobs.join(key.trim_start_matches(BLOB_PREFIX)), &bytes).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let manifests: Vec<_> = tags
        .iter()
        .map(|(name, media_type, digest, size)| {
            json!({"mediaType": media_type, "digest": digest, "size": size,
                   "annotations": {"org.opencontainers.image.ref.name": name}})
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_job_publishes_a_signed_multi_arch_installer() {
    let release = tokio::task::spawn_blocking(release).await.unwrap();
    let image = ImageName::parse("metal-installer").unwrap();
    let mut platforms = Vec::new();
    for arch in Arch::ALL {
        platforms.push(platform_build(&release.upstream, &image.installer_path(arch), arch).await);
    }
    let identity = format!("factory.test:8080/{}/{SCHEMATIC_ID}", image.image());
    let (cache_key, spec) = registry_job(&identity, VERSION, &platforms);
    assert!(factory_pipeline::keys::validate_cache_key(&cache_key).is_ok());

    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(FsStore::new(dir.path().join("store")).unwrap());
    let key = Arc::new(SigningKey::generate());
    let assembler = FactoryAssembler::new(release.upstream.clone(), store.clone(), key.clone());
    let mut out = Vec::new();
    let meta = assembler.assemble(&spec, &mut out).await.unwrap();
    assert_eq!(meta.file_name, "installer-index.json");
    assert_eq!(meta.content_type, "application/json");
    for input in [
        "amd64/imager",
        "amd64/base-installer",
        "arm64/imager",
        "arm64/base-installer",
    ] {
        assert!(
            meta.input_digests.contains_key(input),
            "{input}: {:?}",
            meta.input_digests
        );
    }
    let record: TagRecord = serde_json::from_slice(&out).unwrap();
    assert_eq!(record.identity, identity);
    assert_eq!(record.tag, VERSION);

    let reader = RegistryReader::from_public_key_pem(store.clone(), &key.public_key_pem()).unwrap();
    reader.verify(&record).await.unwrap();
    let index = reader.manifest(&record.digest).await.unwrap().unwrap();
    let index: ImageIndex = serde_json::from_slice(&index.bytes).unwrap();
    let archs: Vec<_> = index
        .manifests
        .iter()
        .map(|m| m.platform.as_ref().unwrap().architecture.clone())
        .collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // Rebuilding the tag gives the same bytes, so the same digests and signature.
    let mut again = Vec::new();
    assembler.assemble(&spec, &mut again).await.unwrap();
    assert_eq!(out, again);

    // The same assembler still builds release assets.
    let cmdline = platform_build(&release.upstream, "cmdline-metal-amd64", Arch::Amd64).await;
    let mut bytes = Vec::new();
    let meta = assembler.assemble(&cmdline.spec, &mut bytes).await.unwrap();
    assert_eq!(meta.file_name, "cmdline-metal-amd64");
    assert!(String::from_utf8(bytes).unwrap().contains("talos.platform=metal"));

    if !have_skopeo() {
        return;
    }
    let signature = reader.signature_manifest(&record.digest).await.unwrap().unwrap();
    let sig_tag = format!("{}.sig", record.digest.replace(':', "-"));
    let layout = dir.path().join("layout");
    oci_layout(
        store.as_ref(),
        &layout,
        &[
            (VERSION, media::OCI_INDEX, record.digest.clone(), record.size),
            (
                &sig_tag,
                media::OCI_MANIFEST,
                signature.digest.clone(),
                signature.bytes.len() as u64,
            ),
        ],
    )
    .await;
    let raw = run(Command::new("skopeo")
        .arg("inspect")
        .arg("--raw")
        .arg(format!("oci:{}:{VERSION}", layout.display())));
    assert_eq!(
        raw.as_bytes(),
        &reader.manifest(&record.digest).await.unwrap().unwrap().bytes[..]
    );
    for arch in ["amd64", "arm64"] {
        let inspect = run(Command::new("skopeo")
            .args(["--override-os", "linux", "--override-arch", arch, "inspect"])
            .arg(format!("oci:{}:{VERSION}", layout.display())));
        let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert_eq!(inspect["Architecture"], arch, "{inspect}");
    }
    // Copying reads every blob of both images and of the signature image and checks its digest.
    let copy = dir.path().join("copy");
    run(Command::new("skopeo")
        .args(["copy", "--all"])
        .arg(format!("oci:{}:{VERSION}", layout.display()))
        .arg(format!("oci:{}:x", copy.display())));
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("oci:{}:{sig_tag}", layout.display()))
        .arg(format!("oci:{}:sig", copy.display())));
}
