//! An in-memory file tree: what a layer, a cpio archive or a squashfs holds.
//!
//! Paths are relative, `/`-separated, without `.` or `..`; a `BTreeMap` keeps them in byte order,
//! which is the `LC_ALL=C sort` order the Talos build uses and puts every directory before its
//! contents. Parent directories are added implicitly so every archive lists them.

use std::collections::BTreeMap;

use bytes::Bytes;

/// The kind and content of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    /// File contents; `Bytes` so that one kernel or busybox is shared by every archive holding it.
    File(Bytes),
    Symlink(String),
    /// A character device (only `dev/console` in the initramfs).
    CharDevice {
        major: u32,
        minor: u32,
    },
}

/// One entry: its node and permission bits (no file-type bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub node: Node,
    pub mode: u32,
}

/// A file tree. All entries belong to root (uid/gid 0) and share one fixed timestamp; archives
/// add those when writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

pub const DIR_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;
pub const EXEC_MODE: u32 = 0o755;

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a regular file with mode 0644.
    pub fn file(&mut self, path: &str, data: impl Into<Bytes>) -> &mut Self {
        self.insert(path, Node::File(data.into()), FILE_MODE)
    }

    /// Adds a regular file with mode 0755.
    pub fn exec(&mut self, path: &str, data: impl Into<Bytes>) -> &mut Self {
        self.insert(path, Node::File(data.into()), EXEC_MODE)
    }

    /// Adds a regular file with the given permission bits.
    pub fn file_mode(&mut self, path: &str, data: impl Into<Bytes>, mode: u32) -> &mut Self {
        self.insert(path, Node::File(data.into()), mode)
    }

    pub fn dir(&mut self, path: &str) -> &mut Self {
        self.insert(path, Node::Dir, DIR_MODE)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.insert(path, Node::Symlink(target.to_owned()), 0o777)
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Self {
        self.insert(path, Node::CharDevice { major, minor }, mode)
    }

    /// Every entry of `other`, with `prefix/` in front of its path (`""`: no prefix).
    pub fn graft(&mut self, prefix: &str, other: &Tree) -> &mut Self {
        for (path, entry) in &other.entries {
            let full = join(prefix, path);
            self.insert(&full, entry.node.clone(), entry.mode);
        }
        self
    }

    /// Entries in byte order of their paths (directories before their contents).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(path, entry)| (path.as_str(), entry))
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// Paths of the top-level entries (for checks like "an extension has exactly two").
    pub fn top_level(&self) -> Vec<&str> {
        self.entries
            .keys()
            .filter(|p| !p.contains('/'))
            .map(String::as_str)
            .collect()
    }

    /// Sum of the file sizes.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.node {
                Node::File(data) => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    fn insert(&mut self, path: &str, node: Node, mode: u32) -> &mut Self {
        let path = path.trim_matches('/');
        debug_assert!(
            !path.is_empty() && path.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "bad tree path {path:?}"
        );
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            end += pos;
            self.entries.entry(path[..end].to_owned()).or_insert(Entry {
                node: Node::Dir,
                mode: DIR_MODE,
            });
            end += 1;
        }
        self.entries.insert(path.to_owned(), Entry { node, mode });
        self
    }
}

/// `prefix/path`, or `path` when the prefix is empty.
pub fn join(prefix: &str, path: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        path.to_owned()
    } else {
        format!("{prefix}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_are_implicit() {
        let mut tree = Tree::new();
        tree.file("usr/lib/modules/6.1/modules.order", "x")
            .file("init", "y");
        let paths: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "init",
                "usr",
                "usr/lib",
                "usr/lib/modules",
                "usr/lib/modules/6.1",
                "usr/lib/modules/6.1/modules.order"
            ]
        );
        assert_eq!(tree.top_level(), ["init", "usr"]);
    }

    #[test]
    fn graft_prefixes_paths() {
        let mut inner = Tree::new();
        inner.file("a/b", "1");
        let mut outer = Tree::new();
        outer.graft("rootfs", &inner);
        assert!(outer.get("rootfs/a/b").is_some());
        assert_eq!(outer.get("rootfs").map(|e| &e.node), Some(&Node::Dir));
    }
}
