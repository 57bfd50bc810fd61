//! The image route end to end with the embedded store (issue 4, first assets): `image-factory-local`
//! started in-process over an on-disk store, reading the stand-in Talos release from the OCI
//! layouts `tools/stand-in-release` generates (verified with its `cosign.pub`), driven with the
//! real `curl` CLI. Builds run on the local server's in-process queue and builder.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::curl::{curl, Reply};
use common::local_server::LocalServerThread;
use factory_core::arch::Arch;
use factory_core::cmdline::{kernel_cmdline, CmdlineInput};
use factory_core::schematic::MetaValue;
use factory_core::version::TalosVersion;
use factory_local::{Options, UpstreamChoice};
use factory_upstream::verify::Verification;
use factory_upstream::{LayoutSource, Upstream, UpstreamConfig};
use sha2::{Digest, Sha256};

const VERSION: &str = "v1.12.1";

/// A download as a client would do it: follow redirects, retry a 503 (building).
fn download(url: &str, path: &str) -> Reply {
    curl(url, &["-L", "--retry", "10", "--retry-all-errors"], path)
}

fn post_schematic(url: &str, yaml: &str) -> String {
    let reply = curl(url, &["-X", "POST", "--data-binary", yaml], "/schematics");
    assert_eq!(reply.status, 201, "{}", reply.text());
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    json["id"].as_str().unwrap().to_owned()
}

fn assert_error(reply: &Reply, status: u16, part: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(
        reply.text().contains(part),
        "{part:?} is not in {:?}",
        reply.text()
    );
}

/// The stand-in kernel, read from the generated layout with the upstream adapter.
fn release_kernel(out: &Path, key: &Path) -> Vec<u8> {
    let pem = std::fs::read_to_string(key).unwrap();
    let upstream = Upstream::new(
        Arc::new(LayoutSource::new(out)),
        UpstreamConfig::new(Verification::from_public_key_pem(&pem).unwrap()),
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let image = upstream.resolve("siderolabs/imager", VERSION).await.unwrap();
            let mut files = upstream
                .read_files(&image, Arch::Amd64, &["usr/install/amd64/vmlinuz"])
                .await
                .unwrap();
            files
                .remove("usr/install/amd64/vmlinuz")
                .expect("the imager has a kernel")
        })
}

#[test]
fn oci_layout_fs_kernel_and_cmdline() {
    let out = tempfile::tempdir().unwrap();
    let options = stand_in_release::GenerateOptions {
        out: out.path().to_owned(),
        boot_parts: stand_in_release::BootPartsSource::Placeholders,
        key_pem: None,
    };
    stand_in_release::generate(&options).unwrap();
    let key = out.path().join("cosign.pub");

    let data = tempfile::tempdir().unwrap();
    let mut options = Options::with_data_dir(data.path());
    options.upstream = UpstreamChoice::Layout(out.path().to_owned());
    options.upstream_cosign_key = Some(key.clone());
    let server = LocalServerThread::start(options, false, Duration::from_secs(240));
    let url = server.url().to_owned();

    let empty = post_schematic(&url, "customization: {}\n");
    let custom = post_schematic(
        &url,
        "customization:\n  extraKernelArgs:\n    - console=ttyS1\n    - net.ifnames=0\n  meta:\n    - key: 10\n      value: hello\n",
    );

    // The kernel: the release's bytes.
    let kernel_path = format!("/image/{empty}/{VERSION}/kernel-amd64");
    let kernel = download(&url, &kernel_path);
    assert_eq!(kernel.status, 200, "{}", kernel.text());
    assert_eq!(kernel.body, release_kernel(out.path(), &key));
    assert_eq!(kernel.header("content-type"), "application/octet-stream");

    // Cached: a redirect at once, to the content-addressed object.
    let again = curl(&url, &[], &kernel_path);
    assert_eq!(again.status, 302, "{}", again.text());
    assert!(
        again.header("location").contains("/assets/"),
        "{:?}",
        again.headers
    );

    // HEAD: the object's headers, no redirect.
    let head = curl(&url, &["--head"], &kernel_path);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), kernel.body.len().to_string());
    assert_eq!(
        head.header("content-disposition"),
        "attachment; filename=\"kernel-amd64\""
    );
    assert_eq!(head.header("content-type"), "application/octet-stream");

    // Checksums.
    let sha = curl(&url, &[], &format!("{kernel_path}.sha256"));
    assert_eq!(sha.status, 200, "{}", sha.text());
    assert_eq!(
        sha.text(),
        format!("{}  kernel-amd64\n", hex::encode(Sha256::digest(&kernel.body)))
    );
    assert!(sha.header("content-type").starts_with("text/plain"));
    let sha512 = curl(&url, &[], &format!("{kernel_path}.sha512"));
    assert_eq!(sha512.status, 200);
    assert_eq!(sha512.text().split("  ").next().unwrap().len(), 128);

    // ?filename= names the download.
    let named = download(&url, &format!("{kernel_path}?filename=vmlinuz-talos"));
    assert_eq!(named.status, 200);
    assert_eq!(
        named.header("content-disposition"),
        "attachment; filename=\"vmlinuz-talos\""
    );
    assert_eq!(named.body, kernel.body);

    // The cmdline with extra args and META: exactly what the imager prints.
    let cmdline = download(&url, &format!("/image/{custom}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(cmdline.status, 200, "{}", cmdline.text());
    let version = TalosVersion::parse(VERSION).unwrap();
    let extra = ["console=ttyS1".to_owned(), "net.ifnames=0".to_owned()];
    let meta = [MetaValue {
        key: 10,
        value: "hello".to_owned(),
    }];
    let expected = kernel_cmdline(&CmdlineInput {
        platform: "metal",
        arch: Arch::Amd64,
        version: &version,
        secureboot: false,
        iso: false,
        extra_kernel_args: &extra,
        overlay_kernel_args: &[],
        meta: &meta,
    });
    let text = cmdline.text();
    assert_eq!(text, expected);
    assert!(
        text.contains("console=ttyS1") && text.contains("net.ifnames=0"),
        "{text}"
    );
    assert!(
        text.contains("talos.environment=INSTALLER_META_BASE64="),
        "{text}"
    );

    // Errors, in the Go wording where there is one.
    let unknown = "0".repeat(64);
    assert_error(
        &curl(&url, &[], &format!("/image/{unknown}/{VERSION}/kernel-amd64")),
        404,
        "not found",
    );
    assert_error(
        &curl(&url, &[], &format!("/image/{empty}/{VERSION}/metal-amd64.ssd")),
        400,
        "error parsing profile from path: ",
    );
    assert_error(
        &curl(&url, &[], &format!("/image/{empty}/v1.99.0/kernel-amd64")),
        404,
        "version 1.99.0 is not available",
    );
    assert_error(
        &curl(
            &url,
            &[],
            &format!("/image/{empty}/{VERSION}/kernel-amd64?filename=a/b"),
        ),
        400,
        "invalid filename",
    );
    assert_error(
        &curl(&url, &[], &format!("/image/{empty}/{VERSION}/metal-amd64.iso")),
        501,
        "metal-amd64.iso is not built by this factory yet",
    );
}

/// With no wait budget, a cold request answers 503 with `Retry-After` at once; the in-process
/// builder publishes meanwhile, and a later request is served.
#[test]
fn cold_request_without_budget_is_503_then_served() {
    let out = tempfile::tempdir().unwrap();
    let options = stand_in_release::GenerateOptions {
        out: out.path().to_owned(),
        boot_parts: stand_in_release::BootPartsSource::Placeholders,
        key_pem: None,
    };
    stand_in_release::generate(&options).unwrap();

    let data = tempfile::tempdir().unwrap();
    let mut options = Options::with_data_dir(data.path());
    options.upstream = UpstreamChoice::Layout(out.path().to_owned());
    options.upstream_cosign_key = Some(out.path().join("cosign.pub"));
    options.image_wait_seconds = 0;
    let server = LocalServerThread::start(options, false, Duration::from_secs(240));
    let url = server.url().to_owned();
    let empty = post_schematic(&url, "customization: {}\n");
    let path = format!("/image/{empty}/{VERSION}/cmdline-aws-arm64");

    let cold = curl(&url, &[], &path);
    assert_error(&cold, 503, "cmdline-aws-arm64 is being built");
    assert!(cold.header("retry-after").parse::<u64>().unwrap() >= 1);

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let reply = curl(&url, &[], &path);
        if reply.status == 302 {
            break;
        }
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(std::time::Instant::now() < deadline, "not built within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let served = curl(&url, &["-L"], &path);
    assert_eq!(served.status, 200);
    assert!(
        served.text().starts_with("talos.platform=aws"),
        "{}",
        served.text()
    );
}
