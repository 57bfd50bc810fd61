//! Every container × compression written from sparse images and checked with the independent
//! tools (qemu-img, tar, xz, zstd, gzip). A missing tool fails the test, naming its Debian
//! package.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use factory_disk::format::{write_image, write_image_with, Compression, Container, WriteOptions};
use factory_disk::{Extent, Source, SparseImage};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;

/// Fails (not skips) when `program` is missing.
fn require(program: &str, package: &str) {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => panic!("{program} is required by this test ({e}): install the Debian package {package}"),
    }
}

fn require_all() {
    require("qemu-img", "qemu-utils");
    require("xz", "xz-utils");
    require("zstd", "zstd");
    require("gzip", "gzip");
    require("tar", "tar");
}

/// Runs a command, panicking with its output if it fails; returns stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// SHA-256 of a command's stdout, streamed (never stored).
fn stream_sha(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut h = Sha256::new();
    let mut out = child.stdout.take().expect("stdout");
    io::copy(&mut out, &mut h).expect("read stdout");
    assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
    hex(&h.finalize())
}

/// Compares a command's stdout with `file` (`cmp`), streamed.
fn stream_cmp(cmd: &mut Command, file: &Path) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let out = Command::new("cmp")
        .arg("-")
        .arg(file)
        .stdin(stdout)
        .output()
        .expect("cmp");
    assert!(child.wait().expect("wait").success(), "{cmd:?} failed");
    assert!(
        out.status.success(),
        "{cmd:?} differs from {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Runs a command with stdout into `to`.
fn run_to(cmd: &mut Command, to: &Path) {
    let f = File::create(to).expect("create");
    let st = cmd.stdout(f).status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(st.success(), "{cmd:?} failed");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn file_sha(p: &Path) -> String {
    let mut h = Sha256::new();
    io::copy(&mut File::open(p).expect("open"), &mut h).expect("read");
    hex(&h.finalize())
}

/// Deterministic mixed content: text-like runs and xorshift noise, so compressors work.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % 3 == 0 {
            v.extend_from_slice(format!("line {} of the talos factory test pattern\n", x % 1000).as_bytes());
        } else {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// An image with extents at unaligned offsets: in-memory bytes, file ranges (one with a zero
/// MiB inside, which the cluster formats must leave unallocated), a zeros extent, data at the
/// very end. `size` is a multiple of 512 but not of the qcow2 cluster or vmdk grain.
fn build(dir: &Path, size: u64, places: &[(u64, usize)]) -> SparseImage {
    let src = dir.join("src.bin");
    let mut content = pattern(3 * MIB as usize, 7);
    content[MIB as usize..2 * MIB as usize].fill(0);
    content.extend(pattern(3 * MIB as usize, 11));
    std::fs::write(&src, &content).expect("write source");
    let mut img = SparseImage::new(size);
    img.add_bytes(1000, pattern(17_000, 3)).expect("bytes");
    for (i, &(off, len)) in places.iter().enumerate() {
        img.add_file(off, len as u64, &src, 777 * i as u64)
            .expect("file extent");
    }
    img.add(Extent {
        offset: 40_000,
        len: 2 * MIB,
        source: Source::Zeros,
    })
    .expect("zeros");
    img.add(Extent {
        offset: size - 4097,
        len: 4097,
        source: Source::Bytes(Arc::from(pattern(4097, 5))),
    })
    .expect("tail");
    img
}

/// The raw image as a sparse file (for `qemu-img compare`) and its SHA-256 from an
/// independent model when it fits in memory.
fn reference(img: &SparseImage, dir: &Path) -> PathBuf {
    let raw = dir.join("ref.raw");
    img.write_sparse_file(&mut File::create(&raw).expect("create"))
        .expect("sparse file");
    raw
}

fn expected_model(img: &SparseImage) -> Vec<u8> {
    let mut v = vec![0u8; img.size() as usize];
    for e in img.extents() {
        let dst = &mut v[e.offset as usize..(e.offset + e.len) as usize];
        match &e.source {
            Source::Zeros => {}
            Source::Bytes(b) => dst.copy_from_slice(b),
            Source::File { path, offset } => {
                let mut f = File::open(path).expect("open");
                io::Seek::seek(&mut f, io::SeekFrom::Start(*offset)).expect("seek");
                f.read_exact(dst).expect("read");
            }
        }
    }
    v
}

fn qemu_checks(file: &Path, fmt: &str, raw: &Path, size: u64) {
    if fmt != "vpc" {
        let out = run(Command::new("qemu-img").args(["check", "-f", fmt]).arg(file));
        assert!(
            out.contains("No errors were found"),
            "qemu-img check {fmt}: {out}"
        );
    }
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json", "-f", fmt])
        .arg(file));
    let want = format!("\"virtual-size\": {size},");
    assert!(info.contains(&want), "qemu-img info {fmt}: want {want} in {info}");
    let out = run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", fmt])
        .arg(raw)
        .arg(file));
    assert!(out.contains("Images are identical"), "{out}");
}

/// Writes one combination and checks it.
/// `sha`: the image's SHA-256; `None` for large images, whose decompressed streams are compared
/// with `cmp` against the sparse raw file instead (hashing GiBs of zeros takes longer than
/// writing them) and whose gzip streams are verified by decompressing once, not twice.
fn check(
    img: &SparseImage,
    raw: &Path,
    sha: Option<&str>,
    dir: &Path,
    container: Container,
    compression: Compression,
) {
    let what = format!("{container:?}/{compression:?}");
    let out = dir.join("out");
    let mut f = File::create(&out).expect("create out");
    let n = write_image(img, container, compression, dir, &mut f).unwrap_or_else(|e| panic!("{what}: {e}"));
    drop(f);
    assert_eq!(
        n,
        std::fs::metadata(&out).expect("meta").len(),
        "{what}: returned length"
    );

    // undo the compression: the raw container is hashed as a stream, others go to a file
    let decompress: Option<Command> = match compression {
        Compression::None => None,
        Compression::Xz => {
            run(Command::new("xz").arg("-t").arg(&out));
            let l = run(Command::new("xz").args(["-l", "--robot"]).arg(&out));
            assert!(l.contains("CRC64"), "{what}: xz check: {l}");
            let mut c = Command::new("xz");
            c.arg("-dc").arg(&out);
            Some(c)
        }
        Compression::Gz => {
            if sha.is_some() {
                run(Command::new("gzip").arg("-t").arg(&out));
            }
            let mut c = Command::new("gzip");
            c.arg("-dc").arg(&out);
            Some(c)
        }
        Compression::Zst => {
            run(Command::new("zstd").args(["-q", "-t"]).arg(&out));
            let mut c = Command::new("zstd");
            c.args(["-q", "-dc"]).arg(&out);
            Some(c)
        }
        Compression::TarGz => {
            if sha.is_some() {
                run(Command::new("gzip").arg("-t").arg(&out));
            }
            let list = run(Command::new("tar").args(["--numeric-owner", "-tvzf"]).arg(&out));
            let lines: Vec<&str> = list.lines().collect();
            assert_eq!(lines.len(), 1, "{what}: {list}");
            assert!(lines[0].starts_with("-rw-r--r-- 0/0"), "{what}: {list}");
            assert!(lines[0].ends_with(" 1970-01-01 00:00 disk.raw"), "{what}: {list}");
            let mut c = Command::new("tar");
            c.args(["-xzOf"]).arg(&out).arg("disk.raw");
            Some(c)
        }
    };
    let file = match (container, decompress) {
        (Container::Raw, Some(mut c)) => {
            match sha {
                Some(sha) => assert_eq!(stream_sha(&mut c), sha, "{what}: decompressed stream"),
                None => stream_cmp(&mut c, raw),
            }
            return;
        }
        (Container::Raw, None) => {
            match sha {
                Some(sha) => assert_eq!(file_sha(&out), sha, "{what}"),
                None => {
                    run(Command::new("cmp").arg(&out).arg(raw));
                }
            }
            return;
        }
        (_, Some(mut c)) => {
            let p = dir.join("container");
            run_to(&mut c, &p);
            p
        }
        (_, None) => out,
    };
    match container {
        Container::Raw => unreachable!(),
        Container::Qcow2 { .. } => qemu_checks(&file, "qcow2", raw, img.size()),
        Container::VhdFixed => {
            assert_eq!(std::fs::metadata(&file).expect("meta").len(), img.size() + 512);
            qemu_checks(&file, "vpc", raw, img.size());
        }
        Container::Ova => {
            let list = run(Command::new("tar").args(["--numeric-owner", "-tvf"]).arg(&file));
            let names: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().last()).collect();
            assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"], "{what}: {list}");
            assert!(
                list.lines().all(|l| l.starts_with("-rw-r--r-- 0/0")),
                "{what}: {list}"
            );
            let x = dir.join("ova");
            let _ = std::fs::remove_dir_all(&x);
            std::fs::create_dir(&x).expect("mkdir");
            run(Command::new("tar").arg("-xf").arg(&file).arg("-C").arg(&x));
            let mf = std::fs::read_to_string(x.join("disk.mf")).expect("mf");
            let want = format!(
                "SHA256(disk.vmdk)= {}\nSHA256(disk.ovf)= {}\n",
                file_sha(&x.join("disk.vmdk")),
                file_sha(&x.join("disk.ovf"))
            );
            assert_eq!(mf, want, "{what}: manifest");
            let ovf = std::fs::read_to_string(x.join("disk.ovf")).expect("ovf");
            let vmdk_len = std::fs::metadata(x.join("disk.vmdk")).expect("meta").len();
            assert!(
                ovf.contains(&format!("ovf:size=\"{vmdk_len}\"")),
                "{what}: ovf size"
            );
            assert!(ovf.contains(&format!("ovf:capacity=\"{}\"", img.size().div_ceil(MIB))));
            let info = run(Command::new("qemu-img")
                .args(["info", "-f", "vmdk"])
                .arg(x.join("disk.vmdk")));
            assert!(info.contains("create type: streamOptimized"), "{what}: {info}");
            qemu_checks(&x.join("disk.vmdk"), "vmdk", raw, img.size());
        }
    }
}

const CONTAINERS: [Container; 4] = [
    Container::Raw,
    Container::QCOW2_8K,
    Container::VhdFixed,
    Container::Ova,
];
const COMPRESSIONS: [Compression; 5] = [
    Compression::None,
    Compression::Xz,
    Compression::Gz,
    Compression::Zst,
    Compression::TarGz,
];

#[test]
fn every_format_and_compression_64mib() {
    require_all();
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 64 * MIB + 12 * 1024;
    let img = build(
        dir.path(),
        size,
        &[
            (3 * MIB + 123, 5 * MIB as usize + 77),
            (20 * MIB + 4097, 300_001),
            (63 * MIB + 5, 65_536),
        ],
    );
    let raw = reference(&img, dir.path());
    let sha = file_sha(&raw);
    // the model, independent of write_sparse_file
    assert_eq!(
        hex(&Sha256::digest(expected_model(&img))),
        sha,
        "reference raw file"
    );
    for c in CONTAINERS {
        for z in COMPRESSIONS {
            check(&img, &raw, Some(&sha), dir.path(), c, z);
        }
    }
}

#[test]
fn zero_clusters_are_not_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = build(
        dir.path(),
        64 * MIB + 12 * 1024,
        &[(3 * MIB + 123, 5 * MIB as usize + 77)],
    );
    let mut q = Vec::new();
    write_image(&img, Container::QCOW2_8K, Compression::None, dir.path(), &mut q).expect("qcow2");
    // data: 17 KB + 5 MiB of which a MiB is zeros + 4 KiB at the end → well under 5 MiB of
    // clusters plus a few metadata clusters
    assert!(
        (q.len() as u64) < 4 * MIB + 256 * 1024,
        "qcow2 of {} bytes",
        q.len()
    );
}

#[test]
fn output_is_deterministic_across_thread_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = build(
        dir.path(),
        64 * MIB + 12 * 1024,
        &[(3 * MIB + 123, 5 * MIB as usize + 77)],
    );
    for (c, z) in [
        (Container::Ova, Compression::None),
        (Container::Raw, Compression::Gz),
        (Container::VhdFixed, Compression::TarGz),
        (Container::QCOW2_8K, Compression::None),
    ] {
        let mut outs = Vec::new();
        for threads in [1, 2, 5] {
            let mut o = WriteOptions::new(c, z, dir.path());
            o.threads = threads;
            let mut v = Vec::new();
            write_image_with(&img, &o, &mut v).expect("write");
            outs.push(v);
        }
        assert!(
            outs[0] == outs[1] && outs[1] == outs[2],
            "{c:?}/{z:?} differs by thread count"
        );
    }
}

/// A few GiB of virtual size with a few MiB of data: the cluster formats and gzip must cost
/// O(data), and large offsets (L2 tables, grain tables past the first) must work.
#[test]
fn large_sparse_image() {
    require_all();
    require("cmp", "diffutils");
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 2 * 1024 * MIB + 5 * MIB + 12 * 1024;
    let img = build(
        dir.path(),
        size,
        &[
            (MIB * 1024 - 3, 2 * MIB as usize),
            (1536 * MIB + 12_345, 100_000),
            (size - 3 * MIB, 2 * MIB as usize),
        ],
    );
    let raw = reference(&img, dir.path());
    for (c, z) in [
        (Container::QCOW2_8K, Compression::None),
        (Container::QCOW2_8K, Compression::Zst),
        (Container::Ova, Compression::None),
        (Container::Raw, Compression::TarGz),
    ] {
        let start = std::time::Instant::now();
        check(&img, &raw, None, dir.path(), c, z);
        eprintln!(
            "{c:?}/{z:?}: {:.2} s including checks",
            start.elapsed().as_secs_f64()
        );
    }
    let start = std::time::Instant::now();
    let mut v = Vec::new();
    write_image(&img, Container::QCOW2_8K, Compression::None, dir.path(), &mut v).expect("qcow2");
    assert!(
        (v.len() as u64) < 8 * MIB,
        "qcow2 of a sparse 2 GiB image: {} bytes",
        v.len()
    );
    let mut g = Vec::new();
    write_image(&img, Container::Raw, Compression::Gz, dir.path(), &mut g).expect("gz");
    // 2 GiB of zeros at ~1 KiB per compressed MiB plus the data
    assert!(
        (g.len() as u64) < 12 * MIB,
        "gz of a sparse 2 GiB image: {} bytes",
        g.len()
    );
    eprintln!("qcow2 + gz writes: {:.2} s", start.elapsed().as_secs_f64());
}

/// Members of 8 GiB and more need GNU tar's base-256 size (the gcp `disk.raw` is 9 GiB):
/// GNU tar must list the right size. Only the header is decompressed.
#[test]
fn tar_gz_member_over_8_gib() {
    require("tar", "tar");
    require("gzip", "gzip");
    let dir = tempfile::tempdir().expect("tempdir");
    let size = 9 * 1024 * MIB;
    let mut img = SparseImage::new(size);
    img.add_bytes(size - 10, vec![1u8; 10]).expect("bytes");
    let out = dir.path().join("disk.tar.gz");
    let mut f = File::create(&out).expect("create");
    write_image(&img, Container::Raw, Compression::TarGz, dir.path(), &mut f).expect("tar.gz");
    drop(f);
    let mut gz = Command::new("gzip")
        .arg("-dc")
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut head = vec![0u8; 10240];
    gz.stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("read");
    let _ = gz.kill();
    let _ = gz.wait();
    let p = dir.path().join("head.tar");
    std::fs::write(&p, &head).expect("write");
    // the archive is truncated, so tar complains after listing the member: ignore its status
    let o = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&p)
        .output()
        .expect("tar");
    let list = String::from_utf8_lossy(&o.stdout);
    let size = size.to_string();
    let fields: Vec<&str> = list.split_whitespace().collect();
    assert_eq!(
        fields.get(..6),
        Some(
            &[
                "-rw-r--r--",
                "0/0",
                size.as_str(),
                "1970-01-01",
                "00:00",
                "disk.raw"
            ][..]
        ),
        "{list}"
    );
}

#[test]
fn vhd_footer_is_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut img = SparseImage::new(4 * MIB + 512);
    img.add_bytes(7, vec![1u8; 10]).expect("bytes");
    let mut v = Vec::new();
    write_image(&img, Container::VhdFixed, Compression::None, dir.path(), &mut v).expect("vhd");
    assert_eq!(v.len() as u64, 4 * MIB + 512 + 512);
    let f = &v[v.len() - 512..];
    assert_eq!(&f[..8], b"conectix");
    assert_eq!(&f[48..56], &(4 * MIB + 512).to_be_bytes());
    let sum = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .fold(0u32, |a, (_, &b)| a + u32::from(b));
    assert_eq!(u32::from_be_bytes([f[64], f[65], f[66], f[67]]), !sum);
    // the same image gives the same id; other data another
    let mut w = Vec::new();
    write_image(&img, Container::VhdFixed, Compression::None, dir.path(), &mut w).expect("vhd");
    assert!(v == w);
    img.add_bytes(100, vec![2u8; 1]).expect("bytes");
    let mut x = Vec::new();
    write_image(&img, Container::VhdFixed, Compression::None, dir.path(), &mut x).expect("vhd");
    assert_ne!(
        &x[x.len() - 512 + 68..x.len() - 512 + 84],
        &v[v.len() - 512 + 68..v.len() - 512 + 84]
    );
}
