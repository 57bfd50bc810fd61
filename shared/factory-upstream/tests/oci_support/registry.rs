//! A real OCI registry for the tests: Debian's `docker-registry` (distribution 2.8) on a free
//! loopback port with a temporary storage root, filled with `skopeo copy` (which preserves
//! digests), killed when dropped.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Registry {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn require(binary: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        found,
        "{binary} is required: apt-get install -y docker-registry skopeo (scripts/install-test-deps)"
    );
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Registry {
    pub fn start() -> Registry {
        require("docker-registry");
        require("skopeo");
        // The port is free when picked but could be taken before the registry binds it.
        for _ in 0..5 {
            if let Some(registry) = Registry::try_start() {
                return registry;
            }
        }
        panic!("docker-registry did not start");
    }

    fn try_start() -> Option<Registry> {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let storage = dir.path().join("storage");
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn, accesslog: {{disabled: true}}}}\n\
                 storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
                 http: {{addr: 127.0.0.1:{port}}}\n",
                storage.display()
            ),
        )
        .expect("config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry");
        let mut registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if registry.ping() {
                return Some(registry);
            }
            if let Ok(Some(_)) = registry.child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        if stream
            .write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Copies `layout:tag` to `<repository>:tag` in this registry, all platforms, digests kept.
    pub fn push(&self, layout: &Path, tag: &str, repository: &str) {
        // skopeo's `oci:` source reports the media type of the index.json entry, and would have
        // to convert a Docker list: Docker-typed images go through its `dir:` transport, which
        // takes the type from the manifest itself.
        let staging = tempfile::tempdir().expect("tempdir");
        let source = match docker_manifest(layout, tag) {
            Some(manifest) => {
                write_dir_transport(layout, &manifest, staging.path());
                format!("dir:{}", staging.path().display())
            }
            None => format!("oci:{}:{tag}", layout.display()),
        };
        let output = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--all",
                "--preserve-digests",
                "--dest-tls-verify=false",
            ])
            .arg(source)
            .arg(format!("docker://127.0.0.1:{}/{repository}:{tag}", self.port))
            .output()
            .expect("run skopeo");
        assert!(
            output.status.success(),
            "skopeo copy {tag} → {repository} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver layout).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .expect("blob")
}

/// The manifest tagged `tag` in the layout if it has a Docker media type.
fn docker_manifest(layout: &Path, tag: &str) -> Option<Vec<u8>> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).expect("index")).expect("json");
    let entry = index["manifests"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["annotations"]["org.opencontainers.image.ref.name"] == tag)?;
    let manifest = blob(layout, entry["digest"].as_str()?);
    let parsed: Value = serde_json::from_slice(&manifest).expect("json");
    parsed["mediaType"]
        .as_str()?
        .starts_with("application/vnd.docker.")
        .then_some(manifest)
}

/// skopeo's `dir:` transport: `manifest.json`, instance manifests as `<hex>.manifest.json`,
/// blobs as `<hex>`.
fn write_dir_transport(layout: &Path, manifest: &[u8], dir: &Path) {
    std::fs::write(dir.join("version"), "Directory Transport Version: 1.1\n").expect("write");
    std::fs::write(dir.join("manifest.json"), manifest).expect("write");
    let parsed: Value = serde_json::from_slice(manifest).expect("json");
    let images: Vec<(String, Vec<u8>)> = match parsed["manifests"].as_array() {
        Some(list) => list
            .iter()
            .filter_map(|m| m["digest"].as_str())
            .map(|d| {
                let bytes = blob(layout, d);
                let hex = d.trim_start_matches("sha256:").to_string();
                std::fs::write(dir.join(format!("{hex}.manifest.json")), &bytes).expect("write");
                (hex, bytes)
            })
            .collect(),
        None => vec![(String::new(), manifest.to_vec())],
    };
    for (_, bytes) in images {
        let image: Value = serde_json::from_slice(&bytes).expect("json");
        let config = image["config"]["digest"].as_str().map(str::to_string);
        let layers = image["layers"].as_array().cloned().unwrap_or_default();
        let digests = config.into_iter().chain(
            layers
                .iter()
                .filter_map(|l| l["digest"].as_str().map(str::to_string)),
        );
        for digest in digests {
            std::fs::write(
                dir.join(digest.trim_start_matches("sha256:")),
                blob(layout, &digest),
            )
            .expect("write");
        }
    }
}
