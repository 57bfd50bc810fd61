//! Complete disk images from [`build_disk`], written sparse and checked with independent tools:
//! `sgdisk -v`/`-p`/`-i` (gdisk; through a 4K loop device for 4096-byte sectors, else
//! `fdisk -l -b 4096`), `mdir`/`mtype`/`mcopy` on the ESP (mtools, `file@@offset`),
//! `xfs_repair -n` and `xfs_db -r` on the BOOT partition copied out sparse (xfsprogs),
//! `grub-fstest` reading BOOT through GRUB's own XFS driver (grub-common), `grub-mkimage` for
//! the expected `core.img` and `/usr/lib/grub/i386-pc/boot.img` for the MBR boot code
//! (grub-pc-bin), and META decoded with [`decode_meta`].
//!
//! Missing tools FAIL the test with the Debian package to install (CI installs gdisk, mtools,
//! xfsprogs, grub-pc-bin, grub-efi-amd64-bin).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use factory_disk::assemble::{build_disk, DiskSpec, LOADER_CONF};
use factory_disk::gpt::{guid_from_label, Guid};
use factory_disk::grub::{patch_bios, I386_PC_DIR};
use factory_disk::layout::{image_disk_size, MIN_RAW_DISK_SIZE};
use factory_disk::meta::{decode_meta, keys};
use factory_disk::{BootFiles, Bootloader, DiskLayout, SparseImage, TalosVersion, MIB};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Fails (never skips) when `tool` is missing, naming its Debian package.
fn require(tool: &str, package: &str) {
    let found = ["", "/usr/sbin/", "/sbin/"]
        .iter()
        .any(|dir| Command::new(format!("{dir}{tool}")).arg("-V").output().is_ok());
    assert!(found, "{tool} is not installed: apt-get install {package}");
}

fn run(cmd: &str, args: &[&str]) -> R<String> {
    let program = ["/usr/sbin/", "/sbin/"]
        .iter()
        .map(|d| format!("{d}{cmd}"))
        .find(|p| Path::new(p).is_file())
        .unwrap_or_else(|| cmd.to_owned());
    let out = Command::new(&program).args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{cmd} {args:?} failed: {text}").into());
    }
    Ok(text)
}

fn path_str(p: &Path) -> R<&str> {
    p.to_str().ok_or_else(|| "non-UTF-8 path".into())
}

/// Deterministic pseudo-random bytes (so that file content mix-ups show).
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
    files: BootFiles,
}

fn fixture() -> R<Fixture> {
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("vmlinuz"), noise(3 * MIB as usize + 123, 1))?;
    std::fs::write(p("initramfs.xz"), noise(2 * MIB as usize + 7, 2))?;
    std::fs::write(p("systemd-boot.efi"), noise(100_000, 3))?;
    std::fs::write(p("uki.efi"), noise(5 * MIB as usize + 1, 4))?;
    let files = BootFiles {
        kernel: p("vmlinuz"),
        initramfs: p("initramfs.xz"),
        sd_boot: p("systemd-boot.efi"),
        uki: Some(p("uki.efi")),
    };
    Ok(Fixture { dir, files })
}

const CMDLINE: &str = "talos.platform=metal console=ttyS0 talos.test=a;b&c";

fn spec(version: &str, bootloader: Bootloader, sector_size: u32) -> DiskSpec {
    DiskSpec {
        version: TalosVersion::parse(version),
        version_tag: version.to_owned(),
        arch: "amd64".into(),
        bootloader,
        disk_size: MIN_RAW_DISK_SIZE,
        sector_size,
        cmdline: CMDLINE.into(),
        meta: vec![(0x0c, b"hello".to_vec()), (0x0a, b"{\"a\":1}".to_vec())],
    }
}

/// A built image written sparse to `disk.raw` in its own scratch directory.
struct Built {
    scratch: tempfile::TempDir,
    disk: PathBuf,
    layout: DiskLayout,
}

fn build(fx: &Fixture, spec: &DiskSpec) -> R<Built> {
    let scratch = tempfile::tempdir()?;
    let img = build_disk(spec, &fx.files, scratch.path())?;
    let disk = scratch.path().join("disk.raw");
    img.write_sparse_file(&mut File::create(&disk)?)?;
    let size = image_disk_size(spec.disk_size, spec.version, spec.bootloader);
    assert_eq!(img.size(), size);
    assert_eq!(std::fs::metadata(&disk)?.len(), size);
    let layout = DiskLayout::new(spec.version, spec.bootloader, size, spec.sector_size);
    Ok(Built {
        scratch,
        disk,
        layout,
    })
}

fn read_range(path: &Path, off: u64, len: usize) -> R<Vec<u8>> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)?;
    Ok(buf)
}

impl Built {
    fn range(&self, name: &str) -> R<(u64, u64, u64)> {
        let gpt = self.layout.gpt()?;
        let p = gpt.partition(name).ok_or(format!("no {name}"))?;
        let (off, len) = gpt.byte_range(p);
        Ok((p.first_lba, off, len))
    }

    /// Copies a partition out, sparse (only its data regions are read).
    fn extract(&self, name: &str) -> R<PathBuf> {
        let (_, off, len) = self.range(name)?;
        let mut part = SparseImage::new(len);
        part.add_sparse_file(0, len, &self.disk, off)?;
        let out = self.scratch.path().join(format!("{name}.part"));
        part.write_sparse_file(&mut File::create(&out)?)?;
        Ok(out)
    }

    fn mtools_spec(&self) -> R<String> {
        let (_, off, _) = self.range("EFI")?;
        Ok(format!("{}@@{off}", path_str(&self.disk)?))
    }
}

/// `sgdisk -v` clean; `sgdisk -p`/`-i=N` list `want` = (name, first LBA, type) with the
/// deterministic GUIDs and the BIOS attribute.
fn check_sgdisk(dev: &str, want: &[(&str, u64, Guid)], sector: u32) -> R {
    let v = run("sgdisk", &["-v", dev])?;
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");
    let p = run("sgdisk", &["-p", dev])?;
    let ss_line = p
        .lines()
        .find(|l| l.starts_with("Sector size (logical"))
        .ok_or("no sector size")?;
    assert!(ss_line.contains(&format!(": {sector}")), "{p}");
    let disk_guid = guid_from_label("talos-image-disk").to_string().to_uppercase();
    assert!(p.contains(&format!("Disk identifier (GUID): {disk_guid}")), "{p}");
    let rows: Vec<Vec<&str>> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| !r.is_empty())
        .collect();
    assert_eq!(rows.len(), want.len(), "{p}");
    for (i, (row, (name, first, ty))) in rows.iter().zip(want).enumerate() {
        assert_eq!(row[1].parse::<u64>()?, *first, "{name} start\n{p}");
        assert_eq!(row.last().copied(), Some(*name), "{p}");
        let info = run("sgdisk", &[&format!("-i={}", i + 1), dev])?;
        assert!(
            info.contains(&format!("Partition GUID code: {}", ty.to_string().to_uppercase())),
            "{info}"
        );
        let uuid = guid_from_label(name).to_string().to_uppercase();
        assert!(info.contains(&format!("Partition unique GUID: {uuid}")), "{info}");
        let attrs = if *name == "BIOS" {
            "0000000000000004"
        } else {
            "0000000000000000"
        };
        assert!(info.contains(&format!("Attribute flags: {attrs}")), "{info}");
    }
    Ok(())
}

/// Detaches a loop device on drop.
struct LoopDev(String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// The partition table, by sgdisk (512: the file; 4096: a 4K loop device when `losetup` works,
/// else `fdisk -l -b 4096` for the starts).
fn check_table(b: &Built, want: &[(&str, u64, Guid)]) -> R {
    let sector = b.layout.sector_size;
    let disk = path_str(&b.disk)?;
    if sector == 512 {
        return check_sgdisk(disk, want, 512);
    }
    let dev = Command::new("losetup")
        .args(["--sector-size", "4096", "-r", "-f", "--show", disk])
        .output();
    match dev {
        Ok(o) if o.status.success() => {
            let dev = LoopDev(String::from_utf8_lossy(&o.stdout).trim().to_owned());
            check_sgdisk(&dev.0, want, 4096)
        }
        _ => {
            eprintln!("no 4K loop device here: fdisk -b 4096 instead of sgdisk");
            let out = run("fdisk", &["-l", "-b", "4096", "-o", "Device,Start,Name", disk])?;
            for (name, first, _) in want {
                let line = out
                    .lines()
                    .find(|l| l.split_whitespace().nth(2) == Some(name))
                    .ok_or(format!("no {name} in\n{out}"))?;
                assert_eq!(
                    line.split_whitespace().nth(1),
                    Some(first.to_string().as_str()),
                    "{out}"
                );
            }
            Ok(())
        }
    }
}

/// The ESP of a systemd-boot layout: systemd-boot, the UKI (byte for byte), loader.conf.
fn check_sd_boot_esp(b: &Built, fx: &Fixture, version: &str) -> R {
    let spec = b.mtools_spec()?;
    let ls = run("mdir", &["-i", &spec, "-/", "-b", "::"])?;
    let uki = format!("::/EFI/Linux/Talos-{version}.efi");
    for want in ["::/EFI/boot/BOOTX64.efi", uki.as_str(), "::/loader/loader.conf"] {
        assert!(ls.lines().any(|l| l.trim() == want), "{want} missing:\n{ls}");
    }
    assert_eq!(
        run("mtype", &["-i", &spec, "::/loader/loader.conf"])?,
        LOADER_CONF
    );
    let out = b.scratch.path().join("esp-file");
    for (on_esp, local) in [
        (uki.as_str(), fx.files.uki.as_ref().ok_or("uki")?),
        ("::/EFI/boot/BOOTX64.efi", &fx.files.sd_boot),
    ] {
        run("mcopy", &["-n", "-i", &spec, on_esp, path_str(&out)?])?;
        assert!(std::fs::read(&out)? == std::fs::read(local)?, "{on_esp}");
        std::fs::remove_file(&out)?;
    }
    Ok(())
}

/// META: the schematic's values, plus 0x11 for dual-boot; the rest of the partition zero.
fn check_meta(b: &Built) -> R {
    let (_, off, len) = b.range("META")?;
    let buf = read_range(&b.disk, off, len as usize)?;
    let values = decode_meta(&buf)?;
    assert_eq!(values.get(&0x0c).map(Vec::as_slice), Some(&b"hello"[..]));
    assert_eq!(values.get(&0x0a).map(Vec::as_slice), Some(&b"{\"a\":1}"[..]));
    let dual = b.layout.bootloader == Bootloader::DualBoot;
    assert_eq!(
        values.get(&keys::DISK_IMAGE_BOOTLOADER).map(Vec::as_slice),
        dual.then_some(&b"dual-boot"[..])
    );
    assert_eq!(values.len(), 2 + usize::from(dual));
    assert!(buf[512 * 1024..].iter().all(|&x| x == 0));
    Ok(())
}

/// BOOT: `xfs_repair -n` clean, label/UUID/sector size by `xfs_db`, the files and grub.cfg as
/// GRUB's XFS driver reads them (`grub-fstest`).
fn check_boot(b: &Built, fx: &Fixture, version: &str) -> R {
    let part = b.extract("BOOT")?;
    let p = path_str(&part)?;
    run("xfs_repair", &["-n", "-f", p])?;
    let sb = run("xfs_db", &["-r", "-c", "sb 0", "-c", "p uuid fname sectsize", p])?;
    assert!(
        sb.contains(&format!("uuid = {}", guid_from_label("BOOT"))),
        "{sb}"
    );
    assert!(
        sb.contains("fname = \"BOOT\\000\\000\\000\\000\\000\\000\\000\\000\""),
        "{sb}"
    );
    assert!(
        sb.contains(&format!("sectsize = {}", b.layout.sector_size)),
        "{sb}"
    );
    let ls = run("xfs_db", &["-r", "-c", "ls /A", p])?;
    assert!(ls.contains("vmlinuz") && ls.contains("initramfs.xz"), "{ls}");
    for (inside, local) in [
        ("A/vmlinuz", &fx.files.kernel),
        ("A/initramfs.xz", &fx.files.initramfs),
    ] {
        run(
            "grub-fstest",
            &[p, "cmp", &format!("(loop0)/{inside}"), path_str(local)?],
        )?;
    }
    let cfg = run("grub-fstest", &[p, "cat", "(loop0)/grub/grub.cfg"])?;
    let want = factory_disk::grub::grub_cfg(version, CMDLINE, true);
    assert_eq!(cfg, want);
    assert!(cfg.contains("talos.test=a\\;b\\&c"), "quoted:\n{cfg}");
    Ok(())
}

/// The GRUB BIOS boot code: the MBR's first 446 bytes are the patched boot.img's, the BIOS
/// partition starts with the patched core.img (the same modules and prefix through
/// `grub-mkimage` here), everything after it in the partition is zero.
fn check_bios(b: &Built) -> R {
    let (first_lba, off, len) = b.range("BIOS")?;
    let core = b.scratch.path().join("expected-core.img");
    let mut args = vec![
        "--format",
        "i386-pc",
        "--output",
        path_str(&core)?,
        "--prefix",
        "(hd0,gpt3)/grub",
    ];
    args.extend(factory_disk::grub::MODULES);
    args.extend(factory_disk::grub::BIOS_MODULES);
    run("grub-mkimage", &args)?;
    let boot = std::fs::read(Path::new(I386_PC_DIR).join("boot.img"))?;
    let want = patch_bios(boot, std::fs::read(&core)?, first_lba, len)?;
    let mbr = read_range(&b.disk, 0, 512)?;
    assert!(mbr[..446] == want.boot_img[..446], "MBR boot code");
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    assert_eq!(mbr[450], 0xEE, "protective entry kept");
    let bios = read_range(&b.disk, off, len as usize)?;
    let n = want.core_img.len();
    assert!(bios[..n] == want.core_img[..], "core.img");
    assert_eq!(&bios[0x1f4..0x1fc], &(first_lba + 1).to_le_bytes());
    assert!(bios[n..].iter().all(|&x| x == 0));
    eprintln!("core.img: {n} bytes of the {len}-byte BIOS partition");
    Ok(())
}

fn tools_for_all() {
    require("sgdisk", "gdisk");
    require("mdir", "mtools");
    require("xfs_repair", "xfsprogs");
    require("mkfs.xfs", "xfsprogs");
    require("grub-fstest", "grub-common");
    require("grub-mkimage", "grub-common");
    assert!(
        Path::new(I386_PC_DIR).join("boot.img").is_file(),
        "no {I386_PC_DIR}/boot.img: apt-get install grub-pc-bin"
    );
}

#[test]
fn sd_boot_layout() -> R {
    tools_for_all();
    let fx = fixture()?;
    for sector in [512u32, 4096] {
        let v = "v1.11.0";
        let b = build(&fx, &spec(v, Bootloader::SdBoot, sector))?;
        let per_mib = MIB / u64::from(sector);
        check_table(
            &b,
            &[
                ("EFI", per_mib, Guid::ESP),
                ("META", 2102 * per_mib, Guid::LINUX_FS),
            ],
        )?;
        check_sd_boot_esp(&b, &fx, v)?;
        check_meta(&b)?;
        // no GRUB: the MBR boot code area is zero
        assert!(read_range(&b.disk, 0, 446)?.iter().all(|&x| x == 0));
        let _ = &fx.dir;
    }
    Ok(())
}

#[test]
fn dual_boot_layout() -> R {
    tools_for_all();
    let fx = fixture()?;
    for sector in [512u32, 4096] {
        let v = "v1.11.0";
        let b = build(&fx, &spec(v, Bootloader::DualBoot, sector))?;
        // talos-imager.md §10.2 worked example (512): disk 4247 MiB, EFI 2048, BIOS 4 304 896,
        // BOOT 4 306 944, META 8 402 944
        assert_eq!(std::fs::metadata(&b.disk)?.len(), 4247 * MIB);
        let per_mib = MIB / u64::from(sector);
        check_table(
            &b,
            &[
                ("EFI", per_mib, Guid::ESP),
                ("BIOS", 2102 * per_mib, Guid::BIOS_BOOT),
                ("BOOT", 2103 * per_mib, Guid::LINUX_FS),
                ("META", 4103 * per_mib, Guid::LINUX_FS),
            ],
        )?;
        if sector == 512 {
            assert_eq!(b.range("BIOS")?.0, 4_304_896);
            assert_eq!(b.range("BOOT")?.0, 4_306_944);
            assert_eq!(b.range("META")?.0, 8_402_944);
        }
        check_sd_boot_esp(&b, &fx, v)?;
        check_boot(&b, &fx, v)?;
        check_bios(&b)?;
        check_meta(&b)?;
        // sparse: GPT, ESP files, BOOT metadata + files, core.img, META — not 4 GiB
        let du = run("du", &["-k", path_str(&b.disk)?])?;
        let kib: u64 = du.split_whitespace().next().ok_or("du")?.parse()?;
        assert!(kib < 200 * 1024, "{kib} KiB allocated");
    }
    Ok(())
}

#[test]
fn grub_layout() -> R {
    tools_for_all();
    assert!(
        Path::new("/usr/lib/grub/x86_64-efi/moddep.lst").is_file(),
        "no GRUB x86_64-efi modules: apt-get install grub-efi-amd64-bin"
    );
    let fx = fixture()?;
    // 1.9: 1000 MiB BOOT, lts_6.6 features (grub with 4096-byte sectors: a 100 MiB FAT32 ESP
    // has too few clusters, as with mkfs.vfat)
    let v = "v1.9.5";
    let b = build(&fx, &spec(v, Bootloader::Grub, 512))?;
    check_table(
        &b,
        &[
            ("EFI", 2048, Guid::ESP),
            ("BIOS", 101 * 2048, Guid::BIOS_BOOT),
            ("BOOT", 102 * 2048, Guid::LINUX_FS),
            ("META", 1102 * 2048, Guid::LINUX_FS),
        ],
    )?;
    let spec_str = b.mtools_spec()?;
    let ls = run("mdir", &["-i", &spec_str, "-/", "-b", "::"])?;
    assert_eq!(
        ls.lines()
            .map(str::trim)
            .filter(|l| !l.ends_with('/'))
            .collect::<Vec<_>>(),
        ["::/EFI/boot/BOOTX64.efi"],
        "{ls}"
    );
    // the GRUB EFI loader, as grub-mkimage makes it with the same arguments
    let want = b.scratch.path().join("expected-grub.efi");
    let mut args = vec![
        "--format",
        "x86_64-efi",
        "--output",
        path_str(&want)?,
        "--prefix",
        "(hd0,gpt3)/grub",
        "--compression",
        "xz",
    ];
    args.extend(factory_disk::grub::MODULES);
    run("grub-mkimage", &args)?;
    let got = b.scratch.path().join("got-grub.efi");
    run(
        "mcopy",
        &["-n", "-i", &spec_str, "::/EFI/boot/BOOTX64.efi", path_str(&got)?],
    )?;
    let got = std::fs::read(&got)?;
    assert_eq!(&got[..2], b"MZ");
    assert!(got == std::fs::read(&want)?, "the GRUB EFI loader");
    check_boot(&b, &fx, v)?;
    check_bios(&b)?;
    check_meta(&b)?;
    Ok(())
}

/// Two builds differ only inside BOOT, in the inode timestamps mkfs.xfs 6.1 takes from the
/// clock (and their CRCs): a few hundred bytes at most.
#[test]
fn deterministic_but_for_xfs_timestamps() -> R {
    tools_for_all();
    require("cmp", "diffutils");
    let fx = fixture()?;
    let s = spec("v1.12.1", Bootloader::DualBoot, 512);
    let a = build(&fx, &s)?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(&fx, &s)?;
    let out = Command::new("cmp")
        .args(["-l", path_str(&a.disk)?, path_str(&b.disk)?])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, boot_off, boot_len) = a.range("BOOT")?;
    let diffs: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .collect();
    assert!(diffs.len() < 400, "{} bytes differ", diffs.len());
    for d in &diffs {
        // cmp counts from 1
        assert!(
            (boot_off..boot_off + boot_len).contains(&(d - 1)),
            "byte {d} outside BOOT differs"
        );
    }
    eprintln!("{} bytes differ, all inside BOOT", diffs.len());
    Ok(())
}
