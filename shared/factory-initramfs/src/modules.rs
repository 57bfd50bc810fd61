//! The `modules.dep` layer (talos-imager §4.4 step 2): when an extension ships kernel modules,
//! the kernel's module index has to cover them, so the imager runs `depmod` over the release's
//! modules plus every extension's and ships the resulting `modules.*` files as one more layer.
//!
//! Like the imager, this takes `rootfs.sqsh` out of the base initramfs, extracts
//! `<modules>/<kver>/` from it (with `backhand`, where the imager runs `unsquashfs`), copies the
//! extensions' `<modules>/<kver>/` over it and runs kmod's `depmod`. `depmod` stays an external
//! program: its output includes kmod's binary index tries (`modules.dep.bin`, `modules.alias.bin`,
//! …) that libkmod (udevd, modprobe) reads instead of the text files, and matching them byte for
//! byte is kmod's job. It is only needed when an extension carries modules; its absence is a
//! clear [`Error::ToolMissing`].

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tree::{Content, Kind, Node};
use crate::{Base, Error};

/// The imager's depmod configuration (`/etc/modules.d/10-extra-modules.conf` in its image).
const DEPMOD_CONF: &str = "search extras built-in\n";
/// The squashfs member of the base initramfs.
const ROOTFS: &[u8] = b"rootfs.sqsh";
const XZ_MAGIC: [u8; 4] = [0xfd, b'7', b'z', b'X'];

/// The modules.dep layer's root, and the kernel release it is for.
pub(crate) struct ModulesLayer {
    pub root: Node,
    pub kernel_release: String,
}

/// Builds the `modules.dep` layer in `work` (which must outlive the layer: its files stay there).
pub(crate) fn build(
    base: &Base,
    modules_dir: &str,
    extensions: &[(String, &Node)],
    work: &Path,
    depmod: &Path,
) -> Result<ModulesLayer, Error> {
    let rootfs_path = work.join("rootfs.sqsh");
    extract_rootfs(base, &rootfs_path)?;

    let root = work.join("root");
    let lib_modules = root.join("lib/modules");
    let kernel_release = extract_modules(&rootfs_path, modules_dir, &lib_modules)?;
    fs::remove_file(&rootfs_path).map_err(Error::io_path("removing", &rootfs_path))?;
    let kver_dir = lib_modules.join(&kernel_release);

    for (name, rootfs) in extensions {
        let path = format!("{modules_dir}/{kernel_release}");
        let Some(tree) = rootfs.dereferenced(&path) else {
            let available: Vec<String> = rootfs
                .get(modules_dir)
                .and_then(Node::children)
                .map(|c| {
                    c.keys()
                        .map(|k| String::from_utf8_lossy(k).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Err(Error::KernelModules {
                extension: name.clone(),
                reason: format!(
                    "the release's kernel is {kernel_release} but the extension has modules for {}",
                    if available.is_empty() {
                        "no kernel".to_owned()
                    } else {
                        available.join(", ")
                    }
                ),
            });
        };
        copy_tree(&tree, &kver_dir)?;
    }

    // kmod may be built for /lib/modules or /usr/lib/modules: both lead to the same tree.
    let usr_lib = root.join("usr/lib");
    fs::create_dir_all(&usr_lib).map_err(Error::io_path("creating", &usr_lib))?;
    let usr_modules = usr_lib.join("modules");
    std::os::unix::fs::symlink("../../lib/modules", &usr_modules)
        .map_err(Error::io_path("creating", &usr_modules))?;
    let conf = work.join("depmod.conf");
    fs::write(&conf, DEPMOD_CONF).map_err(Error::io_path("writing", &conf))?;

    run_depmod(depmod, &root, &conf, &kernel_release)?;

    let mut layer = Node::dir(0o755);
    let mut names: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(&kver_dir).map_err(Error::io_path("reading", &kver_dir))? {
        let entry = entry.map_err(Error::io_path("reading", &kver_dir))?;
        if entry.file_name().as_bytes().starts_with(b"modules.") {
            names.push(entry.path());
        }
    }
    names.sort();
    for path in names {
        let meta = fs::symlink_metadata(&path).map_err(Error::io_path("reading", &path))?;
        if meta.is_dir() {
            continue;
        }
        let (mode, size) = if meta.is_file() {
            (meta.permissions().mode() & 0o755, meta.len())
        } else {
            // The imager copies through links.
            let target = fs::metadata(&path).map_err(Error::io_path("reading", &path))?;
            (target.permissions().mode() & 0o755, target.len())
        };
        let name = path
            .file_name()
            .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
            .unwrap_or_default();
        layer.insert(
            &format!("{modules_dir}/{kernel_release}/{name}"),
            Node::file(mode, Content::Disk { path, size }),
            0o755,
        );
    }
    Ok(ModulesLayer {
        root: layer,
        kernel_release,
    })
}

/// Copies `rootfs.sqsh` out of the (decompressed) base initramfs.
fn extract_rootfs(base: &Base, dest: &Path) -> Result<(), Error> {
    let invalid = |e: io::Error| Error::InvalidBase(format!("reading the archive: {e}"));
    let mut raw = base.open().map_err(Error::io("opening the base initramfs"))?;
    let mut magic = [0u8; 4];
    raw.read_exact(&mut magic).map_err(invalid)?;
    let chained = io::Cursor::new(magic).chain(raw);
    let mut plain: Box<dyn Read> = if magic == XZ_MAGIC {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(chained))
    } else {
        Box::new(zstd::stream::read::Decoder::new(chained).map_err(invalid)?)
    };
    let mut found = false;
    let mut write_error = None;
    crate::cpio::read_members(&mut plain, &mut |header, data| {
        if header.name != ROOTFS {
            return Ok(true);
        }
        found = true;
        let copied = File::create(dest).and_then(|f| {
            let mut w = BufWriter::new(f);
            io::copy(data, &mut w)?;
            w.flush()
        });
        if let Err(e) = copied {
            write_error = Some(e);
        }
        Ok(false)
    })
    .map_err(invalid)?;
    if let Some(e) = write_error {
        return Err(Error::io_path("writing", dest)(e));
    }
    if !found {
        return Err(Error::InvalidBase("no rootfs.sqsh in the base initramfs".into()));
    }
    Ok(())
}

/// Extracts `<modules_dir>/<kver>/` of the squashfs image at `sqsh` into `dest/<kver>/`;
/// returns `<kver>` (there must be exactly one).
fn extract_modules(sqsh: &Path, modules_dir: &str, dest: &Path) -> Result<String, Error> {
    let invalid = |e: backhand::BackhandError| Error::InvalidBase(format!("rootfs.sqsh: {e}"));
    let file = File::open(sqsh).map_err(Error::io_path("opening", sqsh))?;
    let fs_reader = backhand::FilesystemReader::from_reader(BufReader::new(file)).map_err(invalid)?;
    let prefix = PathBuf::from("/").join(modules_dir);

    let mut releases = Vec::new();
    for node in fs_reader.files() {
        if node.fullpath.parent() == Some(prefix.as_path()) {
            let name = node
                .fullpath
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            releases.push((
                name.unwrap_or_default(),
                matches!(node.inner, backhand::InnerNode::Dir(_)),
            ));
        }
    }
    let kernel_release = match releases.as_slice() {
        [(name, true)] => name.clone(),
        _ => {
            return Err(Error::InvalidBase(format!(
                "rootfs.sqsh: /{modules_dir} must hold exactly one kernel release directory, it holds {:?}",
                releases.iter().map(|r| &r.0).collect::<Vec<_>>()
            )))
        }
    };
    let kver_prefix = prefix.join(&kernel_release);
    for node in fs_reader.files() {
        let Ok(rel) = node.fullpath.strip_prefix(&kver_prefix) else {
            continue;
        };
        let target = dest.join(&kernel_release).join(rel);
        match &node.inner {
            backhand::InnerNode::Dir(_) => {
                fs::create_dir_all(&target).map_err(Error::io_path("creating", &target))?;
            }
            backhand::InnerNode::File(file) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(Error::io_path("creating", parent))?;
                }
                let mut out =
                    BufWriter::new(File::create(&target).map_err(Error::io_path("creating", &target))?);
                let mut reader = fs_reader.file(file).reader();
                io::copy(&mut reader, &mut out)
                    .and_then(|_| out.flush())
                    .map_err(Error::io_path("extracting", &target))?;
            }
            backhand::InnerNode::Symlink(link) => {
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(Error::io_path("creating", parent))?;
                }
                std::os::unix::fs::symlink(&link.link, &target)
                    .map_err(Error::io_path("creating", &target))?;
            }
            _ => {}
        }
    }
    Ok(kernel_release)
}

/// Writes `tree` (a directory) over `dest`, replacing files that exist.
fn copy_tree(tree: &Node, dest: &Path) -> Result<(), Error> {
    fs::create_dir_all(dest).map_err(Error::io_path("creating", dest))?;
    let mut result = Ok(());
    let _ = tree.walk(&mut |path, node| -> Result<(), ()> {
        let target = dest.join(std::ffi::OsStr::from_bytes(path));
        let step = (|| -> io::Result<()> {
            match &node.kind {
                Kind::Dir(_) => fs::create_dir_all(&target),
                Kind::File(content) => {
                    if fs::symlink_metadata(&target).is_ok() {
                        fs::remove_file(&target)?;
                    }
                    let mut out = BufWriter::new(File::create(&target)?);
                    io::copy(&mut content.open()?, &mut out)?;
                    out.flush()
                }
                Kind::Symlink(link) => {
                    if fs::symlink_metadata(&target).is_ok() {
                        fs::remove_file(&target)?;
                    }
                    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), &target)
                }
            }
        })();
        match step {
            Ok(()) => Ok(()),
            Err(e) => {
                result = Err(Error::io_path("copying kernel modules to", &target)(e));
                Err(())
            }
        }
    });
    result
}

fn run_depmod(depmod: &Path, basedir: &Path, conf: &Path, kernel_release: &str) -> Result<(), Error> {
    let output = Command::new(depmod)
        .arg("--all")
        .arg("--basedir")
        .arg(basedir)
        .arg("--config")
        .arg(conf)
        .arg(kernel_release)
        .output();
    let output = match output {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::ToolMissing {
                tool: "depmod",
                program: depmod.display().to_string(),
            })
        }
        Err(e) => return Err(Error::io(format!("running {}", depmod.display()))(e)),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr: String = stderr.chars().take(4000).collect();
        return Err(Error::ToolFailed {
            tool: "depmod",
            status: output.status.to_string(),
            stderr,
        });
    }
    Ok(())
}
