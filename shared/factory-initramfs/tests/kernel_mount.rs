//! The Linux kernel mounts the squashfs images our writer makes (zstd and xz), with every kind of
//! entry a layer holds: big files (data blocks), small ones (fragments), sparse blocks, empty
//! files, symlinks, many entries in one directory, and the SELinux label of the embedded
//! configuration. Needs root, loop devices and squashfs support; skipped (with a note) where
//! `mount` is refused.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use factory_initramfs::compress::BlockCodec;
use factory_initramfs::squashfs::{self, BLOCK_SIZE};
use factory_initramfs::tree::{Content, Node};

const LABEL: &[u8] = b"system_u:object_r:system_state_t:s0";

fn big() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

fn sparse() -> Vec<u8> {
    let mut data = vec![0u8; 3 * BLOCK_SIZE as usize];
    data[BLOCK_SIZE as usize + 7] = 1;
    data
}

fn sample() -> Node {
    let mut root = Node::dir(0o755);
    root.insert(
        "usr/local/bin/big",
        Node::file(0o755, Content::memory(big())),
        0o755,
    );
    root.insert(
        "usr/local/sparse",
        Node::file(0o644, Content::memory(sparse())),
        0o755,
    );
    root.insert(
        "usr/local/small",
        Node::file(0o600, Content::memory("small")),
        0o755,
    );
    root.insert("usr/local/empty", Node::file(0o644, Content::memory("")), 0o755);
    root.insert("usr/local/link", Node::symlink("bin/big"), 0o755);
    let mut config = Node::file(0o400, Content::memory("config"));
    config.xattrs.push(("security.selinux".into(), LABEL.to_vec()));
    root.insert("usr/local/etc/talos/config.yaml", config, 0o755);
    for i in 0..600 {
        root.insert(
            &format!("usr/local/many/f{i:04}"),
            Node::file(0o644, Content::memory(format!("file {i}\n"))),
            0o755,
        );
    }
    root
}

/// Unmounts when dropped, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount(image: &Path, at: &Path) -> Option<Mounted> {
    fs::create_dir_all(at).unwrap();
    let out = Command::new("mount")
        .args(["-t", "squashfs", "-o", "loop,ro"])
        .arg(image)
        .arg(at)
        .output()
        .ok()?;
    if out.status.success() {
        Some(Mounted(at.to_owned()))
    } else {
        eprintln!(
            "skipped: cannot mount squashfs here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        None
    }
}

/// `security.selinux` of `path`, read by python3 (std has no getxattr); `None` without python3.
fn selinux_label(path: &Path) -> Option<Vec<u8>> {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import os,sys; sys.stdout.buffer.write(os.getxattr(sys.argv[1], 'security.selinux'))")
        .arg(path)
        .output()
        .ok()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(out.stdout)
}

#[test]
fn the_kernel_mounts_our_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = sample();
    for (name, codec) in [
        ("zstd", BlockCodec::Zstd { level: 18 }),
        (
            "xz",
            BlockCodec::Xz {
                dict_size: BLOCK_SIZE,
            },
        ),
    ] {
        let mut image = Cursor::new(Vec::new());
        let options = squashfs::Options {
            codec,
            mtime: 1_559_424_892,
            threads: 2,
        };
        squashfs::write(&root, &mut image, &options).unwrap();
        let path = dir.path().join(format!("{name}.sqsh"));
        fs::write(&path, image.into_inner()).unwrap();

        let at = dir.path().join(format!("mnt-{name}"));
        let Some(_mounted) = mount(&path, &at) else {
            return;
        };
        let local = at.join("usr/local");
        assert_eq!(fs::read(local.join("bin/big")).unwrap(), big(), "{name}");
        assert_eq!(fs::read(local.join("sparse")).unwrap(), sparse(), "{name}");
        assert_eq!(fs::read(local.join("small")).unwrap(), b"small");
        assert_eq!(fs::read(local.join("empty")).unwrap(), b"");
        assert_eq!(fs::read_link(local.join("link")).unwrap(), Path::new("bin/big"));
        assert_eq!(fs::read(local.join("link")).unwrap(), big());
        let many = fs::read_dir(local.join("many")).unwrap().count();
        assert_eq!(many, 600);
        for i in [0, 255, 256, 599] {
            assert_eq!(
                fs::read(local.join(format!("many/f{i:04}"))).unwrap(),
                format!("file {i}\n").as_bytes()
            );
        }
        let config = local.join("etc/talos/config.yaml");
        let meta = fs::metadata(&config).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o400);
        assert_eq!(fs::read(&config).unwrap(), b"config");
        if let Some(label) = selinux_label(&config) {
            assert_eq!(label, LABEL, "{name}");
        }
        let small = fs::metadata(local.join("small")).unwrap();
        assert_eq!(small.permissions().mode() & 0o7777, 0o600);
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!((small.uid(), small.gid(), small.mtime()), (0, 0, 1_559_424_892));
    }
}
