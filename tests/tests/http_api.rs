//! The HTTP API end to end: `image-factory-local` started in-process on `127.0.0.1:0` and driven
//! with the real `curl` CLI, once over the on-disk store (`fs_store::*`) and once over S3 on
//! LocalStack (`localstack_s3::*`; needs `AWS_ENDPOINT_URL` etc., see `common::LOCALSTACK_HELP`,
//! and fails, never skips, without it).
//!
//! Each check is a plain function run against both backends by `api_tests!`, so the two
//! storage adapters must behave identically at the HTTP level.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::curl::Reply;
use crate::common::local_server::LocalServerThread;
use factory_local::Options;

/// `{}` / `customization: {}` (spec §5.3 conformance vector).
const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
/// `customization:\n  extraKernelArgs: [noapic, nolapic]`.
const KERNEL_ARGS_ID: &str = "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c";
const KERNEL_ARGS_YAML: &str = "customization:\n  extraKernelArgs: [noapic, nolapic]\n";

// ---------------------------------------------------------------------------------------------
// The server under test

/// A running `image-factory-local`, stopped (gracefully) on drop. It runs on a runtime of its own
/// in a background thread, so the test thread can block on `curl` freely.
struct Server {
    url: String,
    dir: tempfile::TempDir,
    _server: Option<LocalServerThread>,
    stack: Option<(
        crate::common::stack::StackThread,
        crate::common::stand_in::StandIn,
    )>,
}

impl Server {
    /// Over the embedded filesystem store in a fresh temp dir.
    fn fs() -> Self {
        Self::start(|_| {}, false)
    }

    /// Over S3 on LocalStack: the run's bucket, under a prefix unique to this test.
    fn localstack() -> Self {
        crate::common::localstack_endpoint(); // Fails at once, with instructions, when unset.
        let bucket = run_bucket().to_owned();
        Self::start(
            move |options| {
                options.aws = true;
                options.bucket = bucket;
                options.prefix = format!("{}/", crate::common::unique_name("http-api"));
            },
            true,
        )
    }

    fn start(configure: impl FnOnce(&mut Options) + Send + 'static, aws: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Built-in defaults, not the developer's environment: the tests choose the backend.
        let mut options = Options::with_data_dir(dir.path().join("data"));
        configure(&mut options);

        let server = LocalServerThread::start(options, aws, Duration::from_secs(60));
        Self {
            url: server.url().to_owned(),
            dir,
            _server: Some(server),
            stack: None,
        }
    }

    /// The serverless stack of template.yaml (the functions' release binaries under the Lambda
    /// Runtime API emulator, behind the template's CDN and HTTP API, on LocalStack).
    fn stack() -> Self {
        let stand_in = crate::common::stand_in::StandIn::generate();
        let stack = crate::common::stack::StackThread::start(&stand_in, &[]);
        Self {
            url: stack.url().to_owned(),
            dir: tempfile::tempdir().expect("tempdir"),
            _server: None,
            stack: Some((stack, stand_in)),
        }
    }

    /// A file in this test's scratch directory with `contents`.
    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write scratch file");
        path
    }
}

/// One bucket for the whole run (unique, so runs never see each other's objects).
fn run_bucket() -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| crate::common::unique_name("http-api"))
}

// ---------------------------------------------------------------------------------------------
// curl

/// `curl <args>` against the server under test.
fn curl(server: &Server, args: &[&str], path: &str) -> Reply {
    crate::common::curl::curl(&server.url, args, path)
}

fn post_schematic(server: &Server, body: &[u8]) -> Reply {
    let file = server.file("schematic.yaml", body);
    let data = format!("@{}", file.display());
    curl(server, &["-X", "POST", "--data-binary", &data], "/schematics")
}

fn get(server: &Server, path: &str) -> Reply {
    curl(server, &[], path)
}

/// A Go `http.Error` answer: status, plain text, message + newline.
fn assert_plain_error(reply: &Reply, status: u16, what: &str) {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        "text/plain; charset=utf-8",
        "{what}"
    );
    assert_eq!(reply.header("x-content-type-options"), "nosniff", "{what}");
    let text = reply.text();
    assert!(
        text.ends_with('\n') && text.trim().len() > 3,
        "{what}: a message is expected, got {text:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Checks, each run against both backends

fn create_and_get_schematics(server: &Server) {
    for (body, id) in [
        (&b"{}\n"[..], EMPTY_ID),
        (KERNEL_ARGS_YAML.as_bytes(), KERNEL_ARGS_ID),
    ] {
        let created = post_schematic(server, body);
        assert_eq!(created.status, 201, "{}", created.text());
        assert_eq!(created.header("content-type"), "application/json");
        assert!(
            created.text().ends_with("}\n"),
            "Go's json.Encoder adds a newline"
        );
        let json = created.json();
        assert_eq!(json["id"], id);
        let canonical = json["schematic"].as_str().expect("schematic is a string");

        let fetched = get(server, &format!("/schematics/{id}"));
        assert_eq!(fetched.status, 200, "{}", fetched.text());
        assert_eq!(fetched.header("content-type"), "application/yaml");
        assert_eq!(fetched.text(), canonical);
    }
    assert_eq!(
        get(server, &format!("/schematics/{EMPTY_ID}")).text(),
        "customization: {}\n"
    );
}

/// Every schematic ID vector of the Go factory's tests (spec §5.3), and the go-yaml quoting and
/// typing cases of the differential corpus (its first, hand-written part), through `curl`: the
/// ID and canonical YAML in the answer are the Go factory's, and `GET` returns the same YAML.
fn go_factory_ids_through_curl(server: &Server) {
    let spec: &[(&str, &str)] = &[
        ("customization: {}", EMPTY_ID),
        ("customization:\n  extraKernelArgs: [noapic, nolapic]", KERNEL_ARGS_ID),
        ("customization:\n  extraKernelArgs: [nolapic, nomodeset]", "e0fb1129bbbdfb5d002e94af4cdce712a8370e850950a33a242d4c3f178c532d"),
        ("customization:\n  meta:\n    - key: 0xa\n      value: foo", "d308a2a5ee2277bed5fbaa104fcbc8d59122abfa737df987a95b4ca763459a7f"),
        ("customization:\n  meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'", "fe866116408a5a13dab7d5003eb57a00954ea81ebeec3fbbcd1a6d4462a00036"),
        ("customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/amd-ucode, siderolabs/gvisor, siderolabs/gasket-driver]", "51ff3e49313773332729a5c04e57af0dbe2e6d3f65ff638e6d4c3a05065fefff"),
        ("customization:\n  systemExtensions:\n    officialExtensions: [siderolabs/qemu-guest-agent]", "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"),
        ("overlay:\n  image: siderolabs/sbc-raspberrypi\n  name: rpi_generic\ncustomization: {}", "ee21ef4a5ef808a9b7484cc0dda0f25075021691c8c09a276591eedb638ea1f9"),
        ("customization:\n  secureboot:\n    includeWellKnownCertificates: true", "fa8e05f142a851d3ee568eb0a8e5841eaf6b0ebc8df9a63df16ac5ed2c04f3e6"),
        ("customization:\n  diskImage:\n    sectorSize: 4096", "92833e9ddd9bb9e11b2464fa5525429f01866306d52ebd882ee08d7918f6d1ea"),
        ("customization:\n  bootloader: grub", "39d496b2cbdb6265d3b714514c5334bf010f1b4d31b23b9e38c80fb2f3ad7ecb"),
        ("customization:\n  bootloader: SD-BOOT", "9ed5fecdacb36b5c5427b87d409f1065cfb2df69b0f71c58b868d9d466d8dab3"),
        ("customization:\n  bootloader: dual-boot", "43a1a6104d8dcd6547983f4ed13abb6f5e8a1b2fdad796c69e7db6e95d122884"),
        ("customization:\n  embeddedMachineConfiguration: |\n    apiVersion: v1alpha1\n    kind: HostnameConfig\n    hostname: x\n", "9ac3dc5caac49e82fbbec38c43da76931796494729505840e038aea736ac46f1"),
    ];
    let mut cases: Vec<(String, String, Option<String>)> = spec
        .iter()
        .map(|(body, id)| ((*body).to_owned(), (*id).to_owned(), None))
        .collect();
    let corpus = include_str!("../../shared/factory-core/tests/data/go-yaml-vectors.jsonl");
    for line in corpus.split('\n').take(150).filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("vector");
        // `owner` is Enterprise only (a community factory answers 400, checked elsewhere) and
        // timestamps in overlay options are a documented refusal (docs/schematics.md).
        let canonical = v["canonical"].as_str().unwrap_or_default();
        if v["ok"] == true && !canonical.starts_with("owner:") && !canonical.contains("T00:00:00Z") {
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            cases.push((field("input"), field("id"), Some(field("canonical"))));
        }
    }
    assert!(cases.len() > 100, "the corpus should give many quoting cases");
    for (body, id, canonical) in &cases {
        let created = post_schematic(server, body.as_bytes());
        assert_eq!(created.status, 201, "{body:?}: {}", created.text());
        let json = created.json();
        assert_eq!(json["id"], id.as_str(), "{body:?}");
        if let Some(canonical) = canonical {
            assert_eq!(json["schematic"], canonical.as_str(), "{body:?}");
        }
        let fetched = get(server, &format!("/schematics/{id}"));
        assert_eq!(fetched.status, 200);
        assert_eq!(
            fetched.text(),
            json["schematic"].as_str().unwrap_or_default(),
            "{body:?}"
        );
    }
}

fn recreating_a_schematic_is_idempotent(server: &Server) {
    let first = post_schematic(server, KERNEL_ARGS_YAML.as_bytes());
    let second = post_schematic(server, KERNEL_ARGS_YAML.as_bytes());
    assert_eq!(
        (first.status, second.status),
        (201, 201),
        "{} / {}",
        first.text(),
        second.text()
    );
    assert_eq!(first.body, second.body);
    // Another spelling of the same schematic (JSON is YAML) is the same schematic.
    let json = post_schematic(
        server,
        br#"{"customization":{"extraKernelArgs":["noapic","nolapic"]}}"#,
    );
    assert_eq!(json.status, 201, "{}", json.text());
    assert_eq!(json.body, first.body);
}

fn unknown_schematics_are_not_found(server: &Server) {
    for id in [
        "0".repeat(64),
        "aaaaaaaaaaaa".to_owned(),
        KERNEL_ARGS_ID.to_uppercase(),
    ] {
        let reply = get(server, &format!("/schematics/{id}"));
        assert_plain_error(&reply, 404, &id);
        assert_eq!(reply.text(), "schematic not found\n");
    }
}

fn bad_schematics_are_client_errors_with_a_message(server: &Server) {
    let cases: [(&str, &[u8]); 6] = [
        ("unknown field", b"something: 1\n"),
        ("malformed YAML", b"customization: [\n"),
        (
            "meta key 300",
            b"customization:\n  meta:\n    - key: 300\n      value: x\n",
        ),
        ("bootloader foo", b"customization:\n  bootloader: foo\n"),
        ("owner", b"owner: x\n"),
        ("empty body", b""),
    ];
    for (what, body) in cases {
        let reply = post_schematic(server, body);
        assert_plain_error(&reply, 400, what);
    }
    let owner = post_schematic(server, b"owner: x\n");
    assert_eq!(
        owner.text(),
        "owner field is only supported in Enterprise edition\n"
    );
}

fn oversized_bodies_are_refused_with_413(server: &Server) {
    let reply = post_schematic(server, &vec![b'#'; 2 * 1024 * 1024]);
    assert_plain_error(&reply, 413, "2 MiB body");
    assert!(reply.text().contains("too large"), "{}", reply.text());
}

fn responses_carry_server_and_request_id(server: &Server) {
    let reply = get(server, "/healthz");
    assert!(
        reply
            .header("server")
            .starts_with("Image Factory talos-factory-rs "),
        "{:?}",
        reply.headers
    );
    let id = reply.header("x-request-id");
    assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a UUID: {id:?}");
    assert_ne!(
        get(server, "/healthz").header("x-request-id"),
        id,
        "fresh per request"
    );

    let echoed = curl(server, &["-H", "X-Request-ID: my-trace-42"], "/schematics/nope");
    assert_eq!(echoed.header("x-request-id"), "my-trace-42");
    assert!(echoed.headers.contains_key("server"), "errors carry it too");
}

fn cors_preflight_and_origin(server: &Server) {
    let preflight = curl(
        server,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://foo.com",
            "-H",
            "Access-Control-Request-Method: GET",
            "-H",
            "Access-Control-Request-Headers: cache-control",
        ],
        &format!("/schematics/{EMPTY_ID}"),
    );
    assert!(preflight.status < 300, "{}", preflight.status);
    assert!(["*", "https://foo.com"].contains(&preflight.header("access-control-allow-origin")));
    assert!(preflight.header("access-control-allow-methods").contains("GET"));
    assert_eq!(
        preflight
            .header("access-control-allow-headers")
            .to_ascii_lowercase(),
        "cache-control"
    );

    let simple = curl(
        server,
        &["-H", "Origin: https://foo.com"],
        "/oci/cosign/signing-key.pub",
    );
    assert_eq!(simple.status, 200);
    assert!(["*", "https://foo.com"].contains(&simple.header("access-control-allow-origin")));
    assert!(simple
        .header("access-control-expose-headers")
        .contains("Content-Disposition"));
}

fn wrong_method_is_405_with_allow(server: &Server) {
    let reply = curl(server, &["-X", "DELETE"], "/schematics");
    assert_plain_error(&reply, 405, "DELETE /schematics");
    assert_eq!(reply.header("allow"), "POST");
    assert!(reply.text().contains("DELETE"), "{}", reply.text());
}

fn unknown_path_is_404(server: &Server) {
    let reply = get(server, "/no/such/path");
    assert_plain_error(&reply, 404, "unknown path");
    assert_eq!(reply.text(), "404 page not found\n");
}

fn signing_key_is_a_pem_public_key(server: &Server) {
    let reply = get(server, "/oci/cosign/signing-key.pub");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/x-pem-file");
    let pem = server.file("signing-key.pub", &reply.body);
    assert_openssl_reads_public_key(&pem);
    // It is the key generated on first start in the data directory.
    // (In the serverless stack: the key in the template's signing-key secret.)
    let private = match &server.stack {
        Some((stack, _)) => stack.key().private_key_pem().expect("PEM"),
        None => std::fs::read_to_string(server.dir.path().join("data/signing-key.pem")).expect("key file"),
    };
    let key = factory_signing::SigningKey::from_pem(&private).expect("stored key");
    assert_eq!(key.public_key_pem().as_bytes(), reply.body.as_slice());
}

fn assert_openssl_reads_public_key(pem: &Path) {
    let output = Command::new("openssl")
        .args(["pkey", "-pubin", "-noout", "-in"])
        .arg(pem)
        .output()
        .expect("the openssl CLI is needed by this test (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn health_and_readiness(server: &Server) {
    for path in ["/healthz", "/readyz"] {
        let reply = get(server, path);
        assert_eq!(
            (reply.status, reply.body.len()),
            (200, 0),
            "GET {path}: {}",
            reply.text()
        );
        let head = curl(server, &["--head"], path);
        assert_eq!(head.status, 200, "HEAD {path}");
    }
}

macro_rules! api_tests {
    ($($check:ident),* $(,)?) => {
        /// Over the embedded filesystem store.
        mod fs_store {
            $( #[test] fn $check() { super::$check(&super::Server::fs()); } )*
        }
        /// Over S3 on LocalStack.
        mod localstack_s3 {
            $( #[test] fn $check() { super::$check(&super::Server::localstack()); } )*
        }
        /// The serverless stack: Lambda functions behind the HTTP API and CDN, on LocalStack.
        mod serverless_stack {
            $( #[test] fn $check() { super::$check(&super::Server::stack()); } )*
        }
    };
}

api_tests!(
    create_and_get_schematics,
    go_factory_ids_through_curl,
    recreating_a_schematic_is_idempotent,
    unknown_schematics_are_not_found,
    bad_schematics_are_client_errors_with_a_message,
    oversized_bodies_are_refused_with_413,
    responses_carry_server_and_request_id,
    cors_preflight_and_origin,
    wrong_method_is_405_with_allow,
    unknown_path_is_404,
    signing_key_is_a_pem_public_key,
    health_and_readiness,
);
