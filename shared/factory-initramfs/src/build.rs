//! The build itself (`Builder.Build` of the imager): load and validate the extensions, make the
//! modules.dep layer, sort each extension's files into early microcode, firmware and its squashfs
//! layer, then write the three segments.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use factory_core::profile::quirks::Quirks;
use factory_core::version::TalosVersion;
use sha2::{Digest, Sha256};

use crate::compress::{BlockCodec, StreamEncoder, ZSTD_LEVEL};
use crate::constraint::Range;
use crate::cpio::NewcWriter;
use crate::manifest::{extensions_yaml, Metadata};
use crate::tree::{Content, Kind, Node};
use crate::{modules, squashfs, Base, Error, Layer, Options, Request, Summary};

/// Manifests are a few hundred bytes; this only guards against nonsense.
const MANIFEST_LIMIT: u64 = 1 << 20;
/// The SELinux label of the embedded machine configuration (Talos `StateSelinuxLabel`).
const STATE_SELINUX_LABEL: &[u8] = b"system_u:object_r:system_state_t:s0";
const SCHEMATIC_DESCRIPTION: &str =
    "Virtual extension which specifies the schematic of the image built with schematic.";
const EMBEDDED_CONFIG_DESCRIPTION: &str = "Virtual extension which embeds the machine configuration.";

/// An extension ready to be processed.
struct Extension {
    /// Directory name in the imager's extension tree: `0`, `1`, …, `modules.dep`.
    dir: String,
    metadata: Metadata,
    rootfs: Node,
}

/// Where this Talos version keeps things, and how it compresses.
struct Paths {
    firmware: &'static str,
    modules: &'static str,
    zstd: bool,
}

impl Paths {
    fn of(version: &TalosVersion) -> Paths {
        // Talos is usr-merged since 1.10 (quirks `KernelModulesPath`, `FirmwarePath`).
        let usr_merged = version.core() >= TalosVersion::new(1, 10, 0);
        Paths {
            firmware: if usr_merged {
                "usr/lib/firmware"
            } else {
                "lib/firmware"
            },
            modules: if usr_merged {
                "usr/lib/modules"
            } else {
                "lib/modules"
            },
            zstd: Quirks::new(version).supports_zstd(),
        }
    }
}

/// Builds the customised initramfs of `request` on `base` into `out` (see the crate docs).
pub fn build<W: Write>(base: &Base, request: &Request, options: &Options, out: W) -> Result<Summary, Error> {
    let version = &request.version;
    let quirks = Quirks::new(version);
    let paths = Paths::of(version);
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        options.threads
    };

    // The factory refuses this before pulling anything (spec §6.5).
    if let Some(schematic) = &request.schematic {
        if !schematic.embedded_config.is_empty() && !quirks.supports_embedded_config() {
            return Err(Error::EmbeddedConfigUnsupported(version.to_string()));
        }
    }

    // 1. The extension list: official ones, the schematic's, the embedded configuration's.
    let mut extensions = Vec::new();
    for (j, source) in request.extensions.iter().enumerate() {
        extensions.push(load(&source.dir, &source.label, j.to_string())?);
    }
    if let Some(schematic) = &request.schematic {
        extensions.push(schematic_extension(
            schematic,
            quirks.supports_overlays(),
            extensions.len(),
        ));
        if !schematic.embedded_config.is_empty() {
            let mode = if version.core() >= TalosVersion::new(1, 13, 0) {
                0o400
            } else {
                0o000
            };
            extensions.push(embedded_config_extension(
                &schematic.embedded_config,
                mode,
                extensions.len(),
            ));
        }
    }
    // The imager lists its extension directories by name: 0, 1, 10, 11, 2, …
    extensions.sort_by(|a, b| a.dir.cmp(&b.dir));

    // 2. Compatibility, checked against the core version.
    let core = version.core();
    for ext in &extensions {
        validate(ext, core.semver(), version)?;
    }

    let scratch = tempfile::Builder::new()
        .prefix("initramfs-")
        .tempdir_in(&options.scratch_dir)
        .map_err(Error::io_path(
            "creating a scratch directory in",
            &options.scratch_dir,
        ))?;

    // 3. Kernel modules: one more layer, last.
    let with_modules: Vec<(String, &Node)> = extensions
        .iter()
        .filter(|e| e.rootfs.resolve(&split(paths.modules)).is_some())
        .map(|e| (e.metadata.name.clone(), &e.rootfs))
        .collect();
    let mut kernel_release = None;
    if !with_modules.is_empty() {
        let work = scratch.path().join("modules");
        fs::create_dir_all(&work).map_err(Error::io_path("creating", &work))?;
        let layer = modules::build(base, paths.modules, &with_modules, &work, &options.depmod)?;
        kernel_release = Some(layer.kernel_release.clone());
        extensions.push(Extension {
            dir: "modules.dep".into(),
            metadata: Metadata {
                name: "modules.dep".into(),
                version: layer.kernel_release,
                author: "Talos Machinery".into(),
                description: "Combined modules.dep for all extensions".into(),
                compatibility: String::new(),
                extra_info: String::new(),
            },
            rootfs: layer.root,
        });
    }

    // 4. Per extension: microcode, firmware, squashfs.
    let codec = if paths.zstd {
        BlockCodec::Zstd { level: ZSTD_LEVEL }
    } else {
        BlockCodec::Xz {
            dict_size: squashfs::BLOCK_SIZE,
        }
    };
    let mut intel = Vec::new();
    let mut amd = Vec::new();
    let mut staging = Node::dir(0o755);
    let mut layers = Vec::new();
    for mut ext in extensions {
        take_microcode(&mut ext, paths.firmware, "intel-ucode", |_| true, &mut intel)?;
        take_microcode(
            &mut ext,
            paths.firmware,
            "amd-ucode",
            |name| name.starts_with(b"microcode_amd") && name.ends_with(b".bin"),
            &mut amd,
        )?;
        if ext.rootfs.resolve(&split(paths.firmware)).is_some() {
            if let Some(mut firmware) = ext.rootfs.dereferenced(paths.firmware) {
                umask(&mut firmware);
                let parent_mode = firmware.mode;
                ext.rootfs.take(paths.firmware);
                staging.insert(paths.firmware, firmware, parent_mode);
            }
        }
        let image = format!("{}.sqsh", ext.dir);
        let path = scratch.path().join(&image);
        let squashfs_bytes = write_squashfs(&ext.rootfs, &path, codec, options.mtime, threads)?;
        staging.insert(
            &image,
            Node::file(
                0o644,
                Content::Disk {
                    path,
                    size: squashfs_bytes,
                },
            ),
            0o755,
        );
        layers.push(Layer {
            image,
            metadata: ext.metadata,
            squashfs_bytes,
        });
    }

    // 5. extensions.yaml.
    let listing: Vec<(String, Metadata)> = layers
        .iter()
        .map(|l| (l.image.clone(), l.metadata.clone()))
        .collect();
    let extensions_yaml = extensions_yaml(&listing);
    staging.insert(
        "extensions.yaml",
        Node::file(0o644, Content::memory(extensions_yaml.clone())),
        0o755,
    );
    let firmware_files = staging.get(paths.firmware).map_or(0, count_files);

    // 6. The three segments.
    let mut out = Counter { inner: out, count: 0 };
    let microcode = if intel.is_empty() && amd.is_empty() {
        None
    } else {
        let start = out.count;
        let mut archive = NewcWriter::new(&mut out, options.mtime);
        archive
            .dir(b"kernel", 0o755, 3)
            .map_err(Error::io("writing the microcode archive"))?;
        archive
            .dir(b"kernel/x86", 0o755, 3)
            .map_err(Error::io("writing the microcode archive"))?;
        archive
            .dir(b"kernel/x86/microcode", 0o755, 2)
            .map_err(Error::io("writing the microcode archive"))?;
        for (name, blobs) in [("AuthenticAMD.bin", amd), ("GenuineIntel.bin", intel)] {
            if blobs.is_empty() {
                continue;
            }
            let content = Content::Concat(blobs);
            archive
                .content(format!("kernel/x86/microcode/{name}").as_bytes(), 0o644, &content)
                .map_err(Error::io("writing the microcode archive"))?;
        }
        archive
            .finish()
            .map_err(Error::io("writing the microcode archive"))?;
        Some(start..out.count)
    };

    let base_start = out.count;
    let mut reader = base.open().map_err(Error::io("opening the base initramfs"))?;
    io::copy(&mut reader, &mut out).map_err(Error::io("copying the base initramfs"))?;
    let base_range = base_start..out.count;

    let appended_start = out.count;
    let encoder =
        StreamEncoder::new(&mut out, paths.zstd, threads).map_err(Error::io("starting the compressor"))?;
    let mut archive = NewcWriter::new(encoder, options.mtime);
    let write_error = Error::io("writing the extensions archive");
    let written = staging.walk(&mut |path, node| -> io::Result<()> {
        let precompressed = !path.contains(&b'/') && path.ends_with(b".sqsh");
        if precompressed {
            archive.get_mut().set_precompressed(true)?;
        }
        archive.node(path, node)?;
        if precompressed {
            archive.get_mut().set_precompressed(false)?;
        }
        Ok(())
    });
    written.map_err(write_error)?;
    let encoder = archive
        .finish()
        .map_err(Error::io("writing the extensions archive"))?;
    encoder
        .finish()
        .map_err(Error::io("finishing the extensions archive"))?;
    out.flush().map_err(Error::io("writing the initramfs"))?;
    let appended = appended_start..out.count;

    Ok(Summary {
        size: out.count,
        microcode,
        base: base_range,
        appended,
        layers,
        extensions_yaml,
        firmware_files,
        kernel_release,
    })
}

/// Loads an extracted extension: exactly `manifest.yaml` and `rootfs/` (talos-imager §4.1).
fn load(dir: &Path, label: &str, index: String) -> Result<Extension, Error> {
    let entries = fs::read_dir(dir).map_err(Error::io_path("reading", dir))?;
    let mut manifest = None;
    let mut rootfs = None;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io_path("reading", dir))?;
        names.push(entry.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        match name.to_str() {
            Some("manifest.yaml") => {
                let file = File::open(&path).map_err(Error::io_path("opening", &path))?;
                let mut text = String::new();
                file.take(MANIFEST_LIMIT)
                    .read_to_string(&mut text)
                    .map_err(|e| Error::invalid(label, format!("reading manifest.yaml: {e}")))?;
                manifest = Some(Metadata::parse_manifest(&text).map_err(|e| Error::invalid(label, e))?);
            }
            Some("rootfs") => {
                let tree = Node::read_dir_tree(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidData => Error::invalid(label, e.to_string()),
                    _ => Error::io_path("reading", &path)(e),
                })?;
                if !matches!(tree.kind, Kind::Dir(_)) {
                    return Err(Error::invalid(label, "rootfs is not a directory"));
                }
                rootfs = Some(tree);
            }
            _ => {
                return Err(Error::invalid(
                    label,
                    format!("unexpected file {:?}", name.to_string_lossy()),
                ))
            }
        }
    }
    let metadata = manifest.ok_or_else(|| Error::invalid(label, "extension manifest is missing"))?;
    let rootfs = rootfs.ok_or_else(|| Error::invalid(label, "extension rootfs is missing"))?;
    Ok(Extension {
        dir: index,
        metadata,
        rootfs,
    })
}

fn validate(ext: &Extension, core: &semver::Version, version: &TalosVersion) -> Result<(), Error> {
    let constraint = &ext.metadata.compatibility;
    if constraint.is_empty() {
        return Ok(());
    }
    let range = Range::parse(constraint).map_err(|reason| Error::InvalidConstraint {
        name: ext.metadata.name.clone(),
        constraint: constraint.clone(),
        reason,
    })?;
    if range.matches(core) {
        Ok(())
    } else {
        Err(Error::Incompatible {
            name: ext.metadata.name.clone(),
            version: ext.metadata.version.clone(),
            constraint: constraint.clone(),
            talos: version.semver().to_string(),
        })
    }
}

/// The factory's `schematic` extension (spec §6.5).
fn schematic_extension(layer: &crate::SchematicLayer, with_yaml: bool, index: usize) -> Extension {
    let mut rootfs = Node::dir(0o755);
    rootfs.insert(
        &format!("usr/local/share/schematic/{}", layer.id),
        Node::file(0o644, Content::memory(Vec::new())),
        0o755,
    );
    Extension {
        dir: index.to_string(),
        metadata: Metadata {
            name: "schematic".into(),
            version: layer.id.clone(),
            author: layer.author.clone(),
            description: SCHEMATIC_DESCRIPTION.into(),
            compatibility: ">= 1.0.0".into(),
            extra_info: if with_yaml {
                layer.canonical_yaml.clone()
            } else {
                String::new()
            },
        },
        rootfs,
    }
}

/// The imager's `embedded-config` extension (talos-imager §4.3).
fn embedded_config_extension(config: &str, mode: u32, index: usize) -> Extension {
    let mut rootfs = Node::dir(0o755);
    let mut file = Node::file(mode, Content::memory(config.as_bytes().to_vec()));
    file.xattrs
        .push(("security.selinux".into(), STATE_SELINUX_LABEL.to_vec()));
    rootfs.insert("usr/local/etc/talos/config.yaml", file, 0o755);
    Extension {
        dir: index.to_string(),
        metadata: Metadata {
            name: "embedded-config".into(),
            version: hex::encode(Sha256::digest(config.as_bytes())),
            author: "Imager".into(),
            description: EMBEDDED_CONFIG_DESCRIPTION.into(),
            compatibility: ">= 1.0.0".into(),
            extra_info: String::new(),
        },
        rootfs,
    }
}

/// Moves the blobs of `<firmware>/<dir>/*` accepted by `matches` (in name order, links
/// followed) out of the extension into `blobs`.
fn take_microcode(
    ext: &mut Extension,
    firmware: &str,
    dir: &str,
    matches: impl Fn(&[u8]) -> bool,
    blobs: &mut Vec<Content>,
) -> Result<(), Error> {
    let dir_path = format!("{firmware}/{dir}");
    let names: Vec<Vec<u8>> = match ext.rootfs.get(&dir_path).and_then(Node::children) {
        Some(children) => children.keys().filter(|n| matches(n)).cloned().collect(),
        None => return Ok(()),
    };
    for name in names {
        let mut full = split(&dir_path);
        full.push(name.clone());
        let shown = || format!("/{dir_path}/{}", String::from_utf8_lossy(&name));
        match ext.rootfs.resolve(&full).map(|n| &n.kind) {
            Some(Kind::File(content)) => blobs.push(content.clone()),
            Some(_) => {
                return Err(Error::invalid(
                    &ext.metadata.name,
                    format!("microcode {} is not a regular file", shown()),
                ))
            }
            None => {
                return Err(Error::invalid(
                    &ext.metadata.name,
                    format!("microcode {} is a dangling symlink", shown()),
                ))
            }
        }
        ext.rootfs.take_child(&dir_path, &name);
    }
    Ok(())
}

/// The imager creates the moved firmware with the process umask (022).
fn umask(node: &mut Node) {
    if !matches!(node.kind, Kind::Symlink(_)) {
        node.mode &= 0o755;
    }
    if let Some(children) = node.children_mut() {
        for child in children.values_mut() {
            umask(child);
        }
    }
}

fn count_files(node: &Node) -> u64 {
    match &node.kind {
        Kind::Dir(children) => children.values().map(count_files).sum(),
        Kind::File(_) => 1,
        Kind::Symlink(_) => 0,
    }
}

fn split(path: &str) -> Vec<Vec<u8>> {
    path.split('/')
        .filter(|p| !p.is_empty())
        .map(|p| p.as_bytes().to_vec())
        .collect()
}

fn write_squashfs(
    root: &Node,
    path: &Path,
    codec: BlockCodec,
    mtime: u32,
    threads: usize,
) -> Result<u64, Error> {
    let file = File::create(path).map_err(Error::io_path("creating", path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let summary = squashfs::write(
        root,
        &mut out,
        &squashfs::Options {
            codec,
            mtime,
            threads,
        },
    )
    .map_err(Error::io_path("writing", path))?;
    out.flush().map_err(Error::io_path("writing", path))?;
    Ok(summary.size)
}

/// Counts bytes written.
struct Counter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
