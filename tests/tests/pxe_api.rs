//! The PXE route (issue 5): `GET|HEAD /pxe/{schematic}/{version}/{platform}-{arch}[-secureboot]`
//! of `image-factory-local` started in-process over the stand-in Talos release, driven with the
//! real `curl` CLI on both backends (`fs::*`: the on-disk store; `s3::*`: `--aws` on LocalStack,
//! which fails, never skips, without it); plus the `pxe` Lambda function's router with an
//! external PXE URL.
//!
//! * The script, byte for byte (golden), for a schematic with extra kernel args and META; its
//!   kernel arguments are the body of the `cmdline-<platform>-<arch>[-secureboot]` asset.
//! * The arch aliases (`x86_64`, `i386`), arm64, other platforms, the SecureBoot variant.
//! * Refusals in the image route's order and wording, for `GET` and `HEAD`.
//! * Serving a script builds nothing: the command line is computed, not built.
//!
//! Booting these scripts with iPXE in QEMU is `pxe_boot.rs`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use crate::common::curl::curl;
use crate::common::image::{assert_error, download, Backend, ImageServer};
use crate::common::stand_in::{StandIn, VERSION};
use factory_http::{AppState, HttpConfig};
use factory_store::fs::FsStore;
use factory_store::ContentStore;
use tower::ServiceExt as _;

crate::common::image::backend_tests!(golden_scripts, aliases_and_platforms, request_errors);

/// Two extra kernel args (one replacing the default console) and a META value.
const SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - console=ttyS0\n    - net.ifnames=0\n  \
     meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n";

/// The `cmdline-metal-amd64` of [`SCHEMATIC`] at [`VERSION`] (Talos 1.12 defaults; the extra
/// `console=` replaces the default one in place; META as `talos.environment`, spec §6.4).
const CMDLINE: &str =
    "talos.platform=metal console=ttyS0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 \
     nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 \
     talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ== net.ifnames=0";

/// `cmdline-metal-amd64-secureboot`: `lockdown=confidentiality` after the defaults, before META
/// and the extra args.
const SECURE_CMDLINE: &str = "talos.platform=metal console=ttyS0 init_on_alloc=1 slab_nomerge pti=on \
     consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 \
     lockdown=confidentiality talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ== \
     net.ifnames=0";

/// The standard script (kernel + initramfs), as served.
fn standard_script(base: &str, id: &str, arch: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         \n\
         set talos-attempt:int32 0\n\
         :talos-retry\n\
         imgfree\n\
         kernel {base}/image/{id}/v1.12.1/kernel-{arch} initrd=initramfs-{arch}.xz {cmdline} || goto talos-wait\n\
         initrd {base}/image/{id}/v1.12.1/initramfs-{arch}.xz || goto talos-wait\n\
         boot\n\
         :talos-wait\n\
         inc talos-attempt\n\
         iseq ${{talos-attempt}} 30 && goto talos-failed ||\n\
         echo Talos boot assets not ready (attempt ${{talos-attempt}} of 30), retrying in 10 s\n\
         sleep 10\n\
         goto talos-retry\n\
         :talos-failed\n\
         echo Talos boot assets could not be downloaded after 30 attempts\n\
         exit 1\n"
    )
}

/// The SecureBoot script (one UKI), as served.
fn secureboot_script(base: &str, id: &str, cmdline: &str) -> String {
    format!(
        "#!ipxe\n\
         \n\
         set talos-attempt:int32 0\n\
         :talos-retry\n\
         imgfree\n\
         kernel {base}/image/{id}/v1.12.1/metal-amd64-secureboot-uki.efi {cmdline} || goto talos-wait\n\
         boot\n\
         :talos-wait\n\
         inc talos-attempt\n\
         iseq ${{talos-attempt}} 30 && goto talos-failed ||\n\
         echo Talos boot assets not ready (attempt ${{talos-attempt}} of 30), retrying in 10 s\n\
         sleep 10\n\
         goto talos-retry\n\
         :talos-failed\n\
         echo Talos boot assets could not be downloaded after 30 attempts\n\
         exit 1\n"
    )
}

/// The arguments of the script's `kernel` line, without the image URL, the `initrd=` argument
/// and the retry branch: what the cmdline asset holds.
fn kernel_args(script: &str) -> String {
    let line = script
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in\n{script}"));
    let line = line.strip_suffix(" || goto talos-wait").expect("retry branch");
    let mut words = line.split(' ').skip(2).peekable();
    if words.peek().is_some_and(|w| w.starts_with("initrd=")) {
        words.next();
    }
    words.collect::<Vec<_>>().join(" ")
}

/// A `200 text/plain; charset=utf-8` script; its text.
fn script(url: &str, path: &str) -> String {
    let reply = curl(url, &[], path);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        "text/plain; charset=utf-8",
        "{path}"
    );
    reply.text()
}

/// The body of a built cmdline asset.
fn cmdline_asset(url: &str, path: &str) -> String {
    let reply = download(url, path);
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    reply.text()
}

fn golden_scripts(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let id = server.post_schematic(SCHEMATIC);

    let standard = script(&url, &format!("/pxe/{id}/{VERSION}/metal-amd64"));
    assert_eq!(standard, standard_script(&url, &id, "amd64", CMDLINE));
    // The version without `v` gives the same script (URLs with `v`, as Go).
    assert_eq!(script(&url, &format!("/pxe/{id}/1.12.1/metal-amd64")), standard);

    // HEAD: the headers of GET, no body.
    let head = curl(&url, &["--head"], &format!("/pxe/{id}/{VERSION}/metal-amd64"));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(head.header("content-length"), standard.len().to_string());
    // (curl writes the headers of a HEAD answer where the body would go.)
    assert!(!head.text().contains("#!ipxe"), "{}", head.text());

    let secure = script(&url, &format!("/pxe/{id}/{VERSION}/metal-amd64-secureboot"));
    assert_eq!(secure, secureboot_script(&url, &id, SECURE_CMDLINE));

    // Computed, not built: nothing was enqueued for the scripts.
    assert_eq!(server.built(), 0);
    assert!(server.list("index/").is_empty(), "{:?}", server.list("index/"));

    // The script's kernel arguments are the cmdline assets, byte for byte.
    let asset = cmdline_asset(&url, &format!("/image/{id}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(asset, CMDLINE);
    assert_eq!(kernel_args(&standard), asset);
    let asset = cmdline_asset(
        &url,
        &format!("/image/{id}/{VERSION}/cmdline-metal-amd64-secureboot"),
    );
    assert_eq!(kernel_args(&secure), asset);
    assert_eq!(asset, SECURE_CMDLINE);
}

fn aliases_and_platforms(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let id = server.post_schematic(SCHEMATIC);
    let pxe = |segment: &str| script(&url, &format!("/pxe/{id}/{VERSION}/{segment}"));

    // iPXE's `${buildarch}` names: x86_64 and i386 are amd64.
    let amd64 = pxe("metal-amd64");
    assert_eq!(pxe("metal-x86_64"), amd64);
    assert_eq!(pxe("metal-i386"), amd64);
    assert_eq!(pxe("metal-x86_64-secureboot"), pxe("metal-amd64-secureboot"));

    // Other arches and platforms: the same script around their own command line, which is the
    // cmdline asset of that platform and arch.
    let before = server.built();
    assert_eq!(before, 0);
    for (segment, arch, platform) in [
        ("metal-arm64", "arm64", "metal"),
        ("aws-arm64", "arm64", "aws"),
        ("equinixMetal-amd64", "amd64", "equinixMetal"),
        ("digital-ocean-amd64", "amd64", "digital-ocean"),
    ] {
        let text = pxe(segment);
        let asset = cmdline_asset(&url, &format!("/image/{id}/{VERSION}/cmdline-{segment}"));
        assert!(
            asset.starts_with(&format!("talos.platform={platform} ")),
            "{asset}"
        );
        assert_eq!(text, standard_script(&url, &id, arch, &asset), "{segment}");
    }
}

/// Refused requests, in the image route's order and wording, for `GET` and `HEAD`; none of
/// them builds anything.
fn request_errors(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let id = server.post_schematic(SCHEMATIC);
    let overlay =
        server.post_schematic("overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\n");
    let unknown = "0".repeat(64);
    let cases = [
        (
            format!("/pxe/{unknown}/{VERSION}/metal-amd64"),
            404,
            format!("schematic ID \"{unknown}\" not found"),
        ),
        (
            format!("/pxe/not-a-schematic-id/{VERSION}/metal-amd64"),
            404,
            "schematic ID \"not-a-schematic-id\" not found".to_owned(),
        ),
        // The schematic comes first: an unknown one with a bad version and path is still a 404.
        (
            format!("/pxe/{unknown}/1.x/metal"),
            404,
            format!("schematic ID \"{unknown}\" not found"),
        ),
        (
            format!("/pxe/{id}/1.x/metal-amd64"),
            400,
            "invalid version \"v1.x\"".to_owned(),
        ),
        (
            format!("/pxe/{id}/v1.99.0/metal-amd64"),
            404,
            "version 1.99.0 is not available".to_owned(),
        ),
        // The version before the path.
        (
            format!("/pxe/{id}/v1.99.0/metal"),
            404,
            "version 1.99.0 is not available".to_owned(),
        ),
        (
            format!("/pxe/{id}/{VERSION}/metal-aarch64"),
            400,
            "error parsing profile from path: invalid architecture: \"aarch64\"".to_owned(),
        ),
        (
            format!("/pxe/{id}/{VERSION}/metal"),
            400,
            "error parsing profile from path: invalid platform-arch: \"metal\"".to_owned(),
        ),
        (
            format!("/pxe/{id}/{VERSION}/metal-amd64.iso"),
            400,
            "error parsing profile from path: invalid architecture: \"amd64.iso\"".to_owned(),
        ),
        (
            format!("/pxe/{overlay}/v1.6.4/metal-arm64"),
            400,
            "error enhancing profile from schematic: overlay is not supported for Talos version".to_owned(),
        ),
        (
            format!("/pxe/{id}/{VERSION}/metal-amd64/extra"),
            404,
            "404 page not found".to_owned(),
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
    // Not a route for other methods (the Allow header names GET and HEAD).
    let post = curl(&url, &["-X", "POST"], &format!("/pxe/{id}/{VERSION}/metal-amd64"));
    assert_eq!(post.status, 405, "{}", post.text());
    assert!(post.header("allow").contains("GET"), "{:?}", post.headers);
    assert_eq!(server.built(), 0);
    assert!(server.list("index/").is_empty());
}

/// The `pxe` Lambda function's router, fed an API Gateway (HTTP API, payload 2.0) event as
/// `lambda_http::run` would: only the PXE route, its image URLs on `FACTORY_EXTERNAL_PXE_URL`
/// rather than the external URL.
#[test]
fn pxe_function_uses_the_external_pxe_url() {
    use lambda_http::IntoResponse as _;

    let stand_in = StandIn::generate();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ContentStore> = Arc::new(FsStore::new(dir.path().join("store")).unwrap());
    let config = HttpConfig::from_lookup(|name| match name {
        "FACTORY_EXTERNAL_URL" => Some("https://factory.example.com/".to_owned()),
        "FACTORY_EXTERNAL_PXE_URL" => Some("http://pxe.example.com:8080/talos".to_owned()),
        _ => None,
    })
    .unwrap();
    let state = AppState::new(Arc::clone(&store), config).with_catalog(stand_in.catalog(Arc::clone(&store)));
    let app = factory_http::pxe_app(state.clone());
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/lambda/apigw_v2_get_schematic.json"
    ))
    .unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let schematic = factory_core::schematic::Schematic::parse(SCHEMATIC.as_bytes()).unwrap();
        let (id, _, _) = state.schematics().put(&schematic).await.unwrap();
        let id = id.as_str().to_owned();
        let invoke = |path: String, parameters: serde_json::Value| {
            let mut event: serde_json::Value = serde_json::from_str(&fixture).unwrap();
            let route = "ANY /pxe/{schematic}/{version}/{path}";
            event["routeKey"] = route.into();
            event["requestContext"]["routeKey"] = route.into();
            event["rawPath"] = path.clone().into();
            event["requestContext"]["http"]["path"] = path.into();
            event["pathParameters"] = parameters;
            let app = app.clone();
            async move {
                let request = lambda_http::request::from_str(&event.to_string()).unwrap();
                let response = app.oneshot(request).await.unwrap();
                let (parts, body) = response.into_response().await.into_parts();
                (
                    parts.status,
                    parts.headers,
                    String::from_utf8_lossy(body.as_ref()).into_owned(),
                )
            }
        };
        let (status, headers, text) = invoke(
            format!("/pxe/{id}/{VERSION}/metal-amd64"),
            serde_json::json!({"schematic": id, "version": VERSION, "path": "metal-amd64"}),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        assert_eq!(
            text,
            standard_script("http://pxe.example.com:8080/talos", &id, "amd64", CMDLINE)
        );
        // Only its own route.
        let (status, _, _) = invoke(
            format!("/image/{id}/{VERSION}/kernel-amd64"),
            serde_json::json!({}),
        )
        .await;
        assert_eq!(status, 404);
    });
}
