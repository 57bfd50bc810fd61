//! Times our initramfs build against the imager's tool pipeline on the same three extensions.
//!
//! ```sh
//! cargo run --release -p factory-initramfs --example bench -- [--mb 48] [--keep DIR]
//! ```
//!
//! The extensions are made from files of this machine (ELF binaries and libraries are realistic
//! stand-ins for extension tools and firmware): `tools` (`/usr/local/bin`, two thirds of `--mb`
//! MiB), `firmware` (`/usr/lib/firmware`, the other third) and `intel-ucode` (2 MiB of
//! microcode); the release initramfs is 8 MiB of noise. Ours is [`factory_initramfs::build`] on
//! all cores; the tools are what the imager runs (talos-imager §4.4, §5.2): per extension
//! `mksquashfs <rootfs> <n>.sqsh -all-root -noappend -no-progress -comp zstd -Xcompression-level
//! 18`, then `cpio -H newc --create --reproducible -R +0:+0` of the staging directory piped
//! through `zstd -T0 -18`, plus the raw microcode cpio; the staging layout is prepared before
//! the clock starts. Without a subcommand: one run of each, printing both wall and CPU times,
//! the ratio and the sizes.
//!
//! For repeated runs measured from outside (`scripts/bench-initramfs`: wall time and peak RSS
//! of each side as a process of its own, with GNU `time`):
//!
//! * `bench prepare --dir DIR [--mb 48]`: the inputs into `DIR`, and `DIR/tools.sh OUT`, the
//!   tool pipeline writing `OUT`;
//! * `bench ours --dir DIR --out OUT`: our build of the prepared inputs into `OUT`.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use factory_core::version::TalosVersion;
use factory_initramfs::{build, Base, ExtensionSource, Options, Request, Summary};

/// The imager's tool pipeline over what [`prepare`] lays out next to it; `$1` is the output.
const TOOLS_SH: &str = r#"#!/bin/sh
# The Talos imager's tool pipeline (talos-imager 4.4, 5.2) on the staging tree prepared by
# `bench prepare`: one squashfs per extension, the raw early-microcode cpio, the release
# initramfs, the zstd cpio of layers, firmware and extensions.yaml. Writes $1.
set -eu
out=$(realpath "$1")
cd "$(dirname "$0")"
for i in 0 1 2; do
    mksquashfs "rootfs/$i" "staging/$i.sqsh" -all-root -noappend -no-progress -quiet         -comp zstd -Xcompression-level 18
done
cd staging
find kernel | LC_ALL=C sort | cpio -H newc --create --reproducible --quiet -R +0:+0 >"$out"
cat ../initramfs.xz >>"$out"
find . -mindepth 1 -not -path './kernel*' -printf '%P
' | LC_ALL=C sort |
    cpio -H newc --create --reproducible --quiet -R +0:+0 | zstd -T0 -18 -c --quiet >>"$out"
"#;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let command = match args.first().map(String::as_str) {
        Some("prepare" | "ours") => Some(args.remove(0)),
        _ => None,
    };
    let mut mb: u64 = 48;
    let mut keep: Option<PathBuf> = None;
    let mut dir: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--mb" => mb = args.next().and_then(|v| v.parse().ok()).expect("--mb N"),
            "--keep" => keep = args.next().map(PathBuf::from),
            "--dir" => dir = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from),
            other => panic!("unknown argument {other}"),
        }
    }
    match command.as_deref() {
        Some("prepare") => {
            let dir = dir.expect("prepare --dir DIR");
            fs::create_dir_all(&dir).unwrap();
            prepare(&dir, mb);
        }
        Some("ours") => {
            let summary = ours(&dir.expect("ours --dir DIR"), &out.expect("ours --out FILE"));
            println!("{}", describe(&summary));
        }
        _ => compare_once(mb, keep),
    }
}

/// One run of each side in this process, timed with the clock and `/proc/self/stat`.
fn compare_once(mb: u64, keep: Option<PathBuf>) {
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    prepare(root, mb);

    let ours_path = root.join("ours.xz");
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let summary = ours(root, &ours_path);
    let ours_time = start.elapsed();
    let ours_cpu = cpu_seconds().0 - cpu_start.0;

    let tools_path = root.join("tools.xz");
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    run(Command::new("sh").arg(root.join("tools.sh")).arg(&tools_path));
    let tools_time = start.elapsed();
    let tools_cpu = cpu_seconds().1 - cpu_start.1;

    let size = |p: &Path| fs::metadata(p).unwrap().len() as f64 / 1048576.0;
    println!(
        "ours:  {:>7.2} s wall {:>7.2} s cpu  {:>7.2} MiB  ({})",
        ours_time.as_secs_f64(),
        ours_cpu,
        size(&ours_path),
        describe(&summary)
    );
    println!(
        "tools: {:>7.2} s wall {:>7.2} s cpu  {:>7.2} MiB",
        tools_time.as_secs_f64(),
        tools_cpu,
        size(&tools_path)
    );
    println!(
        "ratio: {:.2} wall, {:.2} cpu (ours / tools); load average before: {}",
        ours_time.as_secs_f64() / tools_time.as_secs_f64(),
        ours_cpu / tools_cpu,
        load_before.trim()
    );
    if let Some(keep) = keep {
        fs::create_dir_all(&keep).unwrap();
        fs::copy(&ours_path, keep.join("ours.xz")).unwrap();
        fs::copy(&tools_path, keep.join("tools.xz")).unwrap();
        println!("kept in {}", keep.display());
    }
}

/// The inputs in `root`: `ext/{tools,firmware,intel-ucode}` (extension directories with
/// `manifest.yaml` and `rootfs/`), `initramfs.xz`, and for the tools `rootfs/<n>` and `staging/`
/// (the imager's layout, prepared beforehand) with `tools.sh`.
fn prepare(root: &Path, mb: u64) {
    let sources = collect_files(&["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib"], mb << 20);
    let (tools_files, firmware_files) = sources.split_at(sources.len() * 2 / 3);
    let [tools, firmware, ucode] = extension_dirs(root);
    make_extension(&tools, "usr/local/bin", tools_files);
    make_extension(&firmware, "usr/lib/firmware/vendor", firmware_files);
    fs::create_dir_all(ucode.join("rootfs/usr/lib/firmware/intel-ucode")).unwrap();
    write_manifest(&ucode);
    for (i, chunk) in pseudo_random(2 << 20, 7).chunks(1 << 20).enumerate() {
        fs::write(
            ucode.join(format!("rootfs/usr/lib/firmware/intel-ucode/06-0{i}-01")),
            chunk,
        )
        .unwrap();
    }
    fs::write(root.join("initramfs.xz"), pseudo_random(8 << 20, 1)).unwrap();
    prepare_staging(
        &[&tools, &firmware, &ucode],
        &root.join("staging"),
        &root.join("rootfs"),
    );
    fs::write(root.join("tools.sh"), TOOLS_SH).unwrap();
    println!(
        "inputs: 3 extensions, {} files, {:.1} MiB, base initramfs 8.0 MiB; {} cores",
        sources.len() + 2,
        dir_bytes(&root.join("ext")) as f64 / 1048576.0,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
}

/// The three extension directories under `root`.
fn extension_dirs(root: &Path) -> [PathBuf; 3] {
    ["tools", "firmware", "intel-ucode"].map(|name| root.join("ext").join(name))
}

/// Our build of the prepared inputs in `root` into `out` (scratch files under `root`).
fn ours(root: &Path, out: &Path) -> Summary {
    let request = Request {
        version: TalosVersion::parse("v1.12.1").unwrap(),
        extensions: extension_dirs(root).iter().map(ExtensionSource::new).collect(),
        schematic: None,
    };
    let file = fs::File::create(out).unwrap();
    let mut writer = std::io::BufWriter::new(file);
    let summary = build(
        &Base::Path(root.join("initramfs.xz")),
        &request,
        &Options {
            scratch_dir: root.to_owned(),
            ..Options::default()
        },
        &mut writer,
    )
    .unwrap();
    writer.flush().unwrap();
    summary
}

fn describe(summary: &Summary) -> String {
    format!(
        "layers: {}",
        summary
            .layers
            .iter()
            .map(|l| format!("{} {:.2} MiB", l.image, l.squashfs_bytes as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Regular files under `dirs` (sorted, deterministic) up to `budget` bytes, each below 8 MiB.
fn collect_files(dirs: &[&str], budget: u64) -> Vec<PathBuf> {
    let mut all = Vec::new();
    for dir in dirs {
        let Ok(entries) = fs::read_dir(dir) else { continue };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        all.extend(entries);
    }
    let mut picked = Vec::new();
    let mut total = 0;
    for path in all {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 8 << 20 || meta.len() == 0 {
            continue;
        }
        if total + meta.len() > budget {
            break;
        }
        total += meta.len();
        picked.push(path);
    }
    picked
}

fn write_manifest(dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy();
    fs::write(
        dir.join("manifest.yaml"),
        format!(
            "version: v1alpha1\nmetadata:\n  name: {name}\n  version: 1.0.0\n  author: bench\n  \
             description: bench\n  compatibility:\n    talos:\n      version: \">= v1.0.0\"\n"
        ),
    )
    .unwrap();
}

fn make_extension(dir: &Path, into: &str, files: &[PathBuf]) {
    let target = dir.join("rootfs").join(into);
    fs::create_dir_all(&target).unwrap();
    write_manifest(dir);
    for file in files {
        fs::copy(file, target.join(file.file_name().unwrap())).unwrap();
    }
}

/// The imager's staging: firmware and microcode moved out, one rootfs per extension.
fn prepare_staging(extensions: &[&Path], staging: &Path, rootfs: &Path) {
    fs::create_dir_all(staging.join("kernel/x86/microcode")).unwrap();
    fs::create_dir_all(rootfs).unwrap();
    for (i, ext) in extensions.iter().enumerate() {
        let dest = rootfs.join(i.to_string());
        run(Command::new("cp").arg("-a").arg(ext.join("rootfs")).arg(&dest));
        let ucode = dest.join("usr/lib/firmware/intel-ucode");
        if ucode.exists() {
            let mut blob = Vec::new();
            let mut names: Vec<PathBuf> = fs::read_dir(&ucode).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            for name in names {
                blob.extend(fs::read(&name).unwrap());
                fs::remove_file(name).unwrap();
            }
            fs::write(staging.join("kernel/x86/microcode/GenuineIntel.bin"), blob).unwrap();
        }
        let fw = dest.join("usr/lib/firmware");
        if fw.exists() {
            fs::create_dir_all(staging.join("usr/lib")).unwrap();
            run(Command::new("cp")
                .arg("-a")
                .arg(&fw)
                .arg(staging.join("usr/lib/")));
            fs::remove_dir_all(&fw).unwrap();
        }
    }
    fs::write(staging.join("extensions.yaml"), "layers: []\n").unwrap();
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?}: {status}");
}

fn dir_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_bytes(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}

/// (this process's user+system CPU seconds, its waited-for children's), from `/proc/self/stat`.
fn cpu_seconds() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 of the whole line.
    let rest = stat.rsplit_once(')').map_or("", |r| r.1);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0; // USER_HZ on Linux
    let get = |i: usize| fields.get(i).copied().unwrap_or(0.0) / tick;
    (get(11) + get(12), get(13) + get(14))
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
