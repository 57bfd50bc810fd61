//! Writing the key file safely: private from the first byte (mode 0600 at creation, not chmod
//! afterwards), atomic (a temp file hard-linked into place, so a reader never sees half a key),
//! and never replacing an existing key (two servers starting at once agree on one key).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::SigningError;

/// The outcome of [`write_new`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Created,
    AlreadyExisted,
}

/// The file's text, or `None` when it does not exist.
pub(crate) fn read_if_exists(path: &Path) -> Result<Option<String>, SigningError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading", path, e)),
    }
}

/// Creates `path` with `contents` unless it already exists.
pub(crate) fn write_new(path: &Path, contents: &[u8]) -> Result<Written, SigningError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| io_error("creating the directory of", path, e))?;

    let temp = temp_path(&dir, path);
    let result = write_private(&temp, contents).and_then(|()| match fs::hard_link(&temp, path) {
        Ok(()) => Ok(Written::Created),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Written::AlreadyExisted),
        Err(e) => Err(io_error("linking", path, e)),
    });
    // The temp name is ours alone; whatever happened above, it must not linger with a key in it.
    let _ = fs::remove_file(&temp);
    if result.as_ref().is_ok_and(|w| *w == Written::Created) {
        // Make the new directory entry durable; losing it would mean a different key after a crash.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
    }
    result
}

fn write_private(temp: &Path, contents: &[u8]) -> Result<(), SigningError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(temp).map_err(|e| io_error("creating", temp, e))?;
    file.write_all(contents)
        .map_err(|e| io_error("writing", temp, e))?;
    file.sync_all().map_err(|e| io_error("syncing", temp, e))
}

fn temp_path(dir: &Path, path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dir.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        OsRng.next_u64()
    ))
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> SigningError {
    SigningError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
