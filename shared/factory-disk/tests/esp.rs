//! The FAT32 ESP checked with mtools (`minfo`, `mdir`, `mtype`, `mcopy`) and `fsck.fat -n`,
//! embedded in a GPT image and read back through the partition offset.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::Command;

use factory_disk::fat::{FatOptions, FatSource, FatVolume};
use factory_disk::{Bootloader, DiskLayout, SparseImage, TalosVersion, MIB};

type R = Result<(), Box<dyn std::error::Error>>;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: {tool} not installed (apt-get install mtools dosfstools)");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{cmd} {args:?} failed: {text}").into());
    }
    Ok(text)
}

fn files(dir: &Path) -> Result<BTreeMap<String, FatSource>, Box<dyn std::error::Error>> {
    let uki = dir.join("uki.efi");
    std::fs::write(
        &uki,
        (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect::<Vec<_>>(),
    )?;
    let mut m = BTreeMap::new();
    m.insert(
        "EFI/boot/BOOTX64.efi".to_owned(),
        FatSource::from(b"MZ fake sd-boot".to_vec()),
    );
    m.insert("EFI/Linux/Talos-v1.11.0.efi".to_owned(), FatSource::File(uki));
    m.insert(
        "loader/loader.conf".to_owned(),
        FatSource::from(b"# systemd-boot configuration\n\ntimeout 10\n".to_vec()),
    );
    Ok(m)
}

fn check(img: &str, dir: &Path, sector: u32) -> R {
    let info = run("minfo", &["-i", img, "::"])?;
    assert!(info.contains("disk label=\"EFI        \""), "{info}");
    assert!(info.contains("serial number: 1234ABCD"), "{info}");
    assert!(info.contains(&format!("sector size: {sector} bytes")), "{info}");
    let ls = run("mdir", &["-i", img, "-/", "-b", "::"])?;
    for want in [
        "::/EFI/boot/BOOTX64.efi",
        "::/EFI/Linux/Talos-v1.11.0.efi",
        "::/loader/loader.conf",
    ] {
        assert!(ls.lines().any(|l| l.trim() == want), "{want} missing in\n{ls}");
    }
    let conf = run("mtype", &["-i", img, "::/loader/loader.conf"])?;
    assert_eq!(conf, "# systemd-boot configuration\n\ntimeout 10\n");
    let out = dir.join("uki.out");
    run(
        "mcopy",
        &[
            "-n",
            "-i",
            img,
            "::/EFI/Linux/Talos-v1.11.0.efi",
            out.to_str().ok_or("p")?,
        ],
    )?;
    assert!(std::fs::read(&out)? == std::fs::read(dir.join("uki.efi"))?);
    std::fs::remove_file(&out)?;
    Ok(())
}

#[test]
fn esp_with_mtools_and_fsck() -> R {
    if !have("mdir") || !have("fsck.fat") || !have("cmp") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let files = files(dir.path())?;
    for (size, sector) in [(100 * MIB, 512), (300 * MIB, 4096), (600 * MIB, 512)] {
        let a = dir.path().join("esp-a.img");
        let b = dir.path().join("esp-b.img");
        let mut opts = FatOptions::esp(size, sector);
        opts.timestamp = Some(1_700_000_000);
        FatVolume::new(&opts, &files)?.write_sparse_file(&a)?;
        FatVolume::new(&opts, &files)?.write_sparse_file(&b)?;
        let (ap, bp) = (a.to_str().ok_or("p")?, b.to_str().ok_or("p")?);
        run("cmp", &[ap, bp])?; // deterministic
        let fsck = run("fsck.fat", &["-n", "-v", ap])?;
        let problems: Vec<&str> = fsck
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                [
                    "wrong",
                    "fix",
                    "differ",
                    "bad",
                    "invalid",
                    "lost",
                    "expected",
                    "uninitialized",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .collect();
        assert!(problems.is_empty(), "fsck.fat -n -v:\n{fsck}");
        check(ap, dir.path(), sector)?;
        let ls = run("mdir", &["-i", ap, "::/loader"])?;
        assert!(ls.contains("2023-11-14"), "timestamp in\n{ls}");
        std::fs::remove_file(&a)?;
        std::fs::remove_file(&b)?;
    }
    Ok(())
}

#[test]
fn esp_inside_disk_image() -> R {
    if !have("mdir") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let v = TalosVersion::parse("v1.9.0");
    let layout = DiskLayout::new(v, Bootloader::Grub, 1246 * MIB, 512);
    let gpt = layout.gpt()?;
    let efi = gpt.partition("EFI").ok_or("EFI")?;
    let (off, len) = gpt.byte_range(efi);
    let mut img = SparseImage::new(layout.disk_size);
    gpt.add_to(&mut img, None)?;
    FatVolume::new(&FatOptions::esp(len, 512), &files(dir.path())?)?.add_to(&mut img, off)?;
    let disk = dir.path().join("disk.raw");
    img.write_sparse_file(&mut File::create(&disk)?)?;
    // mtools addresses the partition by byte offset
    let spec = format!("{}@@{off}", disk.to_str().ok_or("p")?);
    check(&spec, dir.path(), 512)?;
    Ok(())
}

#[test]
fn esp_edge_cases_with_mtools_and_fsck() -> R {
    if !have("mdir") || !have("fsck.fat") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut files = BTreeMap::new();
    files.insert("empty.txt".to_owned(), FatSource::from(Vec::new()));
    files.insert(
        "a/b/c/a rather long file name with spaces and.dots.conf".to_owned(),
        FatSource::from(b"deep".to_vec()),
    );
    for i in 0..40 {
        files.insert(
            format!("many/file-number-{i:03}.bin"),
            FatSource::from(vec![i as u8; 700]),
        );
    }
    let img = dir.path().join("edge.img");
    FatVolume::new(&FatOptions::esp(64 * MIB, 512), &files)?.write_sparse_file(&img)?;
    let ip = img.to_str().ok_or("p")?;
    let fsck = run("fsck.fat", &["-n", ip])?;
    assert_eq!(fsck.lines().count(), 2, "{fsck}");
    let ls = run("mdir", &["-i", ip, "-/", "-b", "::"])?;
    assert!(ls.lines().any(|l| l.trim() == "::/empty.txt"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.trim() == "::/a/b/c/a rather long file name with spaces and.dots.conf"),
        "{ls}"
    );
    assert_eq!(
        ls.lines()
            .filter(|l| l.starts_with("::/many/file-number-"))
            .count(),
        40,
        "{ls}"
    );
    assert_eq!(
        run("mtype", &["-i", ip, "::/many/file-number-039.bin"])?.as_bytes(),
        &[39u8; 700][..]
    );
    assert_eq!(run("mtype", &["-i", ip, "::/empty.txt"])?, "");

    // names equal but for case are refused (FAT is case-insensitive)
    let mut clash = BTreeMap::new();
    clash.insert("EFI/boot/x".to_owned(), FatSource::from(vec![1]));
    clash.insert("EFI/BOOT/y".to_owned(), FatSource::from(vec![1]));
    assert!(FatVolume::new(&FatOptions::esp(64 * MIB, 512), &clash).is_err());
    Ok(())
}

/// A whole sd-boot image (GPT + FAT32 ESP + META): `sgdisk -v`, mtools through the partition
/// offset, and the streamed bytes (`write_to`) equal to the sparse file (`sha256sum`).
#[test]
fn full_sd_boot_image_streamed_equals_sparse() -> R {
    use sha2::{Digest, Sha256};
    if !have("sgdisk") || !have("mdir") || !have("sha256sum") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let v = TalosVersion::parse("v1.10.0");
    let size = factory_disk::layout::image_disk_size(1246 * MIB, v, Bootloader::SdBoot);
    let layout = DiskLayout::new(v, Bootloader::SdBoot, size, 512);
    let gpt = layout.gpt()?;
    let mut img = SparseImage::new(size);
    gpt.add_to(&mut img, None)?;
    let (off, len) = gpt.byte_range(gpt.partition("EFI").ok_or("EFI")?);
    FatVolume::new(&FatOptions::esp(len, 512), &files(dir.path())?)?.add_to(&mut img, off)?;
    let values = factory_disk::meta::disk_image_meta_values(
        [(0x0a, &b"network"[..])],
        "amd64",
        false,
        v,
        Bootloader::SdBoot,
    );
    factory_disk::meta::add_meta(&mut img, &gpt, &values)?;

    let disk = dir.path().join("disk.raw");
    img.write_sparse_file(&mut File::create(&disk)?)?;
    let dp = disk.to_str().ok_or("p")?;
    assert!(run("sgdisk", &["-v", dp])?.contains("No problems found"));
    check(&format!("{dp}@@{off}"), dir.path(), 512)?;

    struct H(Sha256);
    impl std::io::Write for H {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.update(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = H(Sha256::new());
    assert_eq!(img.write_to(&mut h)?, size);
    let streamed: String = h.0.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let sum = run("sha256sum", &[dp])?;
    assert_eq!(sum.split_whitespace().next(), Some(streamed.as_str()));
    Ok(())
}
