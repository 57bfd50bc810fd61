//! Helpers shared by the stand-in release tests: one generated release per test binary, and
//! independent tools (skopeo, tar, zstd, xz, cpio, unsquashfs, openssl) to read it back.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use stand_in_release::{generate, BootPartsSource, GenerateOptions, Summary};
use tempfile::TempDir;

/// A release generated once per test binary (default boot parts: real when present).
pub struct Generated {
    pub dir: TempDir,
    pub summary: Summary,
}

impl Generated {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn generated() -> &'static Generated {
    static GENERATED: OnceLock<Generated> = OnceLock::new();
    GENERATED.get_or_init(|| {
        let dir = TempDir::new().expect("temp dir");
        let summary = generate_into(dir.path(), BootPartsSource::Auto);
        println!("{summary}");
        Generated { dir, summary }
    })
}

pub fn generate_into(out: &Path, boot_parts: BootPartsSource) -> Summary {
    let opts = GenerateOptions {
        out: out.to_owned(),
        boot_parts,
        key_pem: None,
    };
    generate(&opts).unwrap_or_else(|e| panic!("generate into {}: {e}", out.display()))
}

/// Fails with an install hint when `tool` is not on PATH: these tests exist to check the
/// release with independent tools, so a missing tool is a broken setup, not a reason to pass.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} is not installed: run scripts/install-test-deps");
}

/// Runs `cmd`, panicking with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// `oci:<layout of repository>:<tag>` for skopeo.
pub fn oci_ref(root: &Path, repository: &str, tag: &str) -> String {
    format!("oci:{}:{tag}", root.join(repository).display())
}

/// The flattened filesystem of `repository:tag` for `arch`, made by skopeo (copying the
/// platform image out of the layout) and tar (applying the layers in order).
pub fn extract(root: &Path, repository: &str, tag: &str, arch: &str) -> TempDir {
    require_tool("skopeo");
    require_tool("tar");
    let work = TempDir::new().expect("temp dir");
    let image_dir = work.path().join("image");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--override-arch",
        arch,
        "--override-os",
        "linux",
        &oci_ref(root, repository, tag),
        &format!("dir:{}", image_dir.display()),
    ]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image_dir.join("manifest.json")).expect("manifest.json"))
            .expect("manifest json");
    let rootfs = work.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs dir");
    for layer in manifest["layers"].as_array().expect("layers") {
        let digest = layer["digest"].as_str().expect("digest");
        let blob = image_dir.join(digest.trim_start_matches("sha256:"));
        run(Command::new("tar").arg("-xzf").arg(&blob).arg("-C").arg(&rootfs));
    }
    work
}

/// The path of the flattened filesystem inside an [`extract`] result.
pub fn rootfs(extracted: &TempDir) -> PathBuf {
    extracted.path().join("rootfs")
}

/// `index.json` of a repository's layout, parsed.
pub fn layout_index(root: &Path, repository: &str) -> serde_json::Value {
    let path = root.join(repository).join("index.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .expect("index.json")
}

/// A blob of a repository's layout.
pub fn blob(root: &Path, repository: &str, digest: &str) -> Vec<u8> {
    let path = root
        .join(repository)
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The workspace root (for registry/start and registry/stop).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
