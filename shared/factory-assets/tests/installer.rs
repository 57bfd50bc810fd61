//! The `installer` asset built from the stand-in Talos release (`tools/stand-in-release`, read as
//! OCI layouts, signatures verified) by the [`ReleaseAssembler`], checked with independent tools:
//! `skopeo` reads the tarball as a `docker-archive:` and an `oci-archive:` and copies it into an
//! OCI layout (checking every layer against its diff ID), GNU `tar` lists the layers.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use factory_assets::{base_installer_repository, BuildInputs, ReleaseAssembler};
use factory_core::profile::{enhance, parse_path, Profile};
use factory_core::schematic::Schematic;
use factory_core::version::TalosVersion;
use factory_pipeline::{AssembledMeta, Assembler};
use factory_upstream::Upstream;

const FACTORY_URL: &str = "http://factory.test/";
const EXTRA_ARG: &str = "installer.test=1";

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

fn schematic() -> Schematic {
    Schematic::parse(format!("customization:\n  extraKernelArgs:\n    - {EXTRA_ARG}\n").as_bytes()).unwrap()
}

/// The spec the request side makes for `path` at `version`: digests resolved from the release.
async fn spec_for(release: &Release, path: &str, version: &str) -> (Profile, serde_json::Value) {
    let schematic = schematic();
    let profile = enhance(
        parse_path(path).unwrap(),
        &schematic,
        &TalosVersion::parse(version).unwrap(),
    )
    .unwrap();
    let upstream = &release.upstream;
    let imager = upstream.resolve("siderolabs/imager", version).await.unwrap();
    let mut inputs = BuildInputs::new(&profile, &schematic, imager.digest, &[], FACTORY_URL);
    if let Some(repository) = base_installer_repository(&profile, &upstream.config().components) {
        let base = upstream.resolve(repository, version).await.unwrap();
        inputs = inputs.with_base_installer(base.digest);
    }
    let spec = inputs.spec(&profile);
    (profile, spec)
}

async fn assemble(release: &Release, spec: &serde_json::Value, out: &Path) -> AssembledMeta {
    let assembler = ReleaseAssembler::new(release.upstream.clone());
    let mut file = tokio::fs::File::create(out).await.unwrap();
    let meta = assembler.assemble(spec, &mut file).await.unwrap();
    tokio::io::AsyncWriteExt::flush(&mut file).await.unwrap();
    meta
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

fn have_skopeo() -> bool {
    let found = Command::new("skopeo").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipping: skopeo is not installed");
    }
    found
}

/// The layers of the tarball (extracted into `scratch/x`) in manifest order, via `manifest.json`.
fn layers(tarball: &Path, scratch: &Path) -> Vec<PathBuf> {
    let dir = scratch.join("x");
    std::fs::create_dir(&dir).unwrap();
    run(Command::new("tar").arg("-xf").arg(tarball).arg("-C").arg(&dir));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| dir.join(l.as_str().unwrap()))
        .collect()
}

/// Unpacks a (gzipped) layer into `scratch/artifacts`, which it returns.
fn unpack(layer: &Path, scratch: &Path) -> PathBuf {
    let unpacked = scratch.join("artifacts");
    std::fs::create_dir(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(layer)
        .arg("-C")
        .arg(&unpacked));
    unpacked
}

fn list(layer: &Path) -> Vec<String> {
    run(Command::new("tar").arg("-tzf").arg(layer))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Checks the tarball with skopeo; the `skopeo inspect docker-archive:` JSON.
fn skopeo_checks(tarball: &Path, scratch: &Path) -> serde_json::Value {
    let inspect = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", tarball.display())));
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let oci = run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci-archive:{}", tarball.display())));
    let oci: serde_json::Value = serde_json::from_str(&oci).unwrap();
    assert_eq!(oci["Layers"].as_array().unwrap().len(), 2, "{oci}");
    assert_eq!(oci["Architecture"], "amd64");
    // The copy reads every layer and checks it against the config's diff IDs.
    let copy = scratch.join("copy");
    run(Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", tarball.display()))
        .arg(format!("oci:{}:x", copy.display())));
    assert!(copy.join("index.json").is_file());
    inspect
}

/// An installer asset built into a scratch directory.
struct Built {
    release: Release,
    spec: serde_json::Value,
    meta: AssembledMeta,
    scratch: tempfile::TempDir,
    /// `scratch/installer.tar`.
    tarball: PathBuf,
}

/// Builds the installer asset `path` at `version` from a fresh release; `None` (the test is
/// skipped) without skopeo.
async fn build_installer(path: &str, version: &str) -> Option<Built> {
    if !have_skopeo() {
        return None;
    }
    let release = tokio::task::spawn_blocking(release).await.unwrap();
    let (_, spec) = spec_for(&release, path, version).await;
    let scratch = tempfile::tempdir().unwrap();
    let tarball = scratch.path().join("installer.tar");
    let meta = assemble(&release, &spec, &tarball).await;
    Some(Built {
        release,
        spec,
        meta,
        scratch,
        tarball,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unified_installer_is_a_loadable_image() {
    let version = "v1.12.1";
    let Some(built) = build_installer("installer-amd64.tar", version).await else {
        return;
    };
    let (release, meta, scratch, tarball) =
        (&built.release, &built.meta, built.scratch.path(), &built.tarball);
    assert_eq!(meta.file_name, "metal-installer-amd64.tar");
    assert_eq!(meta.content_type, "application/x-tar");
    assert!(meta.input_digests.contains_key("base-installer"));

    // Deterministic: a second build gives the same bytes.
    let again = scratch.join("again.tar");
    assemble(release, &built.spec, &again).await;
    assert!(std::fs::read(tarball).unwrap() == std::fs::read(&again).unwrap());

    let inspect = skopeo_checks(tarball, scratch);
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Labels"]["alpha.talos.dev/version"], version);
    assert!(
        inspect["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == &format!("VERSION={version}")),
        "{inspect}"
    );
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);

    let layers = layers(tarball, scratch);
    assert_eq!(layers.len(), 2);
    let base = list(&layers[0]);
    assert!(base.iter().any(|p| p == "usr/bin/installer"), "{base:?}");
    assert_eq!(
        list(&layers[1]),
        [
            "usr/",
            "usr/install/",
            "usr/install/amd64/",
            "usr/install/amd64/systemd-boot.efi",
            "usr/install/amd64/vmlinuz.efi",
        ]
    );
    let verbose = run(Command::new("tar").arg("-tvzf").arg(&layers[1]));
    assert!(
        verbose
            .lines()
            .all(|l| l.contains("0/0") && l.contains("1970-01-01")),
        "{verbose}"
    );
    // The UKI carries the profile's command line (extra args from 1.10) and the reset profile.
    let unpacked = unpack(&layers[1], scratch);
    let uki = std::fs::read(unpacked.join("usr/install/amd64/vmlinuz.efi")).unwrap();
    let contains = |needle: &str| uki.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains(EXTRA_ARG));
    assert!(contains("talos.experimental.wipe=system:EPHEMERAL,STATE"));
    assert!(contains("ID=reset-maintenance"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_installer_replaces_the_boot_assets_layer() {
    let version = "v1.9.5";
    let Some(built) = build_installer("aws-installer-amd64.tar", version).await else {
        return;
    };
    let (release, meta, scratch, tarball) =
        (&built.release, &built.meta, built.scratch.path(), &built.tarball);
    assert_eq!(meta.file_name, "aws-installer-amd64.tar");

    let inspect = skopeo_checks(tarball, scratch);
    assert_eq!(inspect["Labels"]["alpha.talos.dev/version"], version);

    let layers = layers(tarball, scratch);
    // The base's boot assets layer is dropped: its first layer, then ours.
    assert_eq!(layers.len(), 2);
    let base = list(&layers[0]);
    assert!(base.iter().any(|p| p == "bin/installer"), "{base:?}");
    assert!(!base.iter().any(|p| p.starts_with("usr/install")), "{base:?}");
    assert_eq!(
        list(&layers[1]),
        [
            "usr/",
            "usr/install/",
            "usr/install/amd64/",
            "usr/install/amd64/initramfs.xz",
            "usr/install/amd64/vmlinuz",
        ]
    );

    // The initramfs is the `initramfs-amd64.xz` asset of the same schematic, byte for byte.
    let unpacked = unpack(&layers[1], scratch);
    let (_, initramfs_spec) = spec_for(release, "initramfs-amd64.xz", version).await;
    let asset = scratch.join("initramfs.xz");
    assemble(release, &initramfs_spec, &asset).await;
    assert!(
        std::fs::read(unpacked.join("usr/install/amd64/initramfs.xz")).unwrap()
            == std::fs::read(&asset).unwrap()
    );
}
