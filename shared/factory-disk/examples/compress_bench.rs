//! Writes a sparse raw file in a disk format and compression, and prints the elapsed time:
//!
//! ```text
//! cargo run --release -p factory-disk --example compress_bench -- \
//!     <sparse raw file> <raw|qcow2|vhd|ova> <none|xz|gz|zst|tar.gz> <out>
//! ```
//!
//! The image is built from the file's data regions only (`SEEK_DATA`/`SEEK_HOLE`), as the
//! pipeline does for partition images, so holes cost nothing. Compare with the CLI tools on the
//! same file, e.g. `time zstd -T0 -18 -o x.zst <file>`.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use factory_disk::format::{write_image, Compression, Container};
use factory_disk::SparseImage;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, container, compression, out] = args.as_slice() else {
        eprintln!(
            "usage: compress_bench <sparse raw file> <raw|qcow2|vhd|ova> <none|xz|gz|zst|tar.gz> <out>"
        );
        return ExitCode::from(2);
    };
    let Some(container) = Container::from_disk_format(container) else {
        eprintln!("unknown container {container:?}");
        return ExitCode::from(2);
    };
    let Some(compression) = Compression::from_suffix(compression) else {
        eprintln!("unknown compression {compression:?}");
        return ExitCode::from(2);
    };
    match run(Path::new(input), container, compression, Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(input: &Path, container: Container, compression: Compression, out: &Path) -> factory_disk::Result<()> {
    let size = std::fs::metadata(input)?.len();
    let mut img = SparseImage::new(size);
    let data = img.add_sparse_file(0, size, input, 0)?;
    let scratch = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::env::current_dir()?,
    };
    let start = Instant::now();
    let mut w = BufWriter::with_capacity(1 << 20, File::create(out)?);
    let written = write_image(&img, container, compression, &scratch, &mut w)?;
    drop(w);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}: image {size} bytes ({data} data) → {written} bytes in {secs:.2} s",
        out.display()
    );
    Ok(())
}
