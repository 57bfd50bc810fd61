//! Reading a few small files out of the flattened image without extracting it.
//!
//! Layers are scanned from the top down: the first layer that has a requested path decides it
//! (its content, or absence if it is a directory there), and a whiteout or opaque directory in a
//! layer decides the still-open paths below it as absent for all lower layers. Scanning stops as
//! soon as every path is decided, so lower (usually larger) layers are often never fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use super::layer::{Entry, Kind};
use super::paths::{is_within, EntryPath};
use crate::source::UpstreamError;

/// `read_files` refuses files above this size: it is for catalogs and manifests, not payloads.
pub const FILE_LIMIT: u64 = 16 << 20;

#[derive(Debug)]
pub struct FileScan {
    image: String,
    /// (normalised path, the caller's spelling): the result is keyed by the latter.
    requested: Vec<(String, String)>,
    pending: BTreeSet<String>,
    found: BTreeMap<String, Vec<u8>>,
}

/// Decisions of the layer being scanned; they take effect at its end, because whiteouts only
/// affect lower layers, whatever their position in the archive.
#[derive(Debug, Default)]
pub struct LayerScan {
    decided: BTreeMap<String, Option<Vec<u8>>>,
    hidden: Vec<String>,
}

impl FileScan {
    /// `requested`: (normalised, as given) pairs.
    pub fn new(image: &str, requested: Vec<(String, String)>) -> Self {
        let pending = requested
            .iter()
            .map(|(normalised, _)| normalised.clone())
            .collect();
        FileScan {
            image: image.to_string(),
            requested,
            pending,
            found: BTreeMap::new(),
        }
    }

    pub fn done(&self) -> bool {
        self.pending.is_empty()
    }

    fn invalid(&self, reason: String) -> UpstreamError {
        UpstreamError::Invalid {
            image: self.image.clone(),
            reason,
        }
    }

    pub fn visit(&self, layer: &mut LayerScan, entry: Entry<'_>) -> Result<(), UpstreamError> {
        let path = match entry.path {
            EntryPath::Ignore => return Ok(()),
            EntryPath::Whiteout(path) | EntryPath::Opaque(path) => {
                layer.hidden.push(path);
                return Ok(());
            }
            EntryPath::Normal(path) => path,
        };
        if self.pending.contains(&path) && !layer.decided.contains_key(&path) {
            let value = match entry.kind {
                Kind::File { size, .. } => Some(self.read(&path, size, entry.data, entry.read_error)?),
                Kind::Hardlink(target) => match layer.decided.get(&target) {
                    Some(Some(content)) => Some(content.clone()),
                    _ => {
                        return Err(self.invalid(format!(
                            "{path} is a hard link to {target}, which read_files cannot follow"
                        )))
                    }
                },
                Kind::Symlink(target) => {
                    return Err(self.invalid(format!(
                        "{path} is a symlink to {target}; read_files reads regular files only"
                    )))
                }
                Kind::Dir { .. } | Kind::Other => None,
            };
            layer.decided.insert(path, value);
            return Ok(());
        }
        // A non-directory here hides whatever lower layers have below it.
        if !matches!(entry.kind, Kind::Dir { .. }) {
            let below: Vec<String> = self
                .pending
                .iter()
                .filter(|p| *p != &path && is_within(p, &path))
                .cloned()
                .collect();
            for p in below {
                layer.decided.entry(p).or_insert(None);
            }
        }
        Ok(())
    }

    fn read(
        &self,
        path: &str,
        size: u64,
        data: &mut dyn Read,
        read_error: &dyn Fn(std::io::Error) -> UpstreamError,
    ) -> Result<Vec<u8>, UpstreamError> {
        let too_large = || {
            self.invalid(format!(
                "{path} is larger than the {FILE_LIMIT}-byte limit of read_files"
            ))
        };
        if size > FILE_LIMIT {
            return Err(too_large());
        }
        let mut content = Vec::with_capacity(size as usize);
        data.take(FILE_LIMIT + 1)
            .read_to_end(&mut content)
            .map_err(read_error)?;
        if content.len() as u64 > FILE_LIMIT {
            return Err(too_large());
        }
        Ok(content)
    }

    pub fn end_layer(&mut self, layer: LayerScan) {
        for (path, value) in layer.decided {
            self.pending.remove(&path);
            if let Some(content) = value {
                self.found.insert(path, content);
            }
        }
        for hidden in layer.hidden {
            self.pending.retain(|p| !is_within(p, &hidden));
        }
    }

    /// The files found, keyed as the caller spelled them.
    pub fn into_found(self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (normalised, given) in &self.requested {
            if let Some(content) = self.found.get(normalised) {
                out.insert(given.clone(), content.clone());
            }
        }
        out
    }
}
