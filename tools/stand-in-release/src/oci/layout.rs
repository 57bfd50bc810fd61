//! OCI image layout directories (image-spec `image-layout.md`), one per repository: repository
//! `R` lives in `DIR/R/` with `oci-layout`, `index.json` (one entry per tag, the tag in the
//! `org.opencontainers.image.ref.name` annotation, as `skopeo copy oci:DIR/R:TAG` expects) and
//! `blobs/sha256/<hex>`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::spec::{to_json, Descriptor, Index, ANNOTATION_REF_NAME, MEDIA_INDEX};
use super::store::{Repo, Store};
use crate::Error;

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes every repository of `store` under `out`; returns the bytes of blobs referenced.
///
/// Blobs already present (same name, same size: they are content-addressed) are kept, blobs no
/// tag of this release references any more are removed, and `index.json` is replaced
/// atomically, so regenerating into the same directory is cheap and leaves no stale content.
pub fn write(store: &Store, out: &Path) -> Result<u64, Error> {
    let mut total = 0;
    for (name, repo) in store.repos() {
        total += write_repo(repo, &out.join(name))?;
    }
    Ok(total)
}

fn write_repo(repo: &Repo, dir: &Path) -> Result<u64, Error> {
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(Error::io("creating", &blob_dir))?;
    let mut total = 0;
    for (digest, data) in repo.blobs() {
        let path = blob_dir.join(hex_of(digest));
        total += data.len() as u64;
        if fs::metadata(&path)
            .map(|m| m.len() == data.len() as u64)
            .unwrap_or(false)
        {
            continue;
        }
        write_atomic(&path, data)?;
    }
    for entry in fs::read_dir(&blob_dir).map_err(Error::io("listing", &blob_dir))? {
        let entry = entry.map_err(Error::io("listing", &blob_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !repo.blobs().contains_key(&format!("sha256:{name}")) {
            fs::remove_file(entry.path()).map_err(Error::io("removing stale blob", entry.path()))?;
        }
    }

    let manifests = repo
        .tags()
        .iter()
        .map(|(tag, descriptor)| {
            let mut d = descriptor.clone();
            d.annotations = BTreeMap::from([(ANNOTATION_REF_NAME.to_owned(), tag.clone())]);
            d
        })
        .collect();
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_INDEX.to_owned(),
        manifests,
        annotations: BTreeMap::new(),
    };
    write_atomic(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_atomic(&dir.join("index.json"), &to_json(&index))?;
    Ok(total)
}

/// Writes `data` to a temporary sibling and renames it over `path`.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data).map_err(Error::io("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("renaming into place", path))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// A repository's layout as read back from disk.
#[derive(Debug)]
pub struct LayoutRepo {
    pub name: String,
    pub dir: PathBuf,
    /// Tag → top-level descriptor, from `index.json`.
    pub tags: BTreeMap<String, Descriptor>,
}

impl LayoutRepo {
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(hex_of(digest))
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(Error::io("reading blob", path))
    }
}

/// Every OCI layout under `root` (directories holding `oci-layout` and `index.json`), named by
/// their path relative to `root`, sorted by name.
pub fn read_all(root: &Path) -> Result<Vec<LayoutRepo>, Error> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
            found.push(read_repo(root, &dir)?);
            continue;
        }
        for entry in fs::read_dir(&dir).map_err(Error::io("listing", &dir))? {
            let path = entry.map_err(Error::io("listing", &dir))?.path();
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn read_repo(root: &Path, dir: &Path) -> Result<LayoutRepo, Error> {
    let index_path = dir.join("index.json");
    let text = fs::read(&index_path).map_err(Error::io("reading", &index_path))?;
    let index: Index = serde_json::from_slice(&text).map_err(|e| Error::Layout {
        path: index_path.clone(),
        detail: e.to_string(),
    })?;
    let mut tags = BTreeMap::new();
    for mut descriptor in index.manifests {
        let Some(tag) = descriptor.annotations.remove(ANNOTATION_REF_NAME) else {
            continue; // untagged entries are not pushed by tag
        };
        descriptor.annotations.clear();
        tags.insert(tag, descriptor);
    }
    let name = dir
        .strip_prefix(root)
        .map_err(|_| Error::Layout {
            path: dir.to_owned(),
            detail: "outside the root".to_owned(),
        })?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    Ok(LayoutRepo {
        name,
        dir: dir.to_owned(),
        tags,
    })
}
