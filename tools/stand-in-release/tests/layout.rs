//! The generated release read back with independent tools: skopeo for the OCI layouts, tar,
//! zstd/xz and cpio for the initramfs, unsquashfs for the squashfs, openssl for the cosign
//! signatures. Also: determinism, and the shape of every image family and catalog.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use base64::Engine;
use common::{
    blob, extract, generate_into, generated, layout_index, oci_ref, require_tool, rootfs, run, stdout,
};
use stand_in_release::versions::{factory_versions, RELEASES};
use stand_in_release::BootPartsSource;
use tempfile::TempDir;

#[test]
fn same_inputs_give_the_same_digests() {
    let first = generated();
    let second = TempDir::new().expect("temp dir");
    let summary = generate_into(second.path(), BootPartsSource::Auto);
    assert_eq!(
        summary.tags, first.summary.tags,
        "tag digests differ between two runs"
    );
    for repository in first.summary.tags.keys() {
        let a = std::fs::read(first.path().join(repository).join("index.json")).expect("index.json");
        let b = std::fs::read(second.path().join(repository).join("index.json")).expect("index.json");
        assert_eq!(a, b, "{repository}/index.json differs between two runs");
    }
    let key_a = std::fs::read(first.path().join("cosign.pub")).expect("cosign.pub");
    let key_b = std::fs::read(second.path().join("cosign.pub")).expect("cosign.pub");
    assert_eq!(key_a, key_b);

    // Regenerating into an existing directory changes nothing either.
    let again = generate_into(second.path(), BootPartsSource::Auto);
    assert_eq!(again.tags, first.summary.tags);
}

#[test]
fn skopeo_sees_a_multi_arch_imager_index() {
    require_tool("skopeo");
    let g = generated();
    let raw = stdout(Command::new("skopeo").args([
        "inspect",
        "--raw",
        &oci_ref(g.path(), "siderolabs/imager", "v1.12.1"),
    ]));
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index JSON");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: BTreeSet<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or(""),
                m["platform"]["architecture"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".to_owned(), "linux/arm64".to_owned()])
    );
    let digest = format!("sha256:{}", sha256_hex(raw.as_bytes()));
    assert_eq!(
        Some(digest.as_str()),
        g.summary.digest("siderolabs/imager", "v1.12.1")
    );
}

#[test]
fn every_tag_is_in_its_layout_and_every_version_has_an_imager() {
    let g = generated();
    let imager_tags = tags_of(g, "siderolabs/imager");
    for release in RELEASES {
        assert!(
            imager_tags.contains(release.tag),
            "imager:{} missing",
            release.tag
        );
    }
    assert!(imager_tags.contains("v1.12.0-alpha.0-12-gabc"));
    // The CI tag exists only on the imager.
    for repository in ["siderolabs/extensions", "siderolabs/installer-base"] {
        assert!(!tags_of(g, repository).contains("v1.12.0-alpha.0-12-gabc"));
    }
    assert_eq!(
        factory_versions(),
        [
            "v1.6.4",
            "v1.7.6",
            "v1.9.5",
            "v1.10.7",
            "v1.11.3",
            "v1.12.1",
            "v1.13.0-alpha.1"
        ]
    );
}

#[test]
fn imager_holds_the_boot_inputs_for_both_arches() {
    let g = generated();
    let extracted = extract(g.path(), "siderolabs/imager", "v1.12.1", "amd64");
    let root = rootfs(&extracted);
    for arch in ["amd64", "arm64"] {
        for file in ["vmlinuz", "initramfs.xz", "systemd-boot.efi", "systemd-stub.efi"] {
            let path = root.join(format!("usr/install/{arch}/{file}"));
            assert!(path.is_file(), "{} missing", path.display());
        }
    }
}

#[test]
fn initramfs_is_a_zstd_cpio_with_init_and_a_squashfs_rootfs() {
    for tool in ["zstd", "cpio", "unsquashfs"] {
        require_tool(tool);
    }
    let g = generated();
    let kver = &g.summary.kernel_release;
    let extracted = extract(g.path(), "siderolabs/imager", "v1.12.1", "amd64");
    let initramfs = rootfs(&extracted).join("usr/install/amd64/initramfs.xz");
    let bytes = std::fs::read(&initramfs).expect("initramfs");
    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic since 1.8");

    let work = extracted.path().join("cpio");
    std::fs::create_dir_all(&work).expect("dir");
    let cpio_path = work.join("initramfs.cpio");
    run(Command::new("zstd")
        .arg("-q")
        .arg("-d")
        .arg(&initramfs)
        .arg("-o")
        .arg(&cpio_path));
    let listing = stdout(
        Command::new("sh")
            .arg("-c")
            .arg(format!("cpio -t < '{}'", cpio_path.display())),
    );
    let members: BTreeSet<&str> = listing.lines().collect();
    for member in ["init", "rootfs.sqsh", "bin/busybox", "dev/console"] {
        assert!(members.contains(member), "{member} not in cpio -t:\n{listing}");
    }
    // The virtio block modules the `/init` loads to report META come with the real parts only.
    if g.summary.bootable {
        for module in stand_in_release::boot::VIRTIO_BLOCK_MODULES {
            let member = format!("lib/modules/{kver}/{module}");
            assert!(
                members.contains(member.as_str()),
                "{member} not in cpio -t:\n{listing}"
            );
        }
    }
    run(Command::new("sh")
        .current_dir(&work)
        .arg("-c")
        .arg("cpio -i --quiet --no-absolute-filenames init rootfs.sqsh < initramfs.cpio"));
    let init = std::fs::read_to_string(work.join("init")).expect("init");
    assert!(init.starts_with("#!/bin/busybox sh\n"));
    assert!(init.contains(stand_in_release::REPORT_MARKER));

    let squash = stdout(Command::new("unsquashfs").arg("-l").arg(work.join("rootfs.sqsh")));
    let expected = format!("squashfs-root/usr/lib/modules/{kver}/modules.order");
    assert!(
        squash.lines().any(|l| l == expected),
        "{expected} not in unsquashfs -l:\n{squash}"
    );
    let stats = stdout(Command::new("unsquashfs").arg("-s").arg(work.join("rootfs.sqsh")));
    assert!(stats.contains("Compression zstd"), "{stats}");
}

#[test]
fn pre_1_8_initramfs_is_xz_with_crc32_and_pre_1_10_uses_lib_paths() {
    for tool in ["xz", "cpio", "unsquashfs"] {
        require_tool(tool);
    }
    let g = generated();
    let kver = &g.summary.kernel_release;
    let extracted = extract(g.path(), "siderolabs/imager", "v1.7.6", "amd64");
    let initramfs = rootfs(&extracted).join("usr/install/amd64/initramfs.xz");
    let info = stdout(Command::new("xz").arg("--robot").arg("--list").arg(&initramfs));
    assert!(
        info.lines()
            .any(|l| l.starts_with("file\t") && l.contains("\tCRC32\t")),
        "{info}"
    );

    let work = extracted.path().join("cpio");
    std::fs::create_dir_all(&work).expect("dir");
    run(Command::new("sh").current_dir(&work).arg("-c").arg(format!(
        "xz -dc '{}' | cpio -i --quiet --no-absolute-filenames rootfs.sqsh",
        initramfs.display()
    )));
    let squash = stdout(Command::new("unsquashfs").arg("-l").arg(work.join("rootfs.sqsh")));
    let expected = format!("squashfs-root/lib/modules/{kver}/modules.order");
    assert!(
        squash.lines().any(|l| l == expected),
        "{expected} not in:\n{squash}"
    );
    let stats = stdout(Command::new("unsquashfs").arg("-s").arg(work.join("rootfs.sqsh")));
    assert!(stats.contains("Compression xz"), "{stats}");
}

#[test]
fn signatures_verify_with_openssl() {
    require_tool("openssl");
    let g = generated();
    let work = TempDir::new().expect("temp dir");
    let targets = [
        ("siderolabs/imager", "v1.12.1"),
        ("siderolabs/imager", "v1.12.0-alpha.0-12-gabc"),
        ("siderolabs/extensions", "v1.10.7"),
        ("siderolabs/stand-in-tools", "1.0.0"),
        ("siderolabs/overlays", "v1.7.6"),
        ("siderolabs/installer", "v1.9.5"),
    ];
    for (repository, tag) in targets {
        let digest = g
            .summary
            .digest(repository, tag)
            .unwrap_or_else(|| panic!("{repository}:{tag} missing"));
        let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
        let sig_digest = g
            .summary
            .digest(repository, &sig_tag)
            .unwrap_or_else(|| panic!("no {sig_tag}"));
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(g.path(), repository, sig_digest)).expect("signature manifest");
        let layers = manifest["layers"].as_array().expect("layers");
        assert_eq!(layers.len(), 1);
        let layer = &layers[0];
        assert_eq!(
            layer["mediaType"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        let payload = blob(g.path(), repository, layer["digest"].as_str().expect("digest"));
        let doc: serde_json::Value = serde_json::from_slice(&payload).expect("payload");
        assert_eq!(doc["critical"]["image"]["docker-manifest-digest"], digest);
        assert_eq!(
            doc["critical"]["identity"]["docker-reference"],
            format!("ghcr.io/{repository}")
        );
        assert_eq!(doc["critical"]["type"], "cosign container image signature");
        let signature = base64::engine::general_purpose::STANDARD
            .decode(
                layer["annotations"]["dev.cosignproject.cosign/signature"]
                    .as_str()
                    .expect("annotation"),
            )
            .expect("base64");
        let payload_path = work.path().join("payload.json");
        let sig_path = work.path().join("sig.der");
        std::fs::write(&payload_path, &payload).expect("write");
        std::fs::write(&sig_path, &signature).expect("write");
        let verified = stdout(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-verify"])
                .arg(g.path().join("cosign.pub"))
                .arg("-signature")
                .arg(&sig_path)
                .arg(&payload_path),
        );
        assert_eq!(verified.trim(), "Verified OK", "{repository}:{tag}");
    }
    // Every non-signature tag has its signature.
    for (repository, tags) in &g.summary.tags {
        for (tag, digest) in tags.iter().filter(|(t, _)| !t.ends_with(".sig")) {
            let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
            assert!(tags.contains_key(&sig_tag), "{repository}:{tag} is not signed");
        }
    }
}

#[test]
fn extension_catalog_lines_point_at_signed_multi_arch_extensions() {
    let g = generated();
    let text_of = |tag: &str| {
        let extracted = extract(g.path(), "siderolabs/extensions", tag, "amd64");
        let root = rootfs(&extracted);
        let digests = std::fs::read_to_string(root.join("image-digests")).expect("image-digests");
        let descriptions =
            std::fs::read_to_string(root.join("descriptions.yaml")).expect("descriptions.yaml");
        (digests, descriptions)
    };
    let (digests, descriptions) = text_of("v1.12.1");
    let lines: Vec<&str> = digests.lines().collect();
    assert!(lines.len() >= 5, "{digests}");
    for line in &lines {
        let (reference, digest) = line.split_once('@').expect("name:tag@digest");
        let reference = reference.strip_prefix("ghcr.io/").expect("ghcr.io/ prefix");
        let (repository, tag) = reference.rsplit_once(':').expect("repo:tag");
        assert_eq!(g.summary.digest(repository, tag), Some(digest), "{line}");
        assert!(
            descriptions.contains(&format!("\"{line}\":")),
            "{line} has no description"
        );
        let index: serde_json::Value =
            serde_json::from_slice(&blob(g.path(), repository, digest)).expect("index");
        assert_eq!(
            index["manifests"].as_array().map(Vec::len),
            Some(2),
            "{line} is not multi-arch"
        );

        // The filesystem is exactly manifest.yaml + rootfs/.
        let extracted = extract(g.path(), repository, tag, "arm64");
        let mut top: Vec<String> = std::fs::read_dir(rootfs(&extracted))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, ["manifest.yaml", "rootfs"], "{line}");
    }
    for name in [
        "amd-ucode",
        "intel-ucode",
        "stand-in-firmware",
        "stand-in-module",
        "stand-in-tools",
        "gvisor",
    ] {
        assert!(
            digests.contains(&format!("ghcr.io/siderolabs/{name}:")),
            "{name} not in the v1.12.1 catalog"
        );
    }
    // legacy-only (compatible < v1.10.0) is listed up to 1.11 only.
    assert!(!digests.contains("legacy-only"));
    assert!(text_of("v1.11.3")
        .0
        .contains("ghcr.io/siderolabs/legacy-only:0.9.0@"));
}

#[test]
fn extensions_have_the_talos_layout() {
    let g = generated();
    let kver = &g.summary.kernel_release;
    let check = |repository: &str, tag: &str, files: &[String]| {
        let extracted = extract(g.path(), repository, tag, "amd64");
        let root = rootfs(&extracted);
        let manifest = std::fs::read_to_string(root.join("manifest.yaml")).expect("manifest.yaml");
        assert!(
            manifest.starts_with("version: v1alpha1\nmetadata:\n"),
            "{manifest}"
        );
        assert!(
            manifest.contains("compatibility:\n    talos:\n      version: "),
            "{manifest}"
        );
        for file in files {
            assert!(
                root.join("rootfs").join(file).is_file(),
                "{repository}:{tag} lacks rootfs/{file}"
            );
        }
        manifest
    };
    check(
        "siderolabs/stand-in-firmware",
        "20250101",
        &["usr/lib/firmware/stand-in/stand-in-fw.bin".into()],
    );
    check(
        "siderolabs/intel-ucode",
        "20250211",
        &["usr/lib/firmware/intel-ucode/06-55-04".into()],
    );
    check(
        "siderolabs/amd-ucode",
        "20250211",
        &["usr/lib/firmware/amd-ucode/microcode_amd_fam17h.bin".into()],
    );
    check(
        "siderolabs/amd-ucode",
        "20240312",
        &["lib/firmware/amd-ucode/microcode_amd_fam17h.bin".into()],
    );
    check(
        "siderolabs/stand-in-module",
        "1.0.0-v1.12.1",
        &[format!("usr/lib/modules/{kver}/extras/stand-in.ko")],
    );
    check(
        "siderolabs/stand-in-module",
        "1.0.0-v1.9.5",
        &[format!("lib/modules/{kver}/extras/stand-in.ko")],
    );
    check(
        "siderolabs/stand-in-tools",
        "1.0.0",
        &["usr/local/bin/stand-in-tool".into()],
    );
    let legacy = check("siderolabs/legacy-only", "0.9.0", &[]);
    assert!(legacy.contains("version: \"< v1.10.0\""), "{legacy}");
}

#[test]
fn installers_overlays_and_talosctl_follow_the_version_gates() {
    let g = generated();
    // installer (< 1.10): two layers, the second with the boot assets; installer-base: one.
    let layers = |repository: &str, tag: &str, arch: &str| -> Vec<serde_json::Value> {
        let index: serde_json::Value = serde_json::from_slice(&blob(
            g.path(),
            repository,
            g.summary.digest(repository, tag).expect("tag"),
        ))
        .expect("index");
        let entry = index["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["platform"]["architecture"] == arch)
            .expect("platform")
            .clone();
        let manifest: serde_json::Value = serde_json::from_slice(&blob(
            g.path(),
            repository,
            entry["digest"].as_str().expect("digest"),
        ))
        .expect("manifest");
        manifest["layers"].as_array().expect("layers").clone()
    };
    assert_eq!(layers("siderolabs/installer", "v1.9.5", "arm64").len(), 2);
    assert_eq!(layers("siderolabs/installer-base", "v1.10.7", "amd64").len(), 1);
    assert!(g.summary.digest("siderolabs/installer", "v1.10.7").is_none());
    assert!(g.summary.digest("siderolabs/installer-base", "v1.9.5").is_none());

    let old = extract(g.path(), "siderolabs/installer", "v1.9.5", "arm64");
    assert!(rootfs(&old).join("usr/install/arm64/vmlinuz").is_file());
    assert!(rootfs(&old).join("usr/install/arm64/initramfs.xz").is_file());
    let base = extract(g.path(), "siderolabs/installer-base", "v1.12.1", "amd64");
    let bin = rootfs(&base).join("usr/bin");
    assert!(bin.join("installer").is_file());
    assert_eq!(
        std::fs::read_link(bin.join("imager"))
            .expect("symlink")
            .to_string_lossy(),
        "installer"
    );
    assert!(
        !rootfs(&base).join("usr/install").exists(),
        "installer-base has no boot assets"
    );
    let config = stdout(Command::new("skopeo").args([
        "inspect",
        "--config",
        &oci_ref(g.path(), "siderolabs/installer-base", "v1.12.1"),
    ]));
    let config: serde_json::Value = serde_json::from_str(&config).expect("config");
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/installer"])
    );
    assert!(config["config"]["Env"]
        .as_array()
        .expect("env")
        .iter()
        .any(|e| e == "VERSION=v1.12.1"));

    // Overlays from 1.7 on; the catalog points at the signed overlay image.
    assert!(g.summary.digest("siderolabs/overlays", "v1.6.4").is_none());
    let overlays = extract(g.path(), "siderolabs/overlays", "v1.7.6", "amd64");
    let yaml = std::fs::read_to_string(rootfs(&overlays).join("overlays.yaml")).expect("overlays.yaml");
    let overlay_digest = g
        .summary
        .digest("siderolabs/sbc-stand-in", "v0.1.0")
        .expect("overlay image");
    assert!(
        yaml.contains("image: \"ghcr.io/siderolabs/sbc-stand-in:v0.1.0\""),
        "{yaml}"
    );
    assert!(yaml.contains(&format!("digest: \"{overlay_digest}\"")), "{yaml}");
    let overlay = extract(g.path(), "siderolabs/sbc-stand-in", "v0.1.0", "arm64");
    for file in [
        "artifacts/arm64/u-boot/stand-in-board/u-boot.bin",
        "installers/stand-in-board",
        "profiles/stand-in-board.yaml",
    ] {
        assert!(rootfs(&overlay).join(file).is_file(), "overlay lacks {file}");
    }
    let options = stdout(
        Command::new("sh")
            .arg(rootfs(&overlay).join("installers/stand-in-board"))
            .arg("get-options"),
    );
    assert!(options.starts_with("name: stand-in-board\n"), "{options}");

    // talosctl-all from 1.11 on.
    assert!(g.summary.digest("siderolabs/talosctl-all", "v1.10.7").is_none());
    let talosctl = extract(g.path(), "siderolabs/talosctl-all", "v1.11.3", "amd64");
    for file in [
        "talosctl-linux-amd64",
        "talosctl-darwin-arm64",
        "talosctl-windows-amd64.exe",
        "talosctl-linux-armv7",
    ] {
        assert!(
            rootfs(&talosctl).join(file).is_file(),
            "talosctl-all lacks {file}"
        );
    }
}

fn tags_of(g: &common::Generated, repository: &str) -> BTreeSet<String> {
    layout_index(g.path(), repository)["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .expect("ref.name")
                .to_owned()
        })
        .collect()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}
