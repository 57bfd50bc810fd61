//! Helpers of the tests that check UKIs with independent tools (binutils, sbsigntool, QEMU).
//!
//! The tools and the real systemd-stub (`apt-get install systemd-boot-efi binutils sbsigntool`,
//! see scripts/install-test-deps) are prerequisites: without one a test is skipped with a
//! message, unless FACTORY_REQUIRE_BOOT=1 (set by scripts/test), which makes it a failure.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the real stub is looked for: `$FACTORY_UKI_STUB`, Debian's systemd-boot-efi path,
/// then the copy scripts/fetch-boot-parts makes.
pub fn stub_path() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("FACTORY_UKI_STUB").map(PathBuf::from),
        Some(PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")),
        Some(workspace.join(".test-run/boot-parts/linuxx64.efi.stub")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

pub fn required() -> bool {
    std::env::var("FACTORY_REQUIRE_BOOT").is_ok_and(|v| v == "1")
}

/// Skips (returns `true`) when `missing` names a missing prerequisite, or panics when required.
pub fn skip(test: &str, missing: Option<String>) -> bool {
    match missing {
        None => false,
        Some(reason) => {
            assert!(
                !required(),
                "FACTORY_REQUIRE_BOOT=1 but {test} cannot run: {reason}"
            );
            eprintln!("SKIPPED {test}: {reason}");
            true
        }
    }
}

/// `Some(reason)` when `program` does not run (`program args…` must exit 0 or 1).
pub fn missing_tool(program: &str, args: &[&str], package: &str) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(o) if matches!(o.status.code(), Some(0 | 1)) => None,
        _ => Some(format!("{program} is not installed (apt-get install {package})")),
    }
}

pub fn run(program: &str, args: &[&std::ffi::OsStr]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A kernel stand-in: a bzImage-shaped header (`HdrS`, setup sectors, version string) padded
/// with a pattern to `len` bytes, so `.uname` discovery and byte comparisons have something
/// to bite on.
pub fn fake_bzimage(version: &str, len: usize) -> Vec<u8> {
    let mut image: Vec<u8> = (0..len).map(|i| (i * 7 % 253) as u8).collect();
    image[0x1f1] = 4;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
    let text = format!("{version} (builder@stand-in) #1 SMP\0");
    image[0x500..0x500 + text.len()].copy_from_slice(text.as_bytes());
    image
}

/// One line of `objdump -h`: name, size, VMA, file offset (the numbers are hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjdumpSection {
    pub name: String,
    pub size: u64,
    pub vma: u64,
    pub file_off: u64,
}

pub fn objdump_sections(file: &Path) -> Vec<ObjdumpSection> {
    let out = run("objdump", &["-h".as_ref(), file.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Idx Name Size VMA LMA File-off Algn
            if f.len() == 7 && f[0].parse::<u32>().is_ok() {
                let hex = |s: &str| u64::from_str_radix(s, 16).expect("hex");
                Some(ObjdumpSection {
                    name: f[1].to_owned(),
                    size: hex(f[2]),
                    vma: hex(f[3]),
                    file_off: hex(f[5]),
                })
            } else {
                None
            }
        })
        .collect()
}
