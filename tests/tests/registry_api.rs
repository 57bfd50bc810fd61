//! The registry (`/v2`, issue 7) through `image-factory-local` over the stand-in release, with
//! real clients: `skopeo` (inspect, copy per architecture), `podman pull` (a real pull with
//! unpacking, into a scratch storage root), `curl` for the API edges, and `openssl` as the
//! independent verifier of the cosign signature.
//!
//! * `skopeo_podman_and_the_signature` (LocalStack): a cold tag is built once for both
//!   architectures; the index lists exactly linux/amd64 and linux/arm64; each image has the base
//!   layer (`usr/bin/installer`) and the artifacts layer (`usr/install/<arch>/vmlinuz.efi`,
//!   `systemd-boot.efi`), whose UKI carries the schematic's kernel args and extensions; podman
//!   unpacks it; the signature tag `sha256-<hex>.sig` holds a simple-signing payload naming the
//!   index digest, and `openssl dgst -verify` accepts it with `/oci/cosign/signing-key.pub` (and
//!   refuses a tampered payload); referrers and `tags/list` list what they should.
//! * `tampered_signature_or_index_is_rebuilt` (LocalStack): altered signature or index bytes in
//!   the bucket are detected on the next pull, which rebuilds and serves a verifying tag again.
//! * `concurrent_cold_pulls_build_once` (embedded store): 10 concurrent `skopeo inspect` of a
//!   cold tag → one registry build (both architectures), the same digest for all; a second pull
//!   builds nothing.
//! * `installer_tarball_is_the_registry_image` (embedded store): `metal-installer-amd64.tar`
//!   from the image route is a docker-save and OCI archive (skopeo) of the very image (same
//!   manifest digest) the registry serves for linux/amd64.
//! * `oci_errors_writes_and_latest` (embedded store): unknown shapes and names, bad digests,
//!   unknown blobs and tags answer the OCI error envelope with the right code; every write
//!   method is refused; `latest` resolves to the newest release; the legacy `installer` name
//!   before 1.10 carries `vmlinuz` + `initramfs.xz`; SecureBoot answers 501.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use crate::common::curl::{curl, Reply};
use crate::common::disk::tool;
use crate::common::image::{Backend, ImageServer};
use crate::common::inspect::{cpio_extract, split_leading_cpio, zstd_decompress};
use crate::common::oci::{
    copy_arch, extract_layer, host, inspect_raw, layout_blob, layout_manifest, pe_section, sha256, skopeo,
};
use crate::common::stand_in::VERSION;

fn schematic(marker: &str) -> String {
    format!(
        "customization:\n  extraKernelArgs:\n    - test.registry={marker}\n  systemExtensions:\n    \
         officialExtensions:\n      - siderolabs/stand-in-firmware\n      - intel-ucode\n"
    )
}

/// Copies one architecture of `reference` into an OCI layout and checks its two layers: the
/// base (`usr/bin/installer`) and ours (UKI + systemd-boot) with the schematic's kernel args and
/// extensions in the UKI.
fn check_copied_image(
    server: &ImageServer,
    reference: &str,
    arch: &str,
    id: &str,
    marker: &str,
    work: &Path,
) {
    let layout = work.join(format!("oci-{arch}"));
    copy_arch(reference, arch, &layout);
    let manifest = layout_manifest(&layout);
    let config: serde_json::Value = serde_json::from_slice(&layout_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(config["architecture"], arch, "{config}");
    assert_eq!(config["os"], "linux", "{config}");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "base + artifacts: {manifest}");

    let base = extract_layer(
        &layout,
        layers[0]["digest"].as_str().unwrap(),
        &work.join(format!("base-{arch}")),
    );
    assert!(base.iter().any(|m| m == "usr/bin/installer"), "{base:?}");
    let root = work.join(format!("artifacts-{arch}"));
    let ours = extract_layer(&layout, layers[1]["digest"].as_str().unwrap(), &root);
    for member in [
        format!("usr/install/{arch}/systemd-boot.efi"),
        format!("usr/install/{arch}/vmlinuz.efi"),
    ] {
        assert!(ours.contains(&member), "{member} in {ours:?}");
    }
    let uki = root.join(format!("usr/install/{arch}/vmlinuz.efi"));
    let cmdline = String::from_utf8(pe_section(&uki, ".cmdline")).unwrap();
    assert!(cmdline.contains(&format!("test.registry={marker}")), "{cmdline}");
    assert!(
        !cmdline.contains("talos.environment"),
        "installers carry no META: {cmdline}"
    );

    // The UKI's initramfs: [early microcode, if any] [release initramfs] [zstd cpio with the
    // extensions]; extensions.yaml names both and the schematic.
    let initrd = pe_section(&uki, ".initrd");
    let base_initramfs = server.release_file(VERSION, &format!("usr/install/{arch}/initramfs.xz"));
    let rest = if initrd.starts_with(b"070701") {
        split_leading_cpio(&initrd).1
    } else {
        &initrd[..]
    };
    assert!(
        rest.starts_with(&base_initramfs),
        "the release initramfs, byte for byte"
    );
    let unpacked = work.join(format!("initrd-{arch}"));
    cpio_extract(&zstd_decompress(&rest[base_initramfs.len()..]), &unpacked);
    let extensions = std::fs::read_to_string(unpacked.join("extensions.yaml")).unwrap();
    for needle in [
        "name: stand-in-firmware",
        "name: intel-ucode",
        &format!("version: {id}"),
    ] {
        assert!(extensions.contains(needle), "{needle} in {extensions}");
    }
}

/// `openssl dgst -sha256 -verify` over the payload: whether openssl says `Verified OK`.
fn openssl_verifies(public_key: &Path, signature_der: &[u8], payload: &[u8], work: &Path) -> bool {
    let sig = work.join("sig.der");
    let data = work.join("payload.json");
    std::fs::write(&sig, signature_der).unwrap();
    std::fs::write(&data, payload).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(&sig)
        .arg(&data)
        .output()
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "openssl: {} {}",
        text.trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out.status.success() && text.contains("Verified OK")
}

fn get(server: &ImageServer, path: &str) -> Reply {
    curl(
        server.url(),
        &[
            "-H",
            "Accept: application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        ],
        path,
    )
}

/// The error envelope's first code.
fn code(reply: &Reply) -> String {
    reply.json()["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn skopeo_podman_and_the_signature(backend: Backend) {
    let server = ImageServer::start(backend);
    let marker = uuid::Uuid::new_v4().simple().to_string();
    let id = server.post_schematic(&schematic(&marker));
    let repository = format!("metal-installer/{id}");
    let reference = format!("{}/{repository}:{VERSION}", host(&server));
    let work = tempfile::tempdir().unwrap();

    // The version check.
    let ping = curl(server.url(), &[], "/v2/");
    assert_eq!(ping.status, 200);
    assert_eq!(ping.header("docker-distribution-api-version"), "registry/2.0");

    // Cold: the first inspect builds both architectures (the local server waits for it).
    let index = inspect_raw(&format!("docker://{reference}"));
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{index}"
    );
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert_eq!(
        server.built_at_least(1),
        1,
        "one registry build for both architectures"
    );

    // The manifest's headers.
    let head = curl(
        server.url(),
        &["-I", "-H", "Accept: application/vnd.oci.image.index.v1+json"],
        &format!("/v2/{repository}/manifests/{VERSION}"),
    );
    assert_eq!(head.status, 200);
    let index_bytes = get(&server, &format!("/v2/{repository}/manifests/{VERSION}")).body;
    let index_digest = sha256(&index_bytes);
    assert_eq!(head.header("docker-content-digest"), index_digest);
    assert_eq!(
        head.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(head.header("content-length"), index_bytes.len().to_string());

    for arch in ["amd64", "arm64"] {
        check_copied_image(&server, &reference, arch, &id, &marker, work.path());
    }
    assert_eq!(server.built(), 1, "copies are served from what was published");

    // podman: a real pull, unpacked into vfs storage.
    let root = work.path().join("podman");
    let pulled = tool(
        "podman",
        &[
            "--root",
            root.join("root").to_str().unwrap(),
            "--runroot",
            root.join("run").to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "pull",
            "--tls-verify=false",
            &reference,
        ],
        "podman",
    );
    eprintln!("podman pull: {pulled}");
    let unpacked = std::fs::read_dir(root.join("root/vfs/dir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .any(|layer| {
            layer.join("usr/install/amd64/vmlinuz.efi").is_file() && layer.join("usr/bin/installer").exists()
        });
    assert!(
        unpacked,
        "podman unpacked the image with the UKI and the installer"
    );

    // The signature: a cosign simple-signing image under sha256-<hex>.sig.
    let sig_tag = format!("{}.sig", index_digest.replace(':', "-"));
    let sig_manifest = inspect_raw(&format!("docker://{}/{repository}:{sig_tag}", host(&server)));
    let layer = &sig_manifest["layers"][0];
    assert_eq!(
        layer["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json",
        "{sig_manifest}"
    );
    let signature_b64 = layer["annotations"]["dev.cosignproject.cosign/signature"]
        .as_str()
        .unwrap();
    let payload = crate::common::image::download(
        server.url(),
        &format!("/v2/{repository}/blobs/{}", layer["digest"].as_str().unwrap()),
    )
    .body;
    assert_eq!(sha256(&payload), layer["digest"].as_str().unwrap());
    let simple: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        simple["critical"]["image"]["docker-manifest-digest"],
        index_digest.as_str()
    );
    assert_eq!(
        simple["critical"]["identity"]["docker-reference"],
        format!("{}/{repository}", host(&server))
    );
    assert_eq!(simple["critical"]["type"], "cosign container image signature");

    let key = curl(server.url(), &[], "/oci/cosign/signing-key.pub");
    assert_eq!(key.status, 200);
    let key_path = work.path().join("cosign.pub");
    std::fs::write(&key_path, &key.body).unwrap();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64)
        .unwrap();
    assert!(
        openssl_verifies(&key_path, &der, &payload, work.path()),
        "openssl verifies the signature"
    );
    let tampered = String::from_utf8(payload.clone())
        .unwrap()
        .replace(&index_digest, &sha256(b"another index"));
    assert!(
        !openssl_verifies(&key_path, &der, tampered.as_bytes(), work.path()),
        "a tampered payload fails"
    );

    // Referrers: the signature, with and without the artifactType filter.
    let referrers = get(&server, &format!("/v2/{repository}/referrers/{index_digest}"));
    assert_eq!(referrers.status, 200);
    assert_eq!(
        referrers.header("content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    let listed = referrers.json();
    let sig_digest = sha256(&get(&server, &format!("/v2/{repository}/manifests/{sig_tag}")).body);
    assert_eq!(listed["manifests"][0]["digest"], sig_digest.as_str(), "{listed}");
    let artifact_type = listed["manifests"][0]["artifactType"]
        .as_str()
        .unwrap()
        .to_owned();
    let filtered = get(
        &server,
        &format!(
            "/v2/{repository}/referrers/{index_digest}?artifactType={}",
            artifact_type.replace('+', "%2B")
        ),
    );
    assert_eq!(filtered.header("oci-filters-applied"), "artifactType");
    assert_eq!(filtered.json()["manifests"].as_array().unwrap().len(), 1);
    let none = get(
        &server,
        &format!("/v2/{repository}/referrers/{index_digest}?artifactType=application/x-none"),
    );
    assert_eq!(none.json()["manifests"].as_array().unwrap().len(), 0);

    // tags/list: the offered versions and latest.
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/{repository}", host(&server)),
    ]);
    let tags: serde_json::Value = serde_json::from_str(&tags).unwrap();
    let tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert!(tags.contains(&VERSION) && tags.contains(&"latest"), "{tags:?}");
}

#[test]
fn tampered_signature_or_index_is_rebuilt() {
    let server = ImageServer::start_checking_every_request(Backend::S3);
    let id = server.post_schematic(&schematic("tamper"));
    let repository = format!("installer/{id}");
    let path = format!("/v2/{repository}/manifests/{VERSION}");
    let first = get(&server, &path);
    assert_eq!(first.status, 200, "{}", first.text());
    let index_digest = sha256(&first.body);
    let sig_tag = format!("{}.sig", index_digest.replace(':', "-"));
    let sig_digest = sha256(&get(&server, &format!("/v2/{repository}/manifests/{sig_tag}")).body);
    let blob_key = |digest: &str| format!("assets/oci/sha256/{}", digest.trim_start_matches("sha256:"));

    for (what, digest) in [("signature manifest", &sig_digest), ("index", &index_digest)] {
        let key = blob_key(digest);
        let (meta, bytes) = server.block_on(server.store().get(&key)).unwrap().unwrap();
        let mut altered = bytes.to_vec();
        let at = altered.len() / 2;
        altered[at] ^= 0x20;
        server
            .block_on(server.store().put(
                &key,
                altered.into(),
                meta.content_type.as_deref(),
                factory_store::PutCondition::Overwrite,
            ))
            .unwrap();
        let built = server.built();
        // Detected: the tag is forgotten and rebuilt; until then the pull is told to retry.
        let reply = get(&server, &path);
        assert_eq!(reply.status, 503, "{what}: {}", reply.text());
        assert_eq!(code(&reply), "UNAVAILABLE");
        assert!(!reply.header("retry-after").is_empty());
        let again = crate::common::image::download(server.url(), &path);
        assert_eq!(again.status, 200, "{what}: {}", again.text());
        assert_eq!(
            sha256(&again.body),
            index_digest,
            "{what}: the same index, rebuilt"
        );
        assert_eq!(
            server.built_at_least(built + 1),
            built + 1,
            "{what}: rebuilt once"
        );
        let (_, repaired) = server.block_on(server.store().get(&key)).unwrap().unwrap();
        assert_eq!(
            sha256(&repaired),
            *digest,
            "{what}: the stored bytes are whole again"
        );
    }
}

fn concurrent_cold_pulls_build_once(backend: Backend) {
    let server = ImageServer::start(backend);
    let id = server.fresh_schematic();
    let reference = format!("docker://{}/metal-installer/{id}:{VERSION}", host(&server));
    let digests: Vec<String> = std::thread::scope(|scope| {
        let pulls: Vec<_> = (0..10)
            .map(|_| {
                scope.spawn(|| {
                    sha256(skopeo(&["inspect", "--raw", "--tls-verify=false", &reference]).as_bytes())
                })
            })
            .collect();
        pulls.into_iter().map(|p| p.join().unwrap()).collect()
    });
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    assert_eq!(
        server.built_at_least(1),
        1,
        "ten cold pulls, one build (both architectures)"
    );
    let started = std::time::Instant::now();
    inspect_raw(&reference);
    eprintln!("warm pull of the index: {:?}", started.elapsed());
    assert_eq!(server.built(), 1, "a second pull builds nothing");
}

fn oci_errors_writes_and_latest(backend: Backend) {
    let server = ImageServer::start(backend);
    let id = server.post_schematic("customization: {}\n");
    let cases = [
        ("/v2/a/b/c/manifests/v1", 404, "NAME_UNKNOWN"),
        (
            "/v2/siderolabs/nonexistent/manifests/v1.13.5",
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/siderolabs/installer/tags/v1", 404, "NAME_UNKNOWN"),
        (
            &format!("/v2/metal-installer/{}/manifests/{VERSION}", "0".repeat(64)),
            404,
            "NAME_UNKNOWN",
        ),
        (
            &format!("/v2/metal-iso/{id}/manifests/{VERSION}"),
            400,
            "NAME_INVALID",
        ),
        (
            &format!("/v2/metal-installer/{id}/manifests/v9.9.9"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            &format!("/v2/metal-installer/{id}/manifests/nonsense"),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            &format!("/v2/metal-installer/{id}/manifests/sha256:{}", "1".repeat(64)),
            404,
            "MANIFEST_UNKNOWN",
        ),
        (
            &format!("/v2/metal-installer/{id}/blobs/sha256:{}", "2".repeat(64)),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            &format!("/v2/metal-installer/{id}/blobs/sha256:xyz"),
            400,
            "DIGEST_INVALID",
        ),
        (
            &format!("/v2/metal-installer-secureboot/{id}/manifests/{VERSION}"),
            501,
            "UNSUPPORTED",
        ),
    ];
    for (path, status, expected) in cases {
        let reply = get(&server, path);
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), "application/json", "{path}");
        assert_eq!(code(&reply), expected, "{path}: {}", reply.text());
        assert!(!reply.json()["errors"][0]["message"].as_str().unwrap().is_empty());
    }
    for (method, path) in [
        ("PUT", format!("/v2/metal-installer/{id}/manifests/{VERSION}")),
        ("DELETE", format!("/v2/metal-installer/{id}/manifests/{VERSION}")),
        ("POST", format!("/v2/metal-installer/{id}/blobs/uploads/")),
        ("PATCH", format!("/v2/metal-installer/{id}/blobs/uploads/x")),
        ("POST", "/v2/".to_owned()),
    ] {
        let reply = curl(server.url(), &["-X", method, "--data-binary", "x"], &path);
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(code(&reply), "UNSUPPORTED", "{method} {path}");
        assert_eq!(reply.header("allow"), "GET, HEAD");
    }
    // An index is not served to a client that accepts only Docker manifests.
    let docker_only = curl(
        server.url(),
        &[
            "-H",
            "Accept: application/vnd.docker.distribution.manifest.v2+json",
        ],
        &format!("/v2/metal-installer/{id}/manifests/{VERSION}"),
    );
    assert_eq!(
        (docker_only.status, code(&docker_only).as_str()),
        (404, "MANIFEST_UNKNOWN")
    );

    // latest = the newest release (the stand-in's newest is a pre-release of 1.13).
    let latest = get(&server, &format!("/v2/metal-installer/{id}/manifests/latest"));
    let pinned = get(&server, &format!("/v2/metal-installer/{id}/manifests/{VERSION}"));
    assert_eq!(latest.status, 200, "{}", latest.text());
    assert_eq!(sha256(&latest.body), sha256(&pinned.body));

    // Before 1.10, the legacy name on the `installer` base: kernel + initramfs, no UKI.
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("legacy");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}/installer/{id}:v1.9.5", host(&server)),
        &format!("oci:{}:legacy", layout.display()),
    ]);
    let manifest = layout_manifest(&layout);
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2, "the base's first layer + ours: {manifest}");
    let base = extract_layer(
        &layout,
        layers[0]["digest"].as_str().unwrap(),
        &work.path().join("b"),
    );
    assert!(base.iter().any(|m| m == "bin/installer"), "{base:?}");
    let ours = extract_layer(
        &layout,
        layers[1]["digest"].as_str().unwrap(),
        &work.path().join("a"),
    );
    for member in ["usr/install/amd64/vmlinuz", "usr/install/amd64/initramfs.xz"] {
        assert!(ours.iter().any(|m| m == member), "{member} in {ours:?}");
    }
    assert!(!ours.iter().any(|m| m.ends_with("vmlinuz.efi")), "{ours:?}");
}

#[test]
fn installer_tarball_is_the_registry_image() {
    let server = ImageServer::start(Backend::Fs);
    let id = server.post_schematic(&schematic("tarball"));
    let tarball = crate::common::image::download(
        server.url(),
        &format!("/image/{id}/{VERSION}/metal-installer-amd64.tar"),
    );
    assert_eq!(tarball.status, 200, "{}", tarball.text());
    assert_eq!(tarball.header("content-type"), "application/x-tar");
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("installer.tar");
    std::fs::write(&file, &tarball.body).unwrap();

    // A docker-save archive (what `docker load` reads) and an OCI archive in one file.
    let docker: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        &format!("docker-archive:{}", file.display()),
    ]))
    .unwrap();
    assert_eq!(docker["Architecture"], "amd64", "{docker}");
    assert_eq!(docker["Layers"].as_array().unwrap().len(), 2, "{docker}");
    let layout = work.path().join("oci");
    skopeo(&[
        "copy",
        &format!("oci-archive:{}", file.display()),
        &format!("oci:{}:x", layout.display()),
    ]);
    let manifest = layout_manifest(&layout);
    let ours = extract_layer(
        &layout,
        manifest["layers"][1]["digest"].as_str().unwrap(),
        &work.path().join("a"),
    );
    assert!(
        ours.iter().any(|m| m == "usr/install/amd64/vmlinuz.efi"),
        "{ours:?}"
    );

    // The registry's linux/amd64 image is the same image: the same manifest digest.
    let index = get(&server, &format!("/v2/metal-installer/{id}/manifests/{VERSION}"));
    assert_eq!(index.status, 200, "{}", index.text());
    let oci_index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index.json()["manifests"][0]["digest"],
        oci_index["manifests"][0]["digest"],
        "the tarball and the registry serve the same amd64 image"
    );
}

// Through the serverless stack: /v2 through the HTTP API to the registry function, blobs
// redirected to the CDN's /assets/, the builder fed by the SQS event source mapping.

#[test]
fn skopeo_podman_and_the_signature_s3() {
    skopeo_podman_and_the_signature(Backend::S3);
}

#[test]
fn skopeo_podman_and_the_signature_stack() {
    skopeo_podman_and_the_signature(Backend::Stack);
}

#[test]
fn concurrent_cold_pulls_build_once_fs() {
    concurrent_cold_pulls_build_once(Backend::Fs);
}

#[test]
fn concurrent_cold_pulls_build_once_stack() {
    concurrent_cold_pulls_build_once(Backend::Stack);
}

#[test]
fn oci_errors_writes_and_latest_fs() {
    oci_errors_writes_and_latest(Backend::Fs);
}

#[test]
fn oci_errors_writes_and_latest_stack() {
    oci_errors_writes_and_latest(Backend::Stack);
}
