//! Deterministic image layers: a tar of a [`Tree`] (entries in path order, owner 0:0, the fixed
//! release mtime, no user/group names), gzip-compressed without a timestamp.

use bytes::Bytes;
use tar::{EntryType, Header};

use super::spec::{Descriptor, MEDIA_LAYER_GZIP};
use crate::tree::{Node, Tree};
use crate::{compress, Error, SOURCE_DATE_EPOCH};

/// A compressed layer with the digest of its uncompressed tar (the config's `diff_id`).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Bytes,
    pub descriptor: Descriptor,
    pub diff_id: String,
    /// Size of the files in the layer, for the summary.
    pub content_bytes: u64,
}

impl Layer {
    pub fn from_tree(tree: &Tree) -> Result<Self, Error> {
        let tar = tar_of(tree)?;
        let blob = compress::gzip(&tar)?;
        Ok(Self {
            descriptor: Descriptor::new(MEDIA_LAYER_GZIP, &blob),
            diff_id: super::digest(&tar),
            blob: blob.into(),
            content_bytes: tree.file_bytes(),
        })
    }
}

/// The uncompressed tar of `tree`.
pub fn tar_of(tree: &Tree) -> Result<Vec<u8>, Error> {
    let fail = |e: std::io::Error| Error::build("layer tar", e);
    let mut builder = tar::Builder::new(Vec::with_capacity(
        usize::try_from(tree.file_bytes()).unwrap_or(0),
    ));
    for (path, entry) in tree.iter() {
        let mut header = Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(u64::from(SOURCE_DATE_EPOCH));
        match &entry.node {
            Node::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), &[][..])
                    .map_err(fail)?;
            }
            Node::File(data) => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, &data[..]).map_err(fail)?;
            }
            Node::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target).map_err(fail)?;
            }
            Node::CharDevice { major, minor } => {
                header.set_entry_type(EntryType::Char);
                header.set_size(0);
                header.set_device_major(*major).map_err(fail)?;
                header.set_device_minor(*minor).map_err(fail)?;
                builder.append_data(&mut header, path, &[][..]).map_err(fail)?;
            }
        }
    }
    builder.into_inner().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_is_deterministic_and_lists_entries_in_order() {
        let mut tree = Tree::new();
        tree.file("rootfs/usr/local/bin/tool", "x")
            .file("manifest.yaml", "version: v1alpha1\n");
        tree.symlink("rootfs/usr/local/bin/alias", "tool");
        let a = Layer::from_tree(&tree).expect("layer");
        let b = Layer::from_tree(&tree).expect("layer");
        assert_eq!(a.descriptor, b.descriptor);
        let tar = tar_of(&tree).expect("tar");
        let mut archive = tar::Archive::new(&tar[..]);
        let names: Vec<String> = archive
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry").path().expect("path").display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "manifest.yaml",
                "rootfs/",
                "rootfs/usr/",
                "rootfs/usr/local/",
                "rootfs/usr/local/bin/",
                "rootfs/usr/local/bin/alias",
                "rootfs/usr/local/bin/tool"
            ]
        );
    }
}
