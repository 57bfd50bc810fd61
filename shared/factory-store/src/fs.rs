//! Filesystem content store: the [`ContentStore`] of the local server.
//!
//! Layout under the root directory:
//!
//! * `<root>/<key>`: the object's bytes, one regular file per key (keys are `/`-separated relative
//!   paths, see [`validate_key`]; the first segments `.tmp` and `.meta` are reserved).
//! * `<root>/.meta/<sha256(key)>-<inode>.json`: the sidecar of the data file with that inode: etag
//!   (hex sha256 of the content), size and content type. A sidecar is written and synced *before*
//!   its data file becomes visible, and it is bound to the inode of that file, so a stale or missing
//!   sidecar (after a crash) is detected: the store then hashes the file and reports no content type.
//! * `<root>/.tmp/`: staging files. Every write goes to a fresh staging file that is synced and then
//!   renamed (unconditional writes) or hard-linked (`IfAbsent`) into place, so a reader never sees a
//!   partial object, not even after a crash.
//!
//! Concurrency: writes of one [`FsStore`] value (clone it behind an `Arc`) are serialized by a
//! mutex while they are made visible (not while the body is copied), which makes `IfMatch` a true
//! compare-and-swap inside one process. `IfAbsent` uses `link(2)`, which is atomic even between
//! processes sharing the directory; `IfMatch` is not atomic between processes.
//!
//! Limitation of a directory tree: a key cannot be both an object and a "directory" prefix of
//! other objects (`a` and `a/b`); such a write fails with [`StoreError::Backend`].

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::store::validate_key;
use crate::{ByteStream, ContentStore, ObjectMeta, PutCondition, PutOutcome, StoreError};

const TMP_DIR: &str = ".tmp";
const META_DIR: &str = ".meta";
/// Copy buffer of `put_stream` and chunk size of `get_stream`.
const CHUNK: usize = 256 * 1024;
/// Staging files older than this are leftovers of crashed writers; [`FsStore::new`] removes them.
const STALE_TMP_AGE: Duration = Duration::from_secs(24 * 3600);
/// How often a commit retries when a concurrent `delete` pruned the parent directory.
const COMMIT_ATTEMPTS: usize = 5;

/// A [`ContentStore`] on a local directory. Cheap to clone (clones share the write mutex).
#[derive(Debug, Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    tmp: PathBuf,
    meta: PathBuf,
    /// Serializes making writes visible (and deletes), see the module docs.
    write_lock: tokio::sync::Mutex<()>,
}

/// The sidecar of one data file (one inode).
#[derive(Debug, Serialize, Deserialize)]
struct Sidecar {
    key: String,
    size: u64,
    etag: String,
    content_type: Option<String>,
}

/// A synced staging file, removed on drop unless it was moved into place.
#[derive(Debug)]
struct Staged {
    path: PathBuf,
    size: u64,
    etag: String,
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a rename the path is gone already; after a hard link this drops the extra name.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl FsStore {
    /// Opens (creating it if needed) a store rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let tmp = root.join(TMP_DIR);
        let meta = root.join(META_DIR);
        for dir in [&root, &tmp, &meta] {
            std::fs::create_dir_all(dir).map_err(|e| io_err("creating directory", dir, e))?;
        }
        sweep_stale_tmp(&tmp);
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                tmp,
                meta,
                write_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Runs blocking filesystem work off the async threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::Backend(format!("filesystem task failed: {e}")))?
    }

    /// Copies `body` into a fresh staging file with a bounded buffer, hashing as it goes.
    async fn stage_stream(&self, mut body: impl AsyncRead + Unpin) -> Result<Staged, StoreError> {
        let path = self.inner.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_err("creating staging file", &path, e))?;
        // From here on the guard removes the staging file on every error path.
        let mut staged = Staged {
            path,
            size: 0,
            etag: String::new(),
        };
        let mut file = tokio::io::BufWriter::with_capacity(CHUNK, file);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = body.read(&mut buf).await.map_err(StoreError::Body)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .await
                .map_err(|e| io_err("writing staging file", &staged.path, e))?;
            staged.size += n as u64;
        }
        file.flush()
            .await
            .map_err(|e| io_err("writing staging file", &staged.path, e))?;
        file.get_ref()
            .sync_all()
            .await
            .map_err(|e| io_err("syncing staging file", &staged.path, e))?;
        staged.etag = hex::encode(hasher.finalize());
        Ok(staged)
    }

    /// Writes a small body into a fresh staging file.
    async fn stage_bytes(&self, body: Bytes) -> Result<Staged, StoreError> {
        self.blocking(move |inner| {
            let path = inner.tmp.join(uuid::Uuid::new_v4().simple().to_string());
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| io_err("creating staging file", &path, e))?;
            let staged = Staged {
                path,
                size: body.len() as u64,
                etag: hex::encode(Sha256::digest(&body)),
            };
            file.write_all(&body)
                .and_then(|()| file.sync_all())
                .map_err(|e| io_err("writing staging file", &staged.path, e))?;
            Ok(staged)
        })
        .await
    }

    /// Makes a staged file visible under `key`, under the write lock.
    async fn commit(
        &self,
        key: &str,
        staged: Staged,
        content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        let key = key.to_owned();
        let content_type = content_type.map(str::to_owned);
        let _guard = self.inner.write_lock.lock().await;
        self.blocking(move |inner| inner.commit(&key, staged, content_type, &condition))
            .await
    }
}

impl Inner {
    fn data_path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn sidecar_path(&self, key: &str, file_id: u64) -> PathBuf {
        let key_hash = hex::encode(Sha256::digest(key.as_bytes()));
        self.meta.join(format!("{key_hash}-{file_id}.json"))
    }

    /// Opens the data file of `key`: `None` when there is no such object.
    fn open(&self, key: &str) -> Result<Option<(File, Metadata)>, StoreError> {
        let path = self.data_path(key);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if is_absent(&e) => return Ok(None),
            Err(e) => return Err(io_err("opening", &path, e)),
        };
        let md = file
            .metadata()
            .map_err(|e| io_err("reading metadata of", &path, e))?;
        // A directory is a prefix of other keys, not an object.
        Ok(md.is_file().then_some((file, md)))
    }

    /// The sidecar's metadata when it describes exactly this data file.
    fn sidecar_meta(&self, key: &str, md: &Metadata) -> Option<ObjectMeta> {
        let text = std::fs::read(self.sidecar_path(key, file_id(md))).ok()?;
        let sidecar: Sidecar = serde_json::from_slice(&text).ok()?;
        (sidecar.key == key && sidecar.size == md.len()).then(|| ObjectMeta {
            key: key.to_owned(),
            size: sidecar.size,
            etag: sidecar.etag,
            content_type: sidecar.content_type,
        })
    }

    /// Metadata of an opened data file; hashes the file when the sidecar is missing or stale.
    /// Leaves the file positioned at its start.
    fn describe(&self, key: &str, file: &mut File, md: &Metadata) -> Result<ObjectMeta, StoreError> {
        if let Some(meta) = self.sidecar_meta(key, md) {
            return Ok(meta);
        }
        let path = self.data_path(key);
        let (size, etag) = hash_reader(&mut *file).map_err(|e| io_err("reading", &path, e))?;
        file.rewind().map_err(|e| io_err("reading", &path, e))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag,
            content_type: None,
        })
    }

    fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self.open(key)? {
            Some((mut file, md)) => self.describe(key, &mut file, &md).map(Some),
            None => Ok(None),
        }
    }

    fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError> {
        let Some((mut file, md)) = self.open(key)? else {
            return Ok(None);
        };
        let mut body = Vec::with_capacity(usize::try_from(md.len()).unwrap_or(0));
        file.read_to_end(&mut body)
            .map_err(|e| io_err("reading", &self.data_path(key), e))?;
        // Everything below describes the inode we read, whatever happened to the path meanwhile.
        let meta = self.sidecar_meta(key, &md).unwrap_or_else(|| ObjectMeta {
            key: key.to_owned(),
            size: body.len() as u64,
            etag: hex::encode(Sha256::digest(&body)),
            content_type: None,
        });
        Ok(Some((meta, Bytes::from(body))))
    }

    fn commit(
        &self,
        key: &str,
        staged: Staged,
        content_type: Option<String>,
        condition: &PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        let dest = self.data_path(key);
        let staged_id = std::fs::metadata(&staged.path)
            .map(|md| file_id(&md))
            .map_err(|e| io_err("reading metadata of", &staged.path, e))?;

        let current = self.open(key)?;
        let current_id = current.as_ref().map(|(_, md)| file_id(md));
        match condition {
            PutCondition::Overwrite => {}
            PutCondition::IfAbsent => {
                if current.is_some() {
                    return Ok(PutOutcome::ConditionFailed);
                }
            }
            PutCondition::IfMatch(expected) => {
                let Some((mut file, md)) = current else {
                    return Ok(PutOutcome::ConditionFailed);
                };
                if self.describe(key, &mut file, &md)?.etag != expected.trim_matches('"') {
                    return Ok(PutOutcome::ConditionFailed);
                }
            }
        }

        // The sidecar first (synced), so the data file is never visible without it.
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: staged.size,
            etag: staged.etag.clone(),
            content_type,
        };
        let sidecar_path = self.sidecar_path(key, staged_id);
        write_sidecar(&sidecar_path, &meta)?;

        let mut attempt = 0;
        let linked = loop {
            attempt += 1;
            if let Some(parent) = dest.parent() {
                if let Err(e) = std::fs::create_dir_all(parent) {
                    let _ = std::fs::remove_file(&sidecar_path);
                    return Err(io_err("creating the parent directory of", &dest, e));
                }
            }
            let result = match condition {
                PutCondition::IfAbsent => std::fs::hard_link(&staged.path, &dest),
                _ => std::fs::rename(&staged.path, &dest),
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < COMMIT_ATTEMPTS => continue,
                other => break other,
            }
        };
        match linked {
            Ok(()) => {}
            Err(e) => {
                let _ = std::fs::remove_file(&sidecar_path);
                if e.kind() == io::ErrorKind::AlreadyExists && *condition == PutCondition::IfAbsent {
                    // Another process won the race between our check and the link.
                    return Ok(PutOutcome::ConditionFailed);
                }
                return Err(io_err("moving the object into place at", &dest, e));
            }
        }
        if let Some(parent) = dest.parent() {
            sync_dir(parent);
        }
        drop(staged);
        // The replaced data file is gone, and so is the purpose of its sidecar.
        if let Some(old_id) = current_id.filter(|id| *id != staged_id) {
            let _ = std::fs::remove_file(self.sidecar_path(key, old_id));
        }
        Ok(PutOutcome::Written(meta))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.data_path(key);
        let md = match std::fs::symlink_metadata(&path) {
            Ok(md) if md.is_file() => md,
            Ok(_) => return Ok(()),
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("reading metadata of", &path, e)),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("deleting", &path, e)),
        }
        let _ = std::fs::remove_file(self.sidecar_path(key, file_id(&md)));
        // Prune directories left empty, so that the prefix can become an object key again.
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != self.root && d.starts_with(&self.root)) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Walk only below the deepest directory the prefix names (when that is a valid key).
        let (start, start_key) = match prefix.rfind('/') {
            Some(i) if validate_key(&prefix[..i]).is_ok() => {
                (self.root.join(&prefix[..i]), format!("{}/", &prefix[..i]))
            }
            _ => (self.root.clone(), String::new()),
        };
        let mut keys = Vec::new();
        self.walk(&start, &start_key, prefix, &mut keys)?;
        keys.sort();
        Ok(keys)
    }

    fn walk(
        &self,
        dir: &Path,
        dir_key: &str,
        prefix: &str,
        keys: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if is_absent(&e) => return Ok(()),
            Err(e) => return Err(io_err("listing", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| io_err("listing", dir, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not a key we could have written
            };
            if dir_key.is_empty() && (name == TMP_DIR || name == META_DIR) {
                continue;
            }
            let key = format!("{dir_key}{name}");
            // Prune subtrees that cannot contain a match.
            if !(key.starts_with(prefix) || prefix.starts_with(&key)) {
                continue;
            }
            let file_type = match entry.file_type() {
                Ok(t) => t,
                Err(e) if is_absent(&e) => continue,
                Err(e) => return Err(io_err("listing", dir, e)),
            };
            if file_type.is_dir() {
                self.walk(&entry.path(), &format!("{key}/"), prefix, keys)?;
            } else if file_type.is_file() && key.starts_with(prefix) && validate_key(&key).is_ok() {
                keys.push(key);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ContentStore for FsStore {
    async fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        self.blocking(move |inner| inner.head(&key)).await
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        check_key(key)?;
        let staged = self.stage_bytes(body).await?;
        self.commit(key, staged, content_type, condition).await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: Box<dyn AsyncRead + Send + Unpin>,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        check_key(key)?;
        let staged = self.stage_stream(body).await?;
        match self
            .commit(key, staged, content_type, PutCondition::Overwrite)
            .await?
        {
            PutOutcome::Written(meta) => Ok(meta),
            PutOutcome::ConditionFailed => Err(StoreError::Backend(format!(
                "unconditional write of {key:?} reported a failed condition"
            ))),
        }
    }

    async fn get_stream(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>, StoreError> {
        check_key(key)?;
        let owned_key = key.to_owned();
        let opened = self
            .blocking(move |inner| match inner.open(&owned_key)? {
                Some((mut file, md)) => {
                    let meta = inner.describe(&owned_key, &mut file, &md)?;
                    Ok(Some((meta, file)))
                }
                None => Ok(None),
            })
            .await?;
        let Some((meta, file)) = opened else {
            return Ok(None);
        };
        let path = self.inner.data_path(key);
        let chunks = futures::stream::try_unfold(tokio::fs::File::from_std(file), |mut file| async move {
            let mut buf = BytesMut::with_capacity(CHUNK);
            let n = file.read_buf(&mut buf).await?;
            Ok::<_, io::Error>((n > 0).then(|| (buf.freeze(), file)))
        })
        .map_err(move |e| io_err("reading", &path, e));
        Ok(Some((meta, Box::pin(chunks))))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(key)?;
        let key = key.to_owned();
        let _guard = self.inner.write_lock.lock().await;
        self.blocking(move |inner| inner.delete(&key)).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.list(&prefix)).await
    }
}

/// [`validate_key`] plus the segments this store reserves for itself.
fn check_key(key: &str) -> Result<(), StoreError> {
    validate_key(key)?;
    let first = key.split('/').next().unwrap_or_default();
    if first == TMP_DIR || first == META_DIR {
        return Err(StoreError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

fn write_sidecar(path: &Path, meta: &ObjectMeta) -> Result<(), StoreError> {
    let sidecar = Sidecar {
        key: meta.key.clone(),
        size: meta.size,
        etag: meta.etag.clone(),
        content_type: meta.content_type.clone(),
    };
    let json = serde_json::to_vec(&sidecar).map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut file = File::create(path).map_err(|e| io_err("creating sidecar", path, e))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err("writing sidecar", path, e))
}

fn hash_reader(mut reader: impl Read) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok((size, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Makes a rename durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes staging files that crashed writers left behind (best effort).
fn sweep_stale_tmp(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|md| md.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_TMP_AGE);
        if old {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Identifies the data file a sidecar belongs to.
#[cfg(unix)]
fn file_id(md: &Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(md)
}

/// Identifies the data file a sidecar belongs to (without inodes: size checks only).
#[cfg(not(unix))]
fn file_id(_md: &Metadata) -> u64 {
    0
}

/// "No such object": the path or one of its parents is missing, or a parent is a file.
fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

fn io_err(what: &str, path: &Path, e: io::Error) -> StoreError {
    StoreError::Backend(format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn store() -> (tempfile::TempDir, FsStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::new(dir.path().join("root")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn internal_files_are_not_keys() {
        let (_dir, store) = store();
        store
            .put(
                "a/b",
                Bytes::from_static(b"x"),
                Some("text/plain"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap();
        assert_eq!(store.list("").await.unwrap(), vec!["a/b".to_owned()]);
        for key in [".tmp/x", ".meta/x", ".meta"] {
            assert!(
                matches!(store.get(key).await, Err(StoreError::InvalidKey(_))),
                "{key}"
            );
        }
        // Nothing left in the staging directory after writes.
        assert_eq!(std::fs::read_dir(store.root().join(TMP_DIR)).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn missing_or_stale_sidecar_falls_back_to_hashing() {
        let (_dir, store) = store();
        // A data file without sidecar (as after a crash between the sidecar and the rename of an
        // earlier write, or a file dropped in by hand).
        std::fs::create_dir_all(store.root().join("x")).unwrap();
        std::fs::write(store.root().join("x/y"), b"hello").unwrap();
        let meta = store.head("x/y").await.unwrap().unwrap();
        assert_eq!(meta.etag, hex::encode(Sha256::digest(b"hello")));
        assert_eq!((meta.size, meta.content_type), (5, None));

        // A sidecar bound to another inode is ignored.
        let written = store
            .put(
                "k",
                Bytes::from_static(b"one"),
                Some("a/b"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap();
        assert!(matches!(written, PutOutcome::Written(_)));
        std::fs::write(store.root().join("k.new"), b"two").unwrap();
        std::fs::rename(store.root().join("k.new"), store.root().join("k")).unwrap();
        let (meta, body) = store.get("k").await.unwrap().unwrap();
        assert_eq!(&body[..], b"two");
        assert_eq!(meta.etag, hex::encode(Sha256::digest(b"two")));
        assert_eq!(meta.content_type, None);
    }

    #[tokio::test]
    async fn delete_prunes_empty_directories() {
        let (_dir, store) = store();
        store
            .put("p/q/r", Bytes::from_static(b"1"), None, PutCondition::Overwrite)
            .await
            .unwrap();
        store.delete("p/q/r").await.unwrap();
        assert!(!store.root().join("p").exists());
        // "p" can now be an object itself.
        let outcome = store
            .put("p", Bytes::from_static(b"2"), None, PutCondition::IfAbsent)
            .await
            .unwrap();
        assert!(matches!(outcome, PutOutcome::Written(_)));
        // ...and then it cannot be a prefix.
        let err = store
            .put("p/s", Bytes::from_static(b"3"), None, PutCondition::Overwrite)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Backend(_)), "{err}");
        assert_eq!(store.get("p/s").await.unwrap(), None);
    }

    #[tokio::test]
    async fn if_match_accepts_quoted_etags_and_replaced_sidecars_are_removed() {
        let (_dir, store) = store();
        let PutOutcome::Written(first) = store
            .put("k", Bytes::from_static(b"1"), None, PutCondition::Overwrite)
            .await
            .unwrap()
        else {
            panic!("not written")
        };
        let outcome = store
            .put(
                "k",
                Bytes::from_static(b"2"),
                None,
                PutCondition::IfMatch(format!("\"{}\"", first.etag)),
            )
            .await
            .unwrap();
        assert!(matches!(outcome, PutOutcome::Written(_)));
        assert_eq!(std::fs::read_dir(store.root().join(META_DIR)).unwrap().count(), 1);
        store.delete("k").await.unwrap();
        assert_eq!(std::fs::read_dir(store.root().join(META_DIR)).unwrap().count(), 0);
    }
}
