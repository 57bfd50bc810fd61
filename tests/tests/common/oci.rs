//! OCI client helpers of the registry tests: registry clients' names for the server, `skopeo`,
//! and reading what `skopeo copy` wrote into an OCI layout (manifests, layers extracted by GNU
//! tar, UKI sections of either architecture).

use std::path::Path;

use super::disk::tool;
use super::image::ImageServer;

/// `host:port` of the server, as registry clients name it.
pub fn host(server: &ImageServer) -> String {
    server.url().trim_start_matches("http://").to_owned()
}

/// `skopeo` with arguments; its stdout (fails the test with stderr on failure).
pub fn skopeo(args: &[&str]) -> String {
    tool("skopeo", args, "skopeo")
}

/// `skopeo inspect --raw` of a `docker://` reference, parsed.
pub fn inspect_raw(reference: &str) -> serde_json::Value {
    let raw = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--retry-times",
        "3",
        reference,
    ]);
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{reference}: {e}: {raw}"))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// The bytes of `digest` in an OCI layout directory.
pub fn layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap()
}

/// The image manifest `skopeo copy` wrote into `dir` (one image).
pub fn layout_manifest(dir: &Path) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    serde_json::from_slice(&layout_blob(dir, digest)).unwrap()
}

/// Extracts a gzip tar layer blob of the layout `dir` into `dest`; its member list.
pub fn extract_layer(dir: &Path, digest: &str, dest: &Path) -> Vec<String> {
    std::fs::create_dir_all(dest).unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let blob = dir.join("blobs/sha256").join(hex);
    let listing = tool("tar", &["-tzf", blob.to_str().unwrap()], "tar");
    tool(
        "tar",
        &["-xzf", blob.to_str().unwrap(), "-C", dest.to_str().unwrap()],
        "tar",
    );
    listing
        .lines()
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect()
}

/// A section of a PE image of either architecture (binutils here reads x86 PE only), read with
/// the `object` crate rather than our UKI code.
pub fn pe_section(image: &Path, name: &str) -> Vec<u8> {
    use object::{Object, ObjectSection};
    let bytes = std::fs::read(image).unwrap();
    let file = object::File::parse(&*bytes).unwrap_or_else(|e| panic!("{}: {e}", image.display()));
    let section = file
        .section_by_name(name)
        .unwrap_or_else(|| panic!("{}: no {name} section", image.display()));
    section.data().unwrap().to_vec()
}

/// `skopeo copy` of the `arch` image of `docker://<reference>` into the OCI layout `layout`
/// (tag `x`), as a pull client does it (manifest negotiation, platform selection, digests).
pub fn copy_arch(reference: &str, arch: &str, layout: &Path) {
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--retry-times",
        "3",
        "--override-arch",
        arch,
        &format!("docker://{reference}"),
        &format!("oci:{}:x", layout.display()),
    ]);
}
