//! Builds the metal amd64 disk image of a Talos version (dual-boot layout, 1246 MiB profile size
//! plus the boot partitions: 4.4 GB from 1.11) from local files and writes it in a format, timing
//! the whole build (assembly, mkfs.xfs, GRUB, streaming, compression), as the builder does:
//!
//! ```text
//! cargo run --release -p factory-disk --example disk_bench -- \
//!     <kernel> <initramfs> <systemd-boot.efi> <uki.efi> <version> <raw|qcow2|vhd|ova> \
//!     <none|xz|gz|zst|tar.gz|sparse> <out>
//! ```
//!
//! `sparse` writes the raw image as a sparse file (holes for zeros): the input of the reference
//! compressors in `scripts/bench-disk`, which compare `zstd -T0 -18` / `xz -0 -T0` over the very
//! bytes this build streams into its own compressor.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use factory_disk::assemble::{build_disk, DiskSpec};
use factory_disk::format::{write_image, Compression, Container};
use factory_disk::layout::MIN_RAW_DISK_SIZE;
use factory_disk::{BootFiles, Bootloader, TalosVersion};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel, initramfs, sd_boot, uki, version, container, compression, out] = args.as_slice() else {
        eprintln!(
            "usage: disk_bench <kernel> <initramfs> <systemd-boot.efi> <uki.efi> <version> \
             <raw|qcow2|vhd|ova> <none|xz|gz|zst|tar.gz|sparse> <out>"
        );
        return ExitCode::from(2);
    };
    let Some(container) = Container::from_disk_format(container) else {
        eprintln!("unknown container {container:?}");
        return ExitCode::from(2);
    };
    // `sparse`: the raw image as a sparse file (no compression, holes for zeros).
    let compression = match compression.as_str() {
        "sparse" => None,
        name => match Compression::from_suffix(name) {
            Some(c) => Some(c),
            None => {
                eprintln!("unknown compression {name:?}");
                return ExitCode::from(2);
            }
        },
    };
    let files = BootFiles {
        kernel: PathBuf::from(kernel),
        initramfs: PathBuf::from(initramfs),
        sd_boot: PathBuf::from(sd_boot),
        uki: Some(PathBuf::from(uki)),
    };
    match run(&files, version, container, compression, Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    files: &BootFiles,
    version: &str,
    container: Container,
    compression: Option<Compression>,
    out: &Path,
) -> factory_disk::Result<()> {
    let start = Instant::now();
    let scratch = tempfile::tempdir()?;
    let spec = DiskSpec {
        version: TalosVersion::parse(version),
        version_tag: version.to_owned(),
        arch: "amd64".to_owned(),
        bootloader: Bootloader::DualBoot,
        disk_size: MIN_RAW_DISK_SIZE,
        sector_size: 512,
        cmdline: "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on".to_owned(),
        meta: Vec::new(),
    };
    let img = build_disk(&spec, files, scratch.path())?;
    let assembled = start.elapsed().as_secs_f64();
    let written = match compression {
        None => {
            let mut file = File::create(out)?;
            img.write_sparse_file(&mut file)?;
            img.size()
        }
        Some(compression) => {
            let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
            write_image(&img, container, compression, scratch.path(), &mut w)?
        }
    };
    println!(
        "{}: image {} bytes → {written} bytes; assembled in {assembled:.2} s, total {:.2} s",
        out.display(),
        img.size(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
