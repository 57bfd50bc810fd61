//! The image route end to end (issue 4, first assets): `image-factory-local` started in-process
//! over the stand-in Talos release (OCI layouts from `tools/stand-in-release`, verified with its
//! `cosign.pub`), driven with the real `curl` CLI, on both backends (`fs::*`: the on-disk store;
//! `s3::*`: `--aws` on LocalStack, which fails, never skips, without it). Builds run on the local
//! server's own queue and builder.
//!
//! What is checked here is the route's HTTP behaviour: the bytes and headers it serves, its error
//! answers, and the refusal of hostile download names. Concurrency, tampering and the Lambda
//! wiring are in `build_on_miss.rs`.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::curl::{curl, Reply};
use crate::common::image::{assert_error, assert_same_bytes, download, redirect_key, Backend, ImageServer};
use crate::common::stand_in::VERSION;
use factory_core::arch::Arch;
use factory_core::cmdline::{kernel_cmdline, CmdlineInput};
use factory_core::schematic::MetaValue;
use factory_core::version::TalosVersion;
use sha2::{Digest, Sha256};

crate::common::image::backend_tests!(kernel_and_cmdline, request_errors, hostile_filenames);

fn kernel_and_cmdline(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let empty = server.post_schematic("customization: {}\n");
    let custom = server.post_schematic(
        "customization:\n  extraKernelArgs:\n    - console=ttyS1\n    - net.ifnames=0\n  meta:\n    - key: 10\n      value: hello\n",
    );

    // The kernel: the release's bytes.
    let kernel_path = format!("/image/{empty}/{VERSION}/kernel-amd64");
    let kernel = download(&url, &kernel_path);
    assert_eq!(kernel.status, 200, "{}", kernel.text());
    assert_same_bytes(&kernel.body, &server.release_kernel(), "kernel-amd64");
    assert_eq!(kernel.header("content-type"), "application/octet-stream");

    // Cached: a redirect at once, to the content-addressed object.
    let again = curl(&url, &[], &kernel_path);
    let key = redirect_key(&again);
    assert!(
        key.ends_with(&format!(
            "/{}/kernel-amd64",
            hex::encode(Sha256::digest(&kernel.body))
        )),
        "{key}"
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
    assert_same_bytes(&named.body, &kernel.body, "named kernel");

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
}

/// Refused requests, in the Go wording where there is one, for `GET` and `HEAD`; none of them
/// reaches the build queue.
fn request_errors(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let empty = server.post_schematic("customization: {}\n");
    let unknown = "0".repeat(64);
    let cases = [
        (
            format!("/image/{unknown}/{VERSION}/kernel-amd64"),
            404,
            format!("schematic ID \"{unknown}\" not found"),
        ),
        (
            format!("/image/not-a-schematic-id/{VERSION}/kernel-amd64"),
            404,
            "schematic ID \"not-a-schematic-id\" not found".to_owned(),
        ),
        (
            format!("/image/{empty}/{VERSION}/metal-amd64.ssd"),
            400,
            "error parsing profile from path: ".to_owned(),
        ),
        (
            format!("/image/{empty}/v1.99.0/kernel-amd64"),
            404,
            "version 1.99.0 is not available".to_owned(),
        ),
        (
            format!("/image/{empty}/1.x/kernel-amd64"),
            400,
            "invalid version \"v1.x\"".to_owned(),
        ),
        (
            format!("/image/{empty}/{VERSION}/installer-amd64-secureboot.tar"),
            501,
            "installer-amd64-secureboot.tar: SecureBoot assets are not built by this factory yet".to_owned(),
        ),
        (
            format!("/image/{empty}/{VERSION}/metal-amd64-secureboot.iso.sha256"),
            501,
            "metal-amd64-secureboot.iso: SecureBoot assets are not built by this factory yet".to_owned(),
        ),
    ];
    for (path, status, message) in &cases {
        let reply = curl(&url, &[], path);
        assert_error(&reply, *status, message);
        assert!(
            reply.header("content-type").starts_with("text/plain"),
            "{path}: {:?}",
            reply.headers
        );
        let head = curl(&url, &["--head"], path);
        assert_eq!(head.status, *status, "HEAD {path}");
    }
    // Nothing was enqueued: the first real build is the builder's only one.
    let kernel = download(&url, &format!("/image/{empty}/{VERSION}/kernel-amd64"));
    assert_eq!(kernel.status, 200, "{}", kernel.text());
    assert_eq!(server.built_at_least(1), 1);
    assert_eq!(server.list("index/").len(), 1, "{:?}", server.list("index/"));
}

/// Download names that could escape the quoted `Content-Disposition` value, name another
/// directory or not survive a header: each a `400` naming the problem, on the image route and on
/// the object route, `GET` and `HEAD`, with no header of the attacker's making in the answer.
fn hostile_filenames(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let empty = server.post_schematic("customization: {}\n");
    let image = format!("/image/{empty}/{VERSION}/kernel-amd64");
    assert_eq!(download(&url, &image).status, 200);
    let object = format!("/{}", redirect_key(&curl(&url, &[], &image)));

    let long = "a".repeat(300);
    let cases: &[(&str, &str)] = &[
        ("a/b", "must not contain path separators"),
        ("a%2Fb", "must not contain path separators"),
        ("..%2F..%2Fetc%2Fpasswd", "must not contain path separators"),
        ("a%5Cb", "must not contain path separators"),
        ("..", "must not contain \"..\""),
        ("a..b", "must not contain \"..\""),
        ("a%22b", "must not contain quotes"),
        ("a%22%3B%20filename%3Devil", "must not contain quotes"),
        ("a%0D%0AX-Injected:%201", "must not contain control characters"),
        ("%0D%0AX-Injected:%201", "must not contain control characters"),
        ("%00", "must not contain control characters"),
        ("a%00b", "must not contain control characters"),
        (&long, "longer than 255 bytes"),
        ("k%C3%A9rnel", "must be printable ASCII"),
        ("%E2%80%AEexe.kernel", "must be printable ASCII"),
    ];
    for target in [&image, &object] {
        for (value, reason) in cases {
            let path = format!("{target}?filename={value}");
            if backend == Backend::Stack && target == &object {
                // In the deployed stack, /assets/* is the CDN's, and its viewer-response function
                // ignores a name that is not safe (template.yaml, AssetHeadersFunction): the key's
                // own last segment names the download instead, and nothing is injected.
                let get = curl(&url, &[], &path);
                assert_eq!(get.status, 200, "GET {path}");
                assert!(
                    !get.headers.contains_key("x-injected"),
                    "{path}: {:?}",
                    get.headers
                );
                // Safe by the function's rule (`[A-Za-z0-9._+-]{1,200}`, not `.`/`..`), a value is
                // used as it is (`a..b` is harmless in a header); anything else is replaced.
                let safe = !value.is_empty()
                    && *value != "."
                    && *value != ".."
                    && value.len() <= 200
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
                let expected = if safe { *value } else { "kernel-amd64" };
                assert_eq!(
                    get.header("content-disposition"),
                    format!("attachment; filename=\"{expected}\""),
                    "{path}"
                );
                continue;
            }
            let get = curl(&url, &[], &path);
            assert_error(&get, 400, &format!("invalid filename: {reason}"));
            assert_not_injected(&get, &path);
            let head = curl(&url, &["--head"], &path);
            assert_eq!(head.status, 400, "HEAD {path}");
            assert_not_injected(&head, &path);
        }
        // The same routes with an acceptable name still serve.
        let named = download(&url, &format!("{target}?filename=vmlinuz"));
        assert_eq!(named.status, 200, "{target}: {}", named.text());
        assert_eq!(
            named.header("content-disposition"),
            "attachment; filename=\"vmlinuz\""
        );
    }
}

/// The dot on its own is not a file name either (it names the directory it is in).
#[test]
fn lone_dot_filename_is_refused() {
    let server = ImageServer::start(Backend::Fs);
    let url = server.url().to_owned();
    let empty = server.post_schematic("customization: {}\n");
    let image = format!("/image/{empty}/{VERSION}/kernel-amd64");
    assert_eq!(download(&url, &image).status, 200);
    let object = format!("/{}", redirect_key(&curl(&url, &[], &image)));
    for target in [&image, &object] {
        let path = format!("{target}?filename=.");
        let get = curl(&url, &[], &path);
        assert_error(&get, 400, "invalid filename");
        assert_eq!(curl(&url, &["--head"], &path).status, 400, "HEAD {path}");
    }
}

fn assert_not_injected(reply: &Reply, path: &str) {
    assert!(
        !reply.headers.contains_key("x-injected"),
        "{path}: {:?}",
        reply.headers
    );
    assert_eq!(
        reply.header("content-disposition"),
        "",
        "{path}: a refused name is not echoed in a header"
    );
}

/// With no wait budget, a cold request answers 503 with `Retry-After` at once; the in-process
/// builder publishes meanwhile, and a later request is served.
#[test]
fn cold_request_without_budget_is_503_then_served() {
    let server = ImageServer::start_with(Backend::Fs, |options| options.image_wait_seconds = 0);
    let url = server.url().to_owned();
    let empty = server.post_schematic("customization: {}\n");
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
