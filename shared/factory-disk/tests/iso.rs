//! ISOs of every variant built from small synthetic inputs, read back with independent tools:
//! `xorriso -report_el_torito plain` (the El Torito catalog), `xorriso -pvd_info` (volume and
//! volume set id), `xorriso -find` (the ISO9660/Rock Ridge tree) and `-osirrox` extraction (file
//! contents, `grub.cfg`), `sfdisk -J` (the MBR/GPT partition table: where the appended ESP is),
//! mtools on that partition (`mdir`, `mtype`, `mcopy`, `mattrib` with `image@@offset`), and a
//! second build compared byte for byte (determinism).
//!
//! The tools are required: a missing one fails the test with the Debian package to install
//! (`xorriso grub-common grub-pc-bin grub-efi-amd64-bin mtools fdisk`).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use factory_disk::iso::{build_iso, grub_cfg, volume_id, IsoSpec, IsoVariant, LOADER_CONF};
use factory_disk::BootFiles;
use sha2::{Digest, Sha256};

const CMDLINE: &str = "talos.platform=metal console=ttyS0 talos.config=http://h/c?u=${uuid}&x=1";

/// Fails (never skips) when `program` is missing, naming the Debian package.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {program} || test -x /usr/sbin/{program} || test -x /sbin/{program}"
        ))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{program} is not installed: apt-get install {package}");
}

fn require_all() {
    require("xorriso", "xorriso");
    require("grub-mkrescue", "grub-common");
    for (dir, package) in [
        ("/usr/lib/grub/i386-pc", "grub-pc-bin"),
        ("/usr/lib/grub/x86_64-efi", "grub-efi-amd64-bin"),
    ] {
        assert!(
            Path::new(dir).is_dir(),
            "{dir} is missing: apt-get install {package}"
        );
    }
    for tool in ["mdir", "mtype", "mcopy", "mattrib", "mformat"] {
        require(tool, "mtools");
    }
    require("sfdisk", "fdisk");
}

/// Runs a command; its stdout (stderr appended), or a panic with both.
fn run(program: &str, args: &[&str]) -> String {
    let sbin = Path::new("/usr/sbin").join(program);
    let exe = if sbin.is_file() {
        sbin
    } else {
        PathBuf::from(program)
    };
    let out = Command::new(&exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Synthetic inputs: distinct pseudo-random bytes per file (sizes not multiples of 2 KiB).
struct Inputs {
    _dir: tempfile::TempDir,
    files: BootFiles,
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, seed: u64, len: usize| {
        let path = dir.path().join(name);
        let mut data = pseudo_random(seed, len);
        if name.ends_with(".efi") {
            data[..2].copy_from_slice(b"MZ");
        }
        std::fs::write(&path, data).unwrap();
        path
    };
    let files = BootFiles {
        kernel: write("vmlinuz", 1, 300_001),
        initramfs: write("initramfs.xz", 2, 200_003),
        sd_boot: write("systemd-boot.efi", 3, 70_005),
        uki: Some(write("uki.efi", 4, 1_500_007)),
    };
    Inputs { _dir: dir, files }
}

fn spec(variant: IsoVariant, version: &str) -> IsoSpec {
    IsoSpec {
        version: version.to_owned(),
        arch: "amd64".to_owned(),
        variant,
        cmdline: CMDLINE.to_owned(),
    }
}

/// The El Torito entries as (number, platform), e.g. `(1, "BIOS")`, `(2, "UEFI")`.
fn el_torito(iso: &Path) -> Vec<(u32, String)> {
    let report = run(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-report_el_torito", "plain"],
    );
    report
        .lines()
        .filter_map(|l| l.strip_prefix("El Torito boot img :"))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let n = words.next()?.parse().ok()?;
            Some((n, words.next()?.to_owned()))
        })
        .collect()
}

/// `Volume Id` and `Volume Set Id` of the PVD.
fn pvd(iso: &Path) -> (String, String) {
    let info = run("xorriso", &["-indev", iso.to_str().unwrap(), "-pvd_info"]);
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim_start_matches([' ', ':']).trim_end().to_owned())
            .unwrap_or_else(|| panic!("no {name} in\n{info}"))
    };
    (field("Volume Id"), field("Volume Set Id"))
}

/// Every file of the ISO tree (Rock Ridge names).
fn iso_files(iso: &Path) -> BTreeSet<String> {
    let out = run(
        "xorriso",
        &["-indev", iso.to_str().unwrap(), "-find", "/", "-type", "f", "--"],
    );
    out.lines()
        .map(|l| l.trim().trim_matches('\'').to_owned())
        .filter(|l| l.starts_with('/'))
        .collect()
}

/// Extracts `path` of the ISO into `dir`; its bytes.
fn iso_file(iso: &Path, path: &str, dir: &Path) -> Vec<u8> {
    let out = dir.join(path.trim_start_matches('/').replace('/', "_"));
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso.to_str().unwrap(),
            "-extract",
            path,
            out.to_str().unwrap(),
        ],
    );
    std::fs::read(&out).unwrap()
}

/// Byte offset of the ESP partition (MBR type `ef` or the GPT ESP type) per `sfdisk -J`.
fn esp_offset(iso: &Path) -> u64 {
    let json = run("sfdisk", &["-J", iso.to_str().unwrap()]);
    let table: serde_like::Table = serde_like::parse(&json);
    let esp = table
        .partitions
        .iter()
        .find(|p| {
            p.kind.eq_ignore_ascii_case("ef")
                || p.kind
                    .eq_ignore_ascii_case("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
        })
        .unwrap_or_else(|| panic!("no ESP partition in\n{json}"));
    esp.start * 512
}

/// A minimal reader of `sfdisk -J` output (the fields needed here), to stay off a JSON crate.
mod serde_like {
    #[derive(Debug)]
    pub struct Partition {
        pub start: u64,
        pub kind: String,
    }

    #[derive(Debug)]
    pub struct Table {
        pub label: String,
        pub partitions: Vec<Partition>,
    }

    fn field<'a>(obj: &'a str, name: &str) -> Option<&'a str> {
        let at = obj.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = obj[at..].trim_start();
        let end = if let Some(s) = rest.strip_prefix('"') {
            return s.split('"').next();
        } else {
            rest.find([',', '}']).unwrap_or(rest.len())
        };
        Some(rest[..end].trim())
    }

    pub fn parse(json: &str) -> Table {
        let label = field(json, "label").unwrap_or_default().to_owned();
        let parts = json.split_once("\"partitions\":").map_or("", |(_, p)| p);
        let partitions = parts
            .split('{')
            .skip(1)
            .filter_map(|obj| {
                Some(Partition {
                    start: field(obj, "start")?.parse().ok()?,
                    kind: field(obj, "type")?.to_owned(),
                })
            })
            .collect();
        Table { label, partitions }
    }
}

fn mtools(tool: &str, image: &str, args: &[&str]) -> String {
    let mut all = vec!["-i", image];
    all.extend_from_slice(args);
    run(tool, &all)
}

/// The appended ESP, read with mtools at its partition offset: the four files with the exact
/// contents, `random-seed` read-only.
fn check_esp(iso: &Path, files: &BootFiles, version: &str, dir: &Path) {
    let image = format!("{}@@{}", iso.display(), esp_offset(iso));
    let listing = mtools("mdir", &image, &["-/", "-b", "::"]);
    let listed: BTreeSet<&str> = listing.lines().map(str::trim).collect();
    let uki_path = format!("::/EFI/Linux/Talos-{version}.efi");
    for want in [
        "::/EFI/BOOT/BOOTX64.EFI",
        uki_path.as_str(),
        "::/loader/loader.conf",
        "::/loader/random-seed",
    ] {
        assert!(listed.contains(want), "{want} not on the ESP:\n{listing}");
    }
    assert_eq!(mtools("mtype", &image, &["::/loader/loader.conf"]), LOADER_CONF);
    let copy = |from: &str, name: &str| {
        let to = dir.join(name);
        mtools("mcopy", &image, &["-n", from, to.to_str().unwrap()]);
        std::fs::read(to).unwrap()
    };
    assert_eq!(copy("::/loader/random-seed", "seed"), [0u8; 32]);
    assert_eq!(
        copy(&uki_path, "uki"),
        std::fs::read(files.uki.as_ref().unwrap()).unwrap()
    );
    assert_eq!(
        copy("::/EFI/BOOT/BOOTX64.EFI", "sdboot"),
        std::fs::read(&files.sd_boot).unwrap()
    );
    let attributes = mtools("mattrib", &image, &["::/loader/random-seed"]);
    let flags = attributes.split("::").next().unwrap_or_default();
    assert!(
        flags.contains('R'),
        "random-seed is not read-only: {attributes:?}"
    );
    let conf_flags = mtools("mattrib", &image, &["::/loader/loader.conf"]);
    assert!(
        !conf_flags.split("::").next().unwrap_or_default().contains('R'),
        "{conf_flags:?}"
    );
}

/// Builds `spec` twice (different scratch dirs): same bytes. The first ISO and its dir.
fn build_twice(spec: &IsoSpec, files: &BootFiles) -> (PathBuf, tempfile::TempDir) {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build_iso(spec, files, a.path()).unwrap();
    let second = build_iso(spec, files, b.path()).unwrap();
    let (x, y) = (std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{:?}: the two builds differ in size",
        spec.variant
    );
    let diff = x.iter().zip(&y).position(|(p, q)| p != q);
    assert_eq!(
        diff, None,
        "{:?}: the two builds differ at byte {diff:?}",
        spec.variant
    );
    eprintln!(
        "{:?} {}: {} bytes, sha256 {}",
        spec.variant,
        spec.version,
        x.len(),
        hex(&Sha256::digest(&x))
    );
    // the work directory is gone, only the ISO is left
    let left: Vec<_> = std::fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, [first.file_name().unwrap().to_owned()], "{left:?}");
    (first, a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_grub_part(iso: &Path, files: &BootFiles, listed: &BTreeSet<String>, dir: &Path) {
    for want in [
        "/boot/vmlinuz",
        "/boot/initramfs.xz",
        "/boot/grub/grub.cfg",
        "/boot/grub/i386-pc/eltorito.img",
    ] {
        assert!(listed.contains(want), "{want} not in the ISO: {listed:#?}");
    }
    let cfg = String::from_utf8(iso_file(iso, "/boot/grub/grub.cfg", dir)).unwrap();
    assert_eq!(cfg, grub_cfg(CMDLINE, true));
    assert!(
        cfg.contains("linux /boot/vmlinuz talos.platform=metal console=ttyS0 talos.config=http://h/c?u=\\$\\{uuid\\}\\&x=1\n"),
        "{cfg}"
    );
    assert_eq!(
        iso_file(iso, "/boot/vmlinuz", dir),
        std::fs::read(&files.kernel).unwrap()
    );
    assert_eq!(
        iso_file(iso, "/boot/initramfs.xz", dir),
        std::fs::read(&files.initramfs).unwrap()
    );
}

fn check_sd_boot_tree(iso: &Path, files: &BootFiles, listed: &BTreeSet<String>, version: &str, dir: &Path) {
    let uki = format!("/EFI/Linux/Talos-{version}.efi");
    for want in [
        "/EFI/BOOT/BOOTX64.EFI",
        &uki,
        "/loader/loader.conf",
        "/loader/random-seed",
    ] {
        assert!(listed.contains(want), "{want} not in the ISO: {listed:#?}");
    }
    assert_eq!(
        iso_file(iso, &uki, dir),
        std::fs::read(files.uki.as_ref().unwrap()).unwrap()
    );
    assert_eq!(iso_file(iso, "/loader/loader.conf", dir), LOADER_CONF.as_bytes());
}

#[test]
fn sd_boot_iso() {
    require_all();
    let inputs = inputs();
    let version = "v1.12.0";
    let (iso, dir) = build_twice(&spec(IsoVariant::SdBoot, version), &inputs.files);
    assert_eq!(el_torito(&iso), [(1, "UEFI".to_owned())]);
    assert_eq!(pvd(&iso), (volume_id(version), format!("Talos-{version}")));
    assert_eq!(volume_id(version), "TALOS_V1_12_0");
    let listed = iso_files(&iso);
    check_sd_boot_tree(&iso, &inputs.files, &listed, version, dir.path());
    assert!(!listed.iter().any(|f| f.starts_with("/boot")), "{listed:#?}");
    assert!(!listed.iter().any(|f| f.contains("efiboot")), "{listed:#?}");
    check_esp(&iso, &inputs.files, version, dir.path());
    // MBR: partition 1 the ISO filesystem (type 0x83, 32 KiB in), partition 2 the ESP
    let table = serde_like::parse(&run("sfdisk", &["-J", iso.to_str().unwrap()]));
    assert_eq!(table.label, "dos");
    let kinds: Vec<(u64, &str)> = table
        .partitions
        .iter()
        .map(|p| (p.start, p.kind.as_str()))
        .collect();
    assert_eq!(kinds.len(), 2, "{table:?}");
    assert_eq!(kinds[0], (64, "83"), "{table:?}");
    assert_eq!(kinds[1].1, "ef", "{table:?}");
}

#[test]
fn hybrid_iso() {
    require_all();
    let inputs = inputs();
    let version = "v1.12.0";
    let (iso, dir) = build_twice(&spec(IsoVariant::Hybrid, version), &inputs.files);
    assert_eq!(el_torito(&iso), [(1, "BIOS".to_owned()), (2, "UEFI".to_owned())]);
    assert_eq!(pvd(&iso), (volume_id(version), format!("Talos-{version}")));
    let listed = iso_files(&iso);
    check_grub_part(&iso, &inputs.files, &listed, dir.path());
    check_sd_boot_tree(&iso, &inputs.files, &listed, version, dir.path());
    // BIOS GRUB only: no GRUB EFI platform, no GRUB EFI image
    assert!(
        !listed.iter().any(|f| f.starts_with("/boot/grub/x86_64-efi")),
        "{listed:#?}"
    );
    assert!(!listed.iter().any(|f| f.contains("efi.img")), "{listed:#?}");
    check_esp(&iso, &inputs.files, version, dir.path());
    let table = serde_like::parse(&run("sfdisk", &["-J", iso.to_str().unwrap()]));
    assert_eq!(table.label, "gpt", "-appended_part_as_gpt: {table:?}");
}

#[test]
fn grub_iso_bios_only_in_the_sd_boot_era() {
    require_all();
    let inputs = inputs();
    let version = "v1.12.0";
    let files = BootFiles {
        uki: None,
        ..inputs.files.clone()
    };
    let (iso, dir) = build_twice(&spec(IsoVariant::Grub, version), &files);
    assert_eq!(el_torito(&iso), [(1, "BIOS".to_owned())]);
    assert_eq!(pvd(&iso), (volume_id(version), format!("Talos-{version}")));
    let listed = iso_files(&iso);
    check_grub_part(&iso, &files, &listed, dir.path());
    assert!(
        !listed
            .iter()
            .any(|f| f.starts_with("/EFI") || f.starts_with("/loader")),
        "{listed:#?}"
    );
}

#[test]
fn grub_iso_boots_both_before_1_10() {
    require_all();
    let inputs = inputs();
    let version = "v1.9.5";
    let files = BootFiles {
        uki: None,
        ..inputs.files.clone()
    };
    let (iso, dir) = build_twice(&spec(IsoVariant::Grub, version), &files);
    assert_eq!(el_torito(&iso), [(1, "BIOS".to_owned()), (2, "UEFI".to_owned())]);
    assert_eq!(pvd(&iso), ("TALOS_V1_9_5".to_owned(), "Talos-v1.9.5".to_owned()));
    let listed = iso_files(&iso);
    check_grub_part(&iso, &files, &listed, dir.path());
    assert!(
        listed.iter().any(|f| f.starts_with("/boot/grub/x86_64-efi")),
        "{listed:#?}"
    );
    // GRUB's own EFI image (its FAT serial pinned by GRUB_FAT_SERIAL_NUMBER) boots UEFI
    let esp = format!("{}@@{}", iso.display(), esp_offset(&iso));
    let listing = mtools("mdir", &esp, &["-/", "-b", "::"]);
    assert!(
        listing.to_uppercase().contains("::/EFI/BOOT/BOOTX64.EFI"),
        "{listing}"
    );
}

#[test]
fn labels_and_reset_entry_follow_the_version() {
    require_all();
    let inputs = inputs();
    let files = BootFiles {
        uki: None,
        ..inputs.files.clone()
    };
    // < 1.8: no label (xorriso's default volume id); < 1.4: no reset entry
    let dir = tempfile::tempdir().unwrap();
    let iso = build_iso(&spec(IsoVariant::Grub, "v1.3.7"), &files, dir.path()).unwrap();
    let (volid, volset) = pvd(&iso);
    assert_ne!(volid, volume_id("v1.3.7"));
    assert!(volset.is_empty(), "{volset:?}");
    let cfg = String::from_utf8(iso_file(&iso, "/boot/grub/grub.cfg", dir.path())).unwrap();
    assert_eq!(cfg, grub_cfg(CMDLINE, false));
}

#[test]
fn invalid_specs_are_rejected() {
    require_all();
    let inputs = inputs();
    let dir = tempfile::tempdir().unwrap();
    let no_uki = BootFiles {
        uki: None,
        ..inputs.files.clone()
    };
    let err = build_iso(&spec(IsoVariant::SdBoot, "v1.12.0"), &no_uki, dir.path()).unwrap_err();
    assert!(err.to_string().contains("UKI"), "{err}");
    let mut bad = spec(IsoVariant::Grub, "v1.12.0");
    bad.arch = "riscv64".into();
    assert!(build_iso(&bad, &inputs.files, dir.path()).is_err());
    let mut bad = spec(IsoVariant::Grub, "v1.12.0");
    bad.cmdline = "a\nb".into();
    assert!(build_iso(&bad, &inputs.files, dir.path()).is_err());
    let bad = spec(IsoVariant::Grub, "../v1");
    assert!(build_iso(&bad, &inputs.files, dir.path()).is_err());
    let missing = BootFiles {
        kernel: dir.path().join("nope"),
        ..inputs.files.clone()
    };
    let err = build_iso(&spec(IsoVariant::Grub, "v1.12.0"), &missing, dir.path()).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}
