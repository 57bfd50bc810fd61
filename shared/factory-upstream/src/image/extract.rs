//! Applying layers, in order, to a directory (blocking, `std::fs`).
//!
//! Safety: entry paths are already normalised (no `..`, not absolute); every directory on the way
//! to an entry is resolved inside the destination root with chroot semantics (a symlink `lib ->
//! /usr/lib` or `x -> ../../..` is followed as if the root were `/`), so nothing is ever written
//! outside the root. Symlinks themselves are created with their stored target: that is data.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::layer::{Entry, Kind};
use super::paths::{is_within, EntryPath};
use crate::source::UpstreamError;

/// Linux's limit on symlinks followed while resolving one path.
const MAX_SYMLINKS: usize = 40;

/// What an extraction produced: regular files (hard links included) and their bytes, as left on
/// disk by the last layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractSummary {
    pub files: u64,
    pub bytes: u64,
}

/// Layer-by-layer extraction state.
#[derive(Debug)]
pub struct Extractor {
    root: PathBuf,
    image: String,
    /// Regular files extracted so far (path → size), for the summary.
    files: BTreeMap<String, u64>,
    /// Directory modes, applied at the end: a read-only directory must still receive its
    /// children while later entries and layers are written.
    dir_modes: BTreeMap<String, u32>,
    /// Paths written by the current layer: whiteouts and opaque markers only affect lower layers.
    written: BTreeSet<String>,
}

/// An error of one entry, before it is given its context.
enum Failure {
    Invalid(String),
    Local(String, io::Error),
    Upstream(UpstreamError),
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Upstream(e)
    }
}

fn local(context: impl Into<String>) -> impl FnOnce(io::Error) -> Failure {
    let context = context.into();
    move |e| Failure::Local(context, e)
}

impl Extractor {
    pub fn new(root: &Path, image: &str) -> Result<Self, UpstreamError> {
        fs::create_dir_all(root)
            .map_err(|source| local_error(format!("creating {}", root.display()), source))?;
        Ok(Extractor {
            root: root.to_path_buf(),
            image: image.to_string(),
            files: BTreeMap::new(),
            dir_modes: BTreeMap::new(),
            written: BTreeSet::new(),
        })
    }

    pub fn begin_layer(&mut self) {
        self.written.clear();
    }

    /// Applies one entry. `accept` is the caller's filter, asked only for regular entries.
    pub fn apply(
        &mut self,
        entry: Entry<'_>,
        accept: &mut dyn FnMut(&str) -> Result<bool, UpstreamError>,
    ) -> Result<(), UpstreamError> {
        let what = match &entry.path {
            EntryPath::Normal(p) => p.clone(),
            EntryPath::Whiteout(p) => format!("whiteout of {p}"),
            EntryPath::Opaque(p) => format!("opaque marker of {p}/"),
            EntryPath::Ignore => String::new(),
        };
        self.apply_inner(entry, accept).map_err(|f| match f {
            Failure::Invalid(reason) => UpstreamError::Invalid {
                image: self.image.clone(),
                reason: format!("entry {what}: {reason}"),
            },
            Failure::Local(context, source) => local_error(context, source),
            Failure::Upstream(e) => e,
        })
    }

    fn apply_inner(
        &mut self,
        entry: Entry<'_>,
        accept: &mut dyn FnMut(&str) -> Result<bool, UpstreamError>,
    ) -> Result<(), Failure> {
        match entry.path {
            EntryPath::Ignore => Ok(()),
            EntryPath::Whiteout(path) => {
                if !self.written.contains(&path) {
                    self.remove(&path)?;
                }
                Ok(())
            }
            EntryPath::Opaque(dir) => {
                if let Some(real) = self.resolve_existing(&dir)? {
                    self.prune(&dir, &real)?;
                }
                Ok(())
            }
            EntryPath::Normal(path) => {
                if matches!(entry.kind, Kind::Other) || !accept(&path)? {
                    return Ok(());
                }
                self.write(&path, entry.kind, entry.data, entry.read_error)?;
                self.written.insert(path);
                Ok(())
            }
        }
    }

    fn write(
        &mut self,
        path: &str,
        kind: Kind,
        data: &mut dyn Read,
        read_error: &dyn Fn(io::Error) -> UpstreamError,
    ) -> Result<(), Failure> {
        let target = self.prepare(path, matches!(kind, Kind::Dir { .. }))?;
        let show = || target.display().to_string();
        match kind {
            Kind::Dir { mode } => {
                if !target.is_dir() {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&target)
                        .map_err(local(format!("mkdir {}", show())))?;
                }
                self.dir_modes.insert(path.to_string(), mode);
            }
            Kind::File { mode, .. } => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(local(format!("creating {}", show())))?;
                let bytes = copy(data, read_error, &mut file, &show())?;
                drop(file);
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                    .map_err(local(format!("chmod {}", show())))?;
                self.files.insert(path.to_string(), bytes);
            }
            Kind::Symlink(link) => {
                std::os::unix::fs::symlink(&link, &target).map_err(local(format!("symlink {}", show())))?;
            }
            Kind::Hardlink(source) => {
                let (source_dir, source_name) = source.rsplit_once('/').unwrap_or(("", source.as_str()));
                let Some(real) = self
                    .resolve_existing(source_dir)?
                    .map(|dir| dir.join(source_name))
                else {
                    // The target was filtered out (or never existed): nothing to link to.
                    tracing::debug!(path, source, "hard link target not extracted; skipped");
                    return Ok(());
                };
                let meta = match fs::symlink_metadata(&real) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        tracing::debug!(path, source, "hard link target not extracted; skipped");
                        return Ok(());
                    }
                    Err(e) => return Err(Failure::Local(format!("stat {}", real.display()), e)),
                };
                if meta.is_dir() {
                    return Err(Failure::Invalid(format!(
                        "hard link to {source}, which is a directory"
                    )));
                }
                // Linux `link` does not follow a symlink source: a link to a symlink stays one.
                fs::hard_link(&real, &target).map_err(local(format!("link {}", show())))?;
                if meta.is_file() {
                    self.files.insert(path.to_string(), meta.len());
                }
            }
            Kind::Other => {}
        }
        Ok(())
    }

    /// Makes room for a new entry at `path`: creates its parent directories and removes whatever
    /// is there, unless a directory meets a directory (which merges, as overlayfs does).
    fn prepare(&mut self, path: &str, is_dir: bool) -> Result<PathBuf, Failure> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = self.resolve(dir, true)?;
        let target = parent.join(name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if !(is_dir && meta.is_dir()) {
                remove_path(&target, meta.is_dir())?;
                self.forget(path);
            }
        }
        Ok(target)
    }

    /// Deletes `path` (whiteout) if it exists.
    fn remove(&mut self, path: &str) -> Result<(), Failure> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let Some(parent) = self.resolve_existing(dir)? else {
            return Ok(());
        };
        let target = parent.join(name);
        if let Ok(meta) = fs::symlink_metadata(&target) {
            remove_path(&target, meta.is_dir())?;
        }
        self.forget(path);
        Ok(())
    }

    /// Opaque directory: removes everything below `dir` that the current layer did not write.
    fn prune(&mut self, dir: &str, real: &Path) -> Result<(), Failure> {
        let children = fs::read_dir(real).map_err(local(format!("listing {}", real.display())))?;
        for child in children {
            let child = child.map_err(local(format!("listing {}", real.display())))?;
            let Some(name) = child.file_name().to_str().map(str::to_string) else {
                // Only names from tar entries (UTF-8, checked) are ever created here.
                continue;
            };
            let path = super::paths::join(dir, &name);
            let child_path = child.path();
            let meta =
                fs::symlink_metadata(&child_path).map_err(local(format!("stat {}", child_path.display())))?;
            let keeps_something = self.written.contains(&path)
                || self
                    .written
                    .range(format!("{path}/")..)
                    .next()
                    .is_some_and(|w| is_within(w, &path));
            if !keeps_something {
                remove_path(&child_path, meta.is_dir())?;
                self.forget(&path);
            } else if meta.is_dir() {
                self.prune(&path, &child_path)?;
            }
        }
        Ok(())
    }

    /// Drops bookkeeping for `path` and everything below it.
    fn forget(&mut self, path: &str) {
        forget_below(&mut self.files, path);
        forget_below(&mut self.dir_modes, path);
    }

    fn resolve_existing(&self, rel: &str) -> Result<Option<PathBuf>, Failure> {
        match self.resolve(rel, false) {
            Ok(p) => Ok(Some(p)),
            Err(Failure::Local(_, e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resolves a directory path inside the root, following symlinks with the root as `/`, and
    /// creating missing directories (mode 0755) when `create`.
    fn resolve(&self, rel: &str, create: bool) -> Result<PathBuf, Failure> {
        let mut real: Vec<String> = Vec::new();
        let mut pending: VecDeque<String> = rel
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let mut followed = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "." => continue,
                ".." => {
                    // Clamped at the root, as `/..` is `/`.
                    real.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = real
                .iter()
                .fold(self.root.clone(), |p, c| p.join(c))
                .join(&component);
            match fs::symlink_metadata(&candidate) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(Failure::Invalid(format!("too many symlinks resolving {rel}")));
                    }
                    let link = fs::read_link(&candidate)
                        .map_err(local(format!("readlink {}", candidate.display())))?;
                    let link = link
                        .to_str()
                        .ok_or_else(|| Failure::Invalid(format!("non-UTF-8 symlink in {rel}")))?;
                    if link.starts_with('/') {
                        real.clear();
                    }
                    for part in link.split('/').filter(|c| !c.is_empty()).rev() {
                        pending.push_front(part.to_string());
                    }
                }
                Ok(meta) if meta.is_dir() => real.push(component),
                Ok(_) => return Err(Failure::Invalid(format!("{rel}: {component} is not a directory"))),
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&candidate)
                        .map_err(local(format!("mkdir {}", candidate.display())))?;
                    real.push(component);
                }
                Err(e) => return Err(Failure::Local(format!("stat {}", candidate.display()), e)),
            }
        }
        Ok(real.iter().fold(self.root.clone(), |p, c| p.join(c)))
    }

    /// Applies directory modes (deepest first, so a read-only parent does not block its
    /// children) and returns the summary.
    pub fn finish(self) -> Result<ExtractSummary, UpstreamError> {
        for (path, mode) in self.dir_modes.iter().rev() {
            let real = match self.resolve(path, false) {
                Ok(real) => real,
                // Replaced by a non-directory, or removed, in a later layer.
                Err(Failure::Local(_, e)) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(Failure::Invalid(_)) => continue,
                Err(Failure::Local(context, source)) => return Err(local_error(context, source)),
                Err(Failure::Upstream(e)) => return Err(e),
            };
            fs::set_permissions(&real, fs::Permissions::from_mode(*mode))
                .map_err(|source| local_error(format!("chmod {}", real.display()), source))?;
        }
        Ok(ExtractSummary {
            files: self.files.len() as u64,
            bytes: self.files.values().sum(),
        })
    }
}

/// Local I/O failures (disk full, permissions) are reported as `Unavailable` from the local
/// disk: like an unreachable upstream they are the factory's problem, not bad content, and may
/// pass on retry. (`UpstreamError` has no variant of its own for them: adding one would break
/// exhaustive matches elsewhere.)
fn local_error(context: String, source: io::Error) -> UpstreamError {
    UpstreamError::Unavailable {
        source_name: "local disk".to_string(),
        message: format!("{context}: {source}"),
    }
}

fn remove_path(path: &Path, is_dir: bool) -> Result<(), Failure> {
    let result = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(local(format!("removing {}", path.display())))
}

/// `path` and the keys below it (`path/…`; `path-x` sorts between them and stays).
fn forget_below<V>(map: &mut BTreeMap<String, V>, path: &str) {
    if path.is_empty() {
        map.clear();
        return;
    }
    map.remove(path);
    let prefix = format!("{path}/");
    let below: Vec<String> = map
        .range(prefix.clone()..)
        .take_while(|(p, _)| p.starts_with(&prefix))
        .map(|(p, _)| p.clone())
        .collect();
    for p in below {
        map.remove(&p);
    }
}

/// Copies an entry's data, telling read errors (the layer's, classified by `read_error`) from
/// write errors (local).
fn copy(
    data: &mut dyn Read,
    read_error: &dyn Fn(io::Error) -> UpstreamError,
    out: &mut fs::File,
    show: &str,
) -> Result<u64, Failure> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Upstream(read_error(e))),
        };
        out.write_all(&buf[..n])
            .map_err(local(format!("writing {show}")))?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forget_below_keeps_siblings() {
        let mut m: BTreeMap<String, u64> = ["a", "a-x", "a/b", "a/b/c", "a.txt", "b"]
            .iter()
            .map(|k| (k.to_string(), 1))
            .collect();
        forget_below(&mut m, "a");
        assert_eq!(m.keys().cloned().collect::<Vec<_>>(), ["a-x", "a.txt", "b"]);
        forget_below(&mut m, "");
        assert!(m.is_empty());
    }
}
