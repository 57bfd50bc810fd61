//! File trees as the build sees them: read from an extracted extension directory (metadata only:
//! contents stay on disk until they are streamed), or made up in memory (virtual extensions,
//! `extensions.yaml`). Children are kept sorted by name, so every walk is in the order the
//! imager's `os.ReadDir` walks give.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Symlinks followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// One file, directory or symlink.
#[derive(Debug, Clone)]
pub struct Node {
    /// Permission bits (`0o7777`), without the file type.
    pub mode: u32,
    /// Extended attributes, full names (`security.selinux`) and raw values.
    pub xattrs: Vec<(String, Vec<u8>)>,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Children by name (bytes: names need not be UTF-8), in byte order.
    Dir(BTreeMap<Vec<u8>, Node>),
    File(Content),
    /// The link target, as stored.
    Symlink(Vec<u8>),
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum Content {
    /// A file on disk, with the size it had when the tree was read (checked when streamed).
    Disk {
        path: PathBuf,
        size: u64,
    },
    Memory(Arc<[u8]>),
    /// Several contents one after another (early microcode blobs).
    Concat(Vec<Content>),
}

impl Content {
    pub fn memory(bytes: impl Into<Vec<u8>>) -> Content {
        Content::Memory(bytes.into().into())
    }

    pub fn size(&self) -> u64 {
        match self {
            Content::Disk { size, .. } => *size,
            Content::Memory(bytes) => bytes.len() as u64,
            Content::Concat(parts) => parts.iter().map(Content::size).sum(),
        }
    }

    /// A reader of exactly [`Content::size`] bytes; a file that changed size since the tree was
    /// read is an error (`UnexpectedEof` when it shrank, `InvalidData` when it grew).
    pub fn open(&self) -> io::Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            Content::Disk { path, size } => Box::new(Sized {
                inner: File::open(path)?,
                remaining: *size,
                path: path.clone(),
            }),
            Content::Memory(bytes) => Box::new(&bytes[..]),
            Content::Concat(parts) => {
                let mut chained: Box<dyn Read + Send + '_> = Box::new(io::empty());
                for part in parts {
                    chained = Box::new(chained.chain(part.open()?));
                }
                chained
            }
        })
    }
}

/// A reader that yields exactly `remaining` bytes of a file.
struct Sized {
    inner: File,
    remaining: u64,
    path: PathBuf,
}

impl Read for Sized {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // One more byte means the file grew since it was listed.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} grew while it was read", self.path.display()),
                )),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while it was read", self.path.display()),
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl Node {
    pub fn dir(mode: u32) -> Node {
        Node {
            mode,
            xattrs: Vec::new(),
            kind: Kind::Dir(BTreeMap::new()),
        }
    }

    pub fn file(mode: u32, content: Content) -> Node {
        Node {
            mode,
            xattrs: Vec::new(),
            kind: Kind::File(content),
        }
    }

    pub fn symlink(target: impl Into<Vec<u8>>) -> Node {
        Node {
            mode: 0o777,
            xattrs: Vec::new(),
            kind: Kind::Symlink(target.into()),
        }
    }

    /// Reads the metadata of the tree under `path` (not following symlinks). Only directories,
    /// regular files and symlinks are accepted, as in extension images.
    pub fn read_dir_tree(path: &Path) -> io::Result<Node> {
        let meta = fs::symlink_metadata(path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            let mut children = BTreeMap::new();
            for entry in fs::read_dir(path)? {
                let entry = entry?;
                let child = Node::read_dir_tree(&entry.path())?;
                children.insert(entry.file_name().as_bytes().to_vec(), child);
            }
            Ok(Node {
                mode,
                xattrs: Vec::new(),
                kind: Kind::Dir(children),
            })
        } else if file_type.is_file() {
            Ok(Node::file(
                mode,
                Content::Disk {
                    path: path.to_path_buf(),
                    size: meta.len(),
                },
            ))
        } else if file_type.is_symlink() {
            let target = fs::read_link(path)?;
            Ok(Node {
                mode,
                xattrs: Vec::new(),
                kind: Kind::Symlink(target.as_os_str().as_bytes().to_vec()),
            })
        } else {
            let what = if file_type.is_char_device() || file_type.is_block_device() {
                "device"
            } else if file_type.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("special files are not allowed: {} is a {what}", path.display()),
            ))
        }
    }

    pub fn children(&self) -> Option<&BTreeMap<Vec<u8>, Node>> {
        match &self.kind {
            Kind::Dir(children) => Some(children),
            _ => None,
        }
    }

    pub fn children_mut(&mut self) -> Option<&mut BTreeMap<Vec<u8>, Node>> {
        match &mut self.kind {
            Kind::Dir(children) => Some(children),
            _ => None,
        }
    }

    /// The node at `path` (slash-separated, relative), without following symlinks.
    pub fn get(&self, path: &str) -> Option<&Node> {
        let mut node = self;
        for part in components(path) {
            node = node.children()?.get(part)?;
        }
        Some(node)
    }

    /// Removes and returns the node at `path` (not the root).
    pub fn take(&mut self, path: &str) -> Option<Node> {
        let parts: Vec<&[u8]> = components(path).collect();
        let (last, parents) = parts.split_last()?;
        let mut node = self;
        for part in parents {
            node = node.children_mut()?.get_mut(*part)?;
        }
        node.children_mut()?.remove(*last)
    }

    /// Removes and returns the child `name` of the directory at `dir` (names need not be UTF-8).
    pub fn take_child(&mut self, dir: &str, name: &[u8]) -> Option<Node> {
        let mut node = self;
        for part in components(dir) {
            node = node.children_mut()?.get_mut(part)?;
        }
        node.children_mut()?.remove(name)
    }

    /// Puts `node` at `path`, creating missing parent directories with `parent_mode`; a
    /// directory over a directory merges (the existing directory keeps its mode), anything else
    /// replaces what was there. Parents that exist as non-directories are replaced.
    pub fn insert(&mut self, path: &str, node: Node, parent_mode: u32) {
        let parts: Vec<&[u8]> = components(path).collect();
        let Some((last, parents)) = parts.split_last() else {
            self.merge(node);
            return;
        };
        let mut cur = self;
        for part in parents {
            let children = cur.children_mut_or_replace(parent_mode);
            cur = children
                .entry(part.to_vec())
                .or_insert_with(|| Node::dir(parent_mode));
        }
        let children = cur.children_mut_or_replace(parent_mode);
        match children.get_mut(*last) {
            Some(existing) => existing.merge(node),
            None => {
                children.insert(last.to_vec(), node);
            }
        }
    }

    fn children_mut_or_replace(&mut self, mode: u32) -> &mut BTreeMap<Vec<u8>, Node> {
        if !matches!(self.kind, Kind::Dir(_)) {
            *self = Node::dir(mode);
        }
        match &mut self.kind {
            Kind::Dir(children) => children,
            // Just made a directory.
            _ => unreachable!("a directory"),
        }
    }

    fn merge(&mut self, other: Node) {
        match (&mut self.kind, other.kind) {
            (Kind::Dir(mine), Kind::Dir(theirs)) => {
                for (name, child) in theirs {
                    match mine.get_mut(&name) {
                        Some(existing) => existing.merge(child),
                        None => {
                            mine.insert(name, child);
                        }
                    }
                }
            }
            (_, kind) => {
                self.mode = other.mode;
                self.xattrs = other.xattrs;
                self.kind = kind;
            }
        }
    }

    /// Follows `path` from `self` (the root), resolving symlinks as if `self` were `/`: absolute
    /// targets start at the root, `..` stops there. `None` when it does not resolve.
    pub fn resolve(&self, path: &[Vec<u8>]) -> Option<&Node> {
        let mut pending: Vec<Vec<u8>> = path.iter().rev().cloned().collect();
        let mut stack: Vec<&Node> = vec![self];
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part.is_empty() || part == b"." {
                continue;
            }
            if part == b".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            let current = *stack.last()?;
            let child = current.children()?.get(&part)?;
            match &child.kind {
                Kind::Symlink(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return None;
                    }
                    if target.starts_with(b"/") {
                        stack.truncate(1);
                    }
                    for piece in target.split(|b| *b == b'/').rev() {
                        pending.push(piece.to_vec());
                    }
                }
                _ => stack.push(child),
            }
        }
        stack.last().copied()
    }

    /// A copy of the subtree at `path` with every symlink replaced by a copy of what it resolves
    /// to inside `self` (the root): what the imager's copy of the firmware directory gives, since
    /// it follows links (`os.Stat`). Links that do not resolve stay links.
    pub fn dereferenced(&self, path: &str) -> Option<Node> {
        let parts: Vec<Vec<u8>> = components(path).map(<[u8]>::to_vec).collect();
        let node = self.get(path)?;
        Some(self.deref_node(node, &parts, 0))
    }

    fn deref_node(&self, node: &Node, at: &[Vec<u8>], depth: usize) -> Node {
        match &node.kind {
            Kind::Dir(children) => Node {
                mode: node.mode,
                xattrs: node.xattrs.clone(),
                kind: Kind::Dir(
                    children
                        .iter()
                        .map(|(name, child)| {
                            let mut path = at.to_vec();
                            path.push(name.clone());
                            (name.clone(), self.deref_node(child, &path, depth))
                        })
                        .collect(),
                ),
            },
            Kind::File(_) => node.clone(),
            Kind::Symlink(_) => {
                if depth >= MAX_SYMLINKS {
                    return node.clone();
                }
                match self.resolve(at) {
                    // A link to a directory: copy the directory, resolving links inside it
                    // relative to where they really are (the link's target).
                    Some(target) => {
                        let real = self.real_path(at);
                        self.deref_node(target, &real.unwrap_or_default(), depth + 1)
                    }
                    None => node.clone(),
                }
            }
        }
    }

    /// The symlink-free path `path` resolves to (for resolving links inside linked directories).
    fn real_path(&self, path: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
        let mut pending: Vec<Vec<u8>> = path.iter().rev().cloned().collect();
        let mut real: Vec<Vec<u8>> = Vec::new();
        let mut links = 0;
        while let Some(part) = pending.pop() {
            if part.is_empty() || part == b"." {
                continue;
            }
            if part == b".." {
                real.pop();
                continue;
            }
            let mut node = self;
            for p in &real {
                node = node.children()?.get(p)?;
            }
            let child = node.children()?.get(&part)?;
            match &child.kind {
                Kind::Symlink(target) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        return None;
                    }
                    if target.starts_with(b"/") {
                        real.clear();
                    }
                    for piece in target.split(|b| *b == b'/').rev() {
                        pending.push(piece.to_vec());
                    }
                }
                _ => real.push(part),
            }
        }
        Some(real)
    }

    /// Every node under `self` in pre-order (a directory before its children, children by
    /// name), with its path relative to `self` (`a`, `a/b`; the root itself is not visited).
    pub fn walk<E>(&self, f: &mut Visitor<'_, E>) -> Result<(), E> {
        let mut path = Vec::new();
        self.walk_inner(&mut path, f)
    }

    fn walk_inner<E>(&self, path: &mut Vec<u8>, f: &mut Visitor<'_, E>) -> Result<(), E> {
        if let Kind::Dir(children) = &self.kind {
            for (name, child) in children {
                let len = path.len();
                if len > 0 {
                    path.push(b'/');
                }
                path.extend_from_slice(name);
                f(path, child)?;
                child.walk_inner(path, f)?;
                path.truncate(len);
            }
        }
        Ok(())
    }

    /// Total bytes of the regular files under this node.
    pub fn file_bytes(&self) -> u64 {
        match &self.kind {
            Kind::Dir(children) => children.values().map(Node::file_bytes).sum(),
            Kind::File(content) => content.size(),
            Kind::Symlink(_) => 0,
        }
    }
}

/// What [`Node::walk`] calls with each path and node.
pub type Visitor<'a, E> = dyn FnMut(&[u8], &Node) -> Result<(), E> + 'a;

/// The non-empty components of a slash-separated relative path.
fn components(path: &str) -> impl Iterator<Item = &[u8]> {
    path.as_bytes().split(|b| *b == b'/').filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sample() -> Node {
        let mut root = Node::dir(0o755);
        root.insert(
            "usr/lib/firmware/a/fw.bin",
            Node::file(0o644, Content::memory("A")),
            0o755,
        );
        root.insert("usr/lib/firmware/b", Node::symlink("a"), 0o755);
        root.insert("usr/lib/firmware/c.bin", Node::symlink("a/fw.bin"), 0o755);
        root.insert(
            "usr/lib/firmware/d.bin",
            Node::symlink("/usr/lib/firmware/a/fw.bin"),
            0o755,
        );
        root.insert("usr/lib/firmware/dangling", Node::symlink("nowhere"), 0o755);
        root.insert("usr/local/bin/x", Node::file(0o755, Content::memory("x")), 0o755);
        root
    }

    #[test]
    fn walk_is_pre_order_by_name() {
        let mut root = Node::dir(0o755);
        root.insert("a-c", Node::file(0o644, Content::memory("")), 0o755);
        root.insert("a/b", Node::file(0o644, Content::memory("")), 0o755);
        let mut seen = Vec::new();
        root.walk::<()>(&mut |p, _| {
            seen.push(String::from_utf8(p.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "a/b", "a-c"]);
    }

    #[test]
    fn dereferencing_copies_link_targets() {
        let root = sample();
        let fw = root.dereferenced("usr/lib/firmware").unwrap();
        let file = |p: &str| match &fw.get(p).unwrap().kind {
            Kind::File(Content::Memory(b)) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(file("b/fw.bin"), "A");
        assert_eq!(file("c.bin"), "A");
        assert_eq!(file("d.bin"), "A");
        assert!(matches!(fw.get("dangling").unwrap().kind, Kind::Symlink(_)));
    }

    #[test]
    fn take_and_merge() {
        let mut root = sample();
        let fw = root.take("usr/lib/firmware").unwrap();
        assert!(root.get("usr/lib/firmware").is_none());
        assert!(root.get("usr/lib").is_some());
        let mut staging = Node::dir(0o755);
        staging.insert("usr/lib/firmware", fw.clone(), 0o755);
        staging.insert("usr/lib/firmware", fw, 0o755);
        assert!(staging.get("usr/lib/firmware/a/fw.bin").is_some());
    }

    #[test]
    fn contents_check_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"hello").unwrap();
        let content = Content::Disk {
            path: path.clone(),
            size: 5,
        };
        let mut out = Vec::new();
        content.open().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        fs::write(&path, b"hello!").unwrap();
        assert!(content.open().unwrap().read_to_end(&mut Vec::new()).is_err());
        fs::write(&path, b"hell").unwrap();
        assert!(content.open().unwrap().read_to_end(&mut Vec::new()).is_err());
    }
}
