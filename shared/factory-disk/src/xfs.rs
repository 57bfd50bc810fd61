//! The BOOT partition: an XFS file system made by `mkfs.xfs` from a protofile (talos-imager.md
//! §10.3) into a partition-sized sparse file, whose data regions then become image extents
//! ([`crate::SparseImage::add_sparse_file`]): the 2000 MiB partition costs the few MiB of
//! metadata and files it holds.
//!
//! Command (`mkfs.xfs` runs in the staging directory so that the protofile names its sources by
//! relative, space-free names): `mkfs.xfs -n ftype=1 <features> -f -L BOOT [-s size=4096]
//! -p <protofile> -m uuid=<GUIDFromLabel("BOOT")> <file>`.
//!
//! Features: the Go imager passes `-c options=/usr/share/xfsprogs/mkfs/lts_<k>.conf` (6.18 for
//! Talos ≥ 1.13 and unparseable versions, 6.12 for 1.10–1.12, 6.6 for 1.8–1.9, 6.1 before).
//! We pass the same feature set as explicit `-m`/`-i`/`-n` options instead ([`LtsConfig`]),
//! deliberately: the builder's xfsprogs may lack the newer conf files (Debian 12's 6.1 ships up
//! to `lts_6.1.conf`), and Debian 12's own `lts_6.1.conf` is rejected by its `mkfs.xfs`
//! (`nrext64` under `[metadata]`). Features the installed `mkfs.xfs` does not know (read from
//! its usage text) are left out: those set to 0 (`metadir`, `exchange`, `parent`, `autofsck`)
//! are off anyway in such an xfsprogs; those set to 1 (`exchange`, `parent` of 6.18) are
//! missing from our BOOT file system and reported in [`BootFs::dropped_features`]. Talos boots
//! from BOOT read-only through GRUB, which ignores them.
//!
//! Determinism: the UUID is pinned (`-m uuid=`), the label, geometry and features are fixed,
//! directory order comes from the protofile; xfsprogs < 6.14 ignores SOURCE_DATE_EPOCH, so the
//! inode timestamps (and the CRCs covering them, ~100 bytes in the inode chunk) are the build
//! time: the BOOT partition of two builds differs in those bytes only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::gpt::guid_from_label;
use crate::layout::TalosVersion;
use crate::tools::{self, MKFS_XFS};
use crate::{Error, Result};

/// The mkfs.xfs LTS configuration a Talos version uses (the Go `XFSMkfsConfig` quirk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LtsConfig {
    /// The conf file name upstream (`lts_6.12.conf`).
    pub name: &'static str,
    /// `(mkfs option, feature, value)` as in the conf file.
    pub features: &'static [(char, &'static str, u8)],
}

const LTS_6_1: LtsConfig = LtsConfig {
    name: "lts_6.1.conf",
    features: &[
        ('m', "bigtime", 1),
        ('m', "crc", 1),
        ('m', "finobt", 1),
        ('m', "inobtcount", 1),
        ('m', "reflink", 1),
        ('m', "rmapbt", 0),
        ('i', "sparse", 1),
        ('i', "nrext64", 0),
        ('i', "exchange", 0),
    ],
};

/// 6.6 and 6.12: the same on-disk features (xfsprogs added none in 2024).
const LTS_6_6_FEATURES: &[(char, &str, u8)] = &[
    ('m', "bigtime", 1),
    ('m', "crc", 1),
    ('m', "finobt", 1),
    ('m', "inobtcount", 1),
    ('m', "metadir", 0),
    ('m', "reflink", 1),
    ('m', "rmapbt", 1),
    ('i', "sparse", 1),
    ('i', "nrext64", 1),
    ('i', "exchange", 0),
    ('n', "parent", 0),
];

const LTS_6_18: LtsConfig = LtsConfig {
    name: "lts_6.18.conf",
    features: &[
        ('m', "bigtime", 1),
        ('m', "crc", 1),
        ('m', "finobt", 1),
        ('m', "inobtcount", 1),
        ('m', "metadir", 0),
        ('m', "reflink", 1),
        ('m', "rmapbt", 1),
        ('i', "sparse", 1),
        ('i', "nrext64", 1),
        ('i', "exchange", 1),
        ('n', "parent", 1),
    ],
};

impl LtsConfig {
    /// The configuration of `version` (unparseable: the latest).
    pub fn for_version(version: TalosVersion) -> LtsConfig {
        if version.at_least(1, 13) {
            LTS_6_18
        } else if version.at_least(1, 10) {
            LtsConfig {
                name: "lts_6.12.conf",
                features: LTS_6_6_FEATURES,
            }
        } else if version.at_least(1, 8) {
            LtsConfig {
                name: "lts_6.6.conf",
                features: LTS_6_6_FEATURES,
            }
        } else {
            LTS_6_1
        }
    }
}

/// A file or directory of the BOOT tree.
#[derive(Debug, Default)]
struct ProtoDir {
    mode: u32,
    dirs: BTreeMap<String, ProtoDir>,
    /// name → (source path relative to the staging directory, mode)
    files: BTreeMap<String, (String, u32)>,
}

/// The content of an XFS file system to make: files at `/`-separated paths with their source
/// (a file name inside the staging directory) and permission bits; directories are created as
/// needed with the modes given by [`Tree::dir`] (default 0755).
#[derive(Debug)]
pub struct Tree {
    root: ProtoDir,
}

impl Default for Tree {
    fn default() -> Self {
        Self {
            root: ProtoDir {
                mode: 0o755,
                ..ProtoDir::default()
            },
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '$') || name == "." || name == ".." {
        return Err(Error::Partition {
            name: "BOOT".into(),
            reason: format!("{name:?} cannot be named in an mkfs.xfs protofile"),
        });
    }
    Ok(())
}

impl Tree {
    fn dir_mut(&mut self, path: &str) -> Result<&mut ProtoDir> {
        let mut d = &mut self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            check_name(part)?;
            d = d.dirs.entry(part.to_owned()).or_insert_with(|| ProtoDir {
                mode: 0o755,
                ..ProtoDir::default()
            });
        }
        Ok(d)
    }

    /// A directory with `mode` (created if needed).
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self> {
        self.dir_mut(path)?.mode = mode;
        Ok(self)
    }

    /// A file at `path` from `source` (a name inside the staging directory) with `mode`.
    pub fn file(&mut self, path: &str, source: &str, mode: u32) -> Result<&mut Self> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        check_name(name)?;
        check_name(source)?;
        self.dir_mut(parent)?
            .files
            .insert(name.to_owned(), (source.to_owned(), mode));
        Ok(self)
    }

    /// The mkfs.xfs(8) protofile: boot image line `/`, block/inode counts `0 0`, then the root
    /// and every entry as `name type+suid+sgid+perm uid gid [source]`, uid/gid 0; per directory
    /// files first, then subdirectories, each in name order; one space of indentation per depth;
    /// `$` (indented one less) closes a directory.
    pub fn protofile(&self) -> String {
        fn dir(out: &mut String, d: &ProtoDir, depth: usize) {
            let pad = " ".repeat(depth + 1);
            for (name, (src, mode)) in &d.files {
                let _ = writeln!(out, "{pad}{name} ---{mode:03o} 0 0 {src}");
            }
            for (name, sub) in &d.dirs {
                let _ = writeln!(out, "{pad}{name} d--{:03o} 0 0", sub.mode);
                dir(out, sub, depth + 1);
            }
            let _ = writeln!(out, "{}$", " ".repeat(depth));
        }
        let mut out = format!("/\n0 0\nd--{:03o} 0 0\n", self.root.mode);
        dir(&mut out, &self.root, 0);
        out
    }
}

/// An XFS file system made by [`make`].
#[derive(Debug, Clone)]
pub struct BootFs {
    /// The partition-sized sparse file holding it.
    pub path: PathBuf,
    /// The LTS configuration it follows.
    pub config: LtsConfig,
    /// Features of the configuration set to 1 that the installed `mkfs.xfs` does not support
    /// (left out, see the module documentation).
    pub dropped_features: Vec<&'static str>,
}

/// What to make.
#[derive(Debug, Clone)]
pub struct XfsOptions {
    /// File system size in bytes (the partition size).
    pub size: u64,
    /// Sector size: `-s size=4096` for 4096 (512 is the default).
    pub sector_size: u32,
    /// Label (≤ 12 characters), `BOOT`.
    pub label: String,
    /// The file system UUID (`-m uuid=`), `GUIDFromLabel(label)` for BOOT.
    pub uuid: String,
    /// The Talos version (picks the [`LtsConfig`]).
    pub version: TalosVersion,
}

impl XfsOptions {
    /// The BOOT partition of `version`: label `BOOT`, UUID `GUIDFromLabel("BOOT")`.
    pub fn boot(size: u64, sector_size: u32, version: TalosVersion) -> Self {
        Self {
            size,
            sector_size,
            label: "BOOT".into(),
            uuid: guid_from_label("BOOT").to_string(),
            version,
        }
    }
}

/// The `mkfs.xfs` usage text (its option names), read once per process.
fn mkfs_usage() -> Result<&'static str> {
    static USAGE: OnceLock<String> = OnceLock::new();
    if let Some(u) = USAGE.get() {
        return Ok(u);
    }
    let program = tools::find(MKFS_XFS)?;
    // without a device, mkfs.xfs prints its usage (to stderr) and fails: that is the point
    let out = Command::new(program).output().map_err(|e| Error::ToolFailed {
        program: MKFS_XFS.program,
        message: e.to_string(),
    })?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    Ok(USAGE.get_or_init(|| text))
}

/// The `-m`/`-i`/`-n` arguments of `config` that the installed `mkfs.xfs` supports, and the
/// features set to 1 it does not.
fn feature_args(config: &LtsConfig, usage: &str) -> (Vec<String>, Vec<&'static str>) {
    let mut groups: BTreeMap<char, Vec<String>> = BTreeMap::new();
    let mut dropped = Vec::new();
    for (opt, name, value) in config.features {
        if usage.contains(&format!("{name}=")) {
            groups.entry(*opt).or_default().push(format!("{name}={value}"));
        } else if *value == 1 {
            dropped.push(*name);
        }
    }
    let mut args = Vec::new();
    for (opt, list) in groups {
        args.push(format!("-{opt}"));
        args.push(list.join(","));
    }
    (args, dropped)
}

/// Makes the XFS file system of `tree` (sources relative to `staging`) into the new sparse file
/// `out` of `opts.size` bytes.
pub fn make(opts: &XfsOptions, tree: &Tree, staging: &Path, out: &Path) -> Result<BootFs> {
    if opts.sector_size != 512 && opts.sector_size != 4096 {
        return Err(Error::SectorSize(opts.sector_size));
    }
    let config = LtsConfig::for_version(opts.version);
    let (features, dropped_features) = feature_args(&config, mkfs_usage()?);
    let proto = staging.join("xfs-protofile");
    std::fs::write(&proto, tree.protofile())?;
    {
        let f = File::create(out)?;
        f.set_len(opts.size)?;
    }
    let mut cmd = Command::new(tools::find(MKFS_XFS)?);
    cmd.current_dir(staging)
        .args(["-q", "-n", "ftype=1"])
        .args(&features)
        .args(["-f", "-L", &opts.label]);
    if opts.sector_size == 4096 {
        cmd.args(["-s", "size=4096"]);
    }
    cmd.arg("-p")
        .arg("xfs-protofile")
        .arg("-m")
        .arg(format!("uuid={}", opts.uuid))
        .arg(out);
    tools::run_command(MKFS_XFS, cmd)?;
    std::fs::remove_file(&proto)?;
    Ok(BootFs {
        path: out.to_owned(),
        config,
        dropped_features,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protofile_format() -> Result<()> {
        let mut t = Tree::default();
        t.file("A/vmlinuz", "vmlinuz", 0o644)?
            .file("A/initramfs.xz", "initramfs.xz", 0o644)?
            .dir("grub", 0o700)?
            .file("grub/grub.cfg", "grub.cfg", 0o600)?;
        assert_eq!(
            t.protofile(),
            "/\n0 0\nd--755 0 0\n A d--755 0 0\n  initramfs.xz ---644 0 0 initramfs.xz\n  \
             vmlinuz ---644 0 0 vmlinuz\n $\n grub d--700 0 0\n  grub.cfg ---600 0 0 grub.cfg\n $\n$\n"
        );
        assert!(t.file("A/with space", "x", 0o644).is_err());
        Ok(())
    }

    #[test]
    fn lts_config_by_version() {
        let name = |v: &str| LtsConfig::for_version(TalosVersion::parse(v)).name;
        assert_eq!(name("v1.7.6"), "lts_6.1.conf");
        assert_eq!(name("v1.8.0"), "lts_6.6.conf");
        assert_eq!(name("v1.9.5"), "lts_6.6.conf");
        assert_eq!(name("v1.10.0"), "lts_6.12.conf");
        assert_eq!(name("v1.12.1"), "lts_6.12.conf");
        assert_eq!(name("v1.13.0-alpha.1"), "lts_6.18.conf");
        assert_eq!(name("latest"), "lts_6.18.conf");
    }

    #[test]
    fn unsupported_features_are_left_out() {
        let usage = "-m crc=0|1,finobt=0|1,uuid=xxx,rmapbt=0|1,reflink=0|1,inobtcount=0|1,bigtime=0|1 \
                     -i perblock=n|size=num,sparse=0|1,nrext64=0|1";
        let (args, dropped) = feature_args(&LTS_6_18, usage);
        assert_eq!(
            args,
            [
                "-i",
                "sparse=1,nrext64=1",
                "-m",
                "bigtime=1,crc=1,finobt=1,inobtcount=1,reflink=1,rmapbt=1"
            ]
        );
        assert_eq!(dropped, ["exchange", "parent"]);
        let (_, dropped) = feature_args(&LTS_6_1, usage);
        assert!(dropped.is_empty());
    }
}
