//! Looking inside served assets with the independent tools the Talos imager itself relies on
//! (GNU `cpio`, `zstd`, `unsquashfs`) and binutils (`objdump`, `objcopy`) for PE images, so that
//! what the factory writes is checked by code it does not share.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `cmd` with `stdin`, returning its stdout; panics with its stderr when it fails.
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (see scripts/install-test-deps)"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    // Fed from a thread: a tool that writes before reading everything would block otherwise.
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait for the tool");
    feeder.join().expect("stdin feeder");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The leading uncompressed newc archive of `bytes` (up to its `TRAILER!!!` record, padded to 4
/// bytes) and the rest.
pub fn split_leading_cpio(bytes: &[u8]) -> (&[u8], &[u8]) {
    assert!(bytes.starts_with(b"070701"), "no leading newc archive");
    let at = bytes
        .windows(11)
        .position(|w| w == b"TRAILER!!!\0")
        .expect("a trailer ends the leading archive");
    bytes.split_at((at + 11).div_ceil(4) * 4)
}

/// `cpio -t` of an archive: its member paths (GNU cpio stops at the first trailer).
pub fn cpio_list(archive: &[u8]) -> Vec<String> {
    lines(&run(Command::new("cpio").args(["-t", "--quiet"]), archive))
}

/// Unpacks an archive into `dir` with `cpio -i`.
pub fn cpio_extract(archive: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).expect("create the extraction directory");
    run(
        Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir),
        archive,
    );
}

/// `zstd -t`: the stream's frames and checksums are intact.
pub fn zstd_test(stream: &[u8]) {
    run(Command::new("zstd").args(["-t", "-q"]), stream);
}

/// `zstd -dc`.
pub fn zstd_decompress(stream: &[u8]) -> Vec<u8> {
    run(Command::new("zstd").args(["-d", "-c", "-q"]), stream)
}

/// `unsquashfs -l`: the image's paths without the `squashfs-root` prefix.
pub fn unsquashfs_list(image: &Path) -> Vec<String> {
    lines(&run(Command::new("unsquashfs").arg("-l").arg(image), b""))
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("squashfs-root")
                .map(|p| p.trim_start_matches('/').to_owned())
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The section names of a PE image in table order, as `objdump -h` prints them.
pub fn pe_sections(image: &Path) -> Vec<String> {
    lines(&run(Command::new("objdump").arg("-h").arg(image), b""))
        .iter()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let index = fields.next()?;
            index.parse::<u32>().ok()?;
            fields.next().map(str::to_owned)
        })
        .collect()
}

/// The contents of section `name` of a PE image, as `objcopy -O binary --only-section` writes
/// them (a section's virtual size, not its file-aligned raw size).
pub fn pe_section(image: &Path, name: &str) -> Vec<u8> {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let out = scratch.path().join("section");
    run(
        Command::new("objcopy")
            .args(["-O", "binary", "--only-section", name])
            .arg(image)
            .arg(&out),
        b"",
    );
    std::fs::read(&out).expect("the extracted section")
}
