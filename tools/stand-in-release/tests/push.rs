//! `push` against a real registry: Debian's docker-registry started by `registry/start` on a
//! free port with its own storage, read back with skopeo.

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

use common::{generated, require_tool, run, stdout, workspace_root};
use stand_in_release::push;
use tempfile::TempDir;

/// A docker-registry on a free loopback port, stopped (by its PID file) when dropped.
struct Registry {
    port: u16,
    _data: TempDir,
}

impl Registry {
    fn start() -> Self {
        require_tool("docker-registry");
        require_tool("curl");
        // Ask the OS for a free port, release it, and let the registry take it (small race,
        // fine for a test machine).
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let data = TempDir::new().expect("temp dir");
        run(Command::new(script("start"))
            .env("FACTORY_REGISTRY_PORT", port.to_string())
            .env("FACTORY_REGISTRY_DATA", data.path()));
        Self { port, _data: data }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = Command::new(script("stop"))
            .env("FACTORY_REGISTRY_PORT", self.port.to_string())
            .output();
        let _ = std::fs::remove_file(workspace_root().join(format!(".test-run/registry-{}.yml", self.port)));
        let _ = std::fs::remove_file(workspace_root().join(format!(".test-run/registry-{}.log", self.port)));
    }
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("registry").join(name)
}

#[test]
fn push_keeps_digests_and_skopeo_reads_the_multi_arch_index() {
    require_tool("skopeo");
    let g = generated();
    let registry = Registry::start();

    let summary = push(g.path(), &registry.address()).expect("push");
    println!("{summary}");
    assert_eq!(summary.tags, g.summary.tag_count());
    assert!(summary.blobs_uploaded > 0);

    let reference = format!("docker://{}/siderolabs/imager:v1.12.1", registry.address());
    let raw = stdout(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &reference]));
    let index: serde_json::Value = serde_json::from_str(&raw).expect("index JSON");
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    let inspected = stdout(Command::new("skopeo").args(["inspect", "--tls-verify=false", &reference]));
    let inspected: serde_json::Value = serde_json::from_str(&inspected).expect("inspect JSON");
    assert_eq!(
        inspected["Digest"].as_str(),
        g.summary.digest("siderolabs/imager", "v1.12.1")
    );

    // Signature tags are pushed too, and an arm64 pull of an extension works end to end.
    let tools_digest = g
        .summary
        .digest("siderolabs/stand-in-tools", "1.0.0")
        .expect("tools");
    let sig = format!(
        "docker://{}/siderolabs/stand-in-tools:sha256-{}.sig",
        registry.address(),
        tools_digest.trim_start_matches("sha256:")
    );
    run(Command::new("skopeo").args(["inspect", "--tls-verify=false", "--raw", &sig]));
    let pulled = TempDir::new().expect("temp dir");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--override-arch",
        "arm64",
        &format!("docker://{}/siderolabs/stand-in-tools:1.0.0", registry.address()),
        &format!("dir:{}", pulled.path().display()),
    ]));

    // A second push finds everything in place.
    let again = push(g.path(), &registry.address()).expect("second push");
    assert_eq!(again.tags_present, again.tags);
    assert_eq!(again.blobs_uploaded, 0);
}

#[test]
fn push_to_nothing_fails_clearly() {
    let g = generated();
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let error = push(g.path(), &format!("127.0.0.1:{port}")).expect_err("no registry there");
    let message = error.to_string();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")) && message.contains("GET /v2/"),
        "{message}"
    );
    let https = push(g.path(), "https://example.invalid").expect_err("https is not supported");
    assert!(https.to_string().contains("plain-HTTP"), "{https}");
}
