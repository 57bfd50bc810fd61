//! Generated images checked with independent tools: `sgdisk -v`/`-p` (gdisk), `fdisk -l`
//! (util-linux; `-b 4096` for 4K images), `sgdisk` through a 4K-sector read-only loop device when
//! `losetup` works. Missing tools skip with a message.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::process::Command;

use factory_disk::gpt::Guid;
use factory_disk::layout::{image_disk_size, DEFAULT_RAW_DISK_SIZE, MIN_RAW_DISK_SIZE};
use factory_disk::meta::{add_meta, decode_meta, disk_image_meta_values, keys, META_SIZE};
use factory_disk::{Bootloader, DiskLayout, SparseImage, TalosVersion, MIB};

type R = Result<(), Box<dyn std::error::Error>>;

fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: {tool} not installed (apt-get install gdisk fdisk)");
    }
    ok
}

fn run(cmd: &str, args: &[&str]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(cmd).args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("{cmd} {args:?} failed: {text}").into());
    }
    Ok(text)
}

struct Case {
    version: &'static str,
    bootloader: Bootloader,
    profile_size: u64,
    /// (name, start MiB, size MiB or 0 for "rest", type)
    want: Vec<(&'static str, u64, u64, Guid)>,
}

fn cases() -> Vec<Case> {
    let (esp, bios, linux) = (Guid::ESP, Guid::BIOS_BOOT, Guid::LINUX_FS);
    vec![
        Case {
            version: "v1.11.0",
            bootloader: Bootloader::SdBoot,
            profile_size: MIN_RAW_DISK_SIZE,
            want: vec![("EFI", 1, 2101, esp), ("META", 2102, 1, linux)],
        },
        Case {
            version: "v1.10.4",
            bootloader: Bootloader::SdBoot,
            profile_size: MIN_RAW_DISK_SIZE,
            want: vec![("EFI", 1, 1101, esp), ("META", 1102, 1, linux)],
        },
        Case {
            version: "v1.12.1",
            bootloader: Bootloader::DualBoot,
            profile_size: MIN_RAW_DISK_SIZE,
            want: vec![
                ("EFI", 1, 2101, esp),
                ("BIOS", 2102, 1, bios),
                ("BOOT", 2103, 2000, linux),
                ("META", 4103, 1, linux),
            ],
        },
        Case {
            version: "v1.11.3",
            bootloader: Bootloader::Grub,
            profile_size: DEFAULT_RAW_DISK_SIZE,
            want: vec![
                ("EFI", 1, 100, esp),
                ("BIOS", 101, 1, bios),
                ("BOOT", 102, 2000, linux),
                ("META", 2102, 1, linux),
            ],
        },
        Case {
            version: "v1.9.5",
            bootloader: Bootloader::Grub,
            profile_size: MIN_RAW_DISK_SIZE,
            want: vec![
                ("EFI", 1, 100, esp),
                ("BIOS", 101, 1, bios),
                ("BOOT", 102, 1000, linux),
                ("META", 1102, 1, linux),
            ],
        },
        Case {
            version: "v1.7.6",
            bootloader: Bootloader::Grub,
            profile_size: MIN_RAW_DISK_SIZE,
            want: vec![
                ("EFI", 1, 100, esp),
                ("BIOS", 101, 1, bios),
                ("BOOT", 102, 1000, linux),
                ("META", 1102, 1, linux),
                ("STATE", 1103, 100, linux),
                ("EPHEMERAL", 1203, 0, linux),
            ],
        },
    ]
}

/// Builds GPT + META for a case into a sparse file; returns the layout.
fn build(case: &Case, sector: u32, path: &Path) -> Result<DiskLayout, Box<dyn std::error::Error>> {
    let v = TalosVersion::parse(case.version);
    let size = image_disk_size(case.profile_size, v, case.bootloader);
    let layout = DiskLayout::new(v, case.bootloader, size, sector);
    let gpt = layout.gpt()?;
    let mut img = SparseImage::new(size);
    gpt.add_to(&mut img, None)?;
    let values = disk_image_meta_values([(0x0c, &b"hello"[..])], "amd64", false, v, case.bootloader);
    add_meta(&mut img, &gpt, &values)?;
    img.write_sparse_file(&mut File::create(path)?)?;
    Ok(layout)
}

/// `sgdisk -v` clean, `sgdisk -p` / `-i` show the expected partitions (`dev` sector units).
fn check_sgdisk(dev: &str, case: &Case, sector: u64) -> R {
    let v = run("sgdisk", &["-v", dev])?;
    assert!(v.contains("No problems found"), "sgdisk -v {dev}:\n{v}");
    let p = run("sgdisk", &["-p", dev])?;
    let ss_line = p
        .lines()
        .find(|l| l.starts_with("Sector size (logical"))
        .ok_or("no sector size")?;
    assert!(ss_line.contains(&format!(": {sector}")), "{p}");
    let disk_guid = factory_disk::guid_from_label("talos-image-disk")
        .to_string()
        .to_uppercase();
    assert!(p.contains(&format!("Disk identifier (GUID): {disk_guid}")), "{p}");
    let per_mib = MIB / sector;
    let rows: Vec<Vec<&str>> = p
        .lines()
        .skip_while(|l| !l.starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    assert_eq!(rows.len(), case.want.len(), "{p}");
    for (i, (row, (name, start, size, ty))) in rows.iter().zip(&case.want).enumerate() {
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[1].parse::<u64>()?, start * per_mib, "{name} start\n{p}");
        if *size > 0 {
            assert_eq!(
                row[2].parse::<u64>()?,
                (start + size) * per_mib - 1,
                "{name} end\n{p}"
            );
        }
        assert_eq!(row.last().copied(), Some(*name), "{p}");
        let info = run("sgdisk", &[&format!("-i={}", i + 1), dev])?;
        let want_type = format!("Partition GUID code: {}", ty.to_string().to_uppercase());
        assert!(info.contains(&want_type), "{info}");
        let uuid = factory_disk::guid_from_label(name).to_string().to_uppercase();
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

/// `fdisk -l` (with `-b` for the sector size) shows the expected partitions.
fn check_fdisk(path: &str, case: &Case, sector: u64) -> R {
    let ss = sector.to_string();
    let out = run(
        "fdisk",
        &[
            "-l",
            "-b",
            &ss,
            "-o",
            "Device,Start,End,Type-UUID,Name,UUID,Attrs",
            path,
        ],
    )?;
    assert!(out.contains("Disklabel type: gpt"), "{out}");
    assert!(!out.to_lowercase().contains("corrupt"), "{out}");
    let per_mib = MIB / sector;
    for (name, start, size, ty) in &case.want {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some(name))
            .ok_or_else(|| format!("no {name} in\n{out}"))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1].parse::<u64>()?, start * per_mib, "{line}");
        if *size > 0 {
            assert_eq!(f[2].parse::<u64>()?, (start + size) * per_mib - 1, "{line}");
        }
        assert_eq!(f[3], ty.to_string().to_uppercase(), "{line}");
        assert_eq!(
            f[5],
            factory_disk::guid_from_label(name).to_string().to_uppercase(),
            "{line}"
        );
    }
    Ok(())
}

fn check_meta(path: &Path, layout: &DiskLayout) -> R {
    use std::io::{Read, Seek, SeekFrom};
    let gpt = layout.gpt()?;
    let (off, len) = gpt.byte_range(gpt.partition("META").ok_or("META")?);
    assert_eq!(len, META_SIZE);
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(off))?;
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)?;
    let values = decode_meta(&buf)?;
    assert_eq!(values.get(&0x0c).map(Vec::as_slice), Some(&b"hello"[..]));
    let dual = layout.bootloader == Bootloader::DualBoot;
    assert_eq!(values.contains_key(&keys::DISK_IMAGE_BOOTLOADER), dual);
    assert!(
        buf[512 * 1024..].iter().all(|&b| b == 0),
        "legacy tail stays zero"
    );
    Ok(())
}

#[test]
fn layouts_512_with_sgdisk_and_fdisk() -> R {
    if !have("sgdisk") || !have("fdisk") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for case in cases() {
        let path = dir.path().join("disk.raw");
        let layout = build(&case, 512, &path)?;
        let p = path.to_str().ok_or("path")?;
        check_sgdisk(p, &case, 512).map_err(|e| format!("{} {:?}: {e}", case.version, case.bootloader))?;
        check_fdisk(p, &case, 512)?;
        check_meta(&path, &layout)?;
        // sparse: only the GPT structures and META are allocated
        let allocated = run("du", &["-k", p])?;
        let kib: u64 = allocated.split_whitespace().next().ok_or("du")?.parse()?;
        assert!(kib < 4096, "{kib} KiB allocated");
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Detaches the loop device even when a check panics.
struct LoopDev(String);

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn layouts_4096_with_fdisk_and_loop_sgdisk() -> R {
    if !have("sgdisk") || !have("fdisk") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    for case in cases() {
        let path = dir.path().join("disk4k.raw");
        let layout = build(&case, 4096, &path)?;
        let p = path.to_str().ok_or("path")?;
        check_fdisk(p, &case, 4096)?;
        check_meta(&path, &layout)?;
        // sgdisk reads files as 512-byte-sector disks; a 4K loop device gives it the real geometry
        let dev = Command::new("losetup")
            .args(["--sector-size", "4096", "-r", "-f", "--show", p])
            .output();
        match dev {
            Ok(o) if o.status.success() => {
                let dev = LoopDev(String::from_utf8_lossy(&o.stdout).trim().to_owned());
                check_sgdisk(&dev.0, &case, 4096)?;
            }
            _ => eprintln!("SKIP: no 4K loop device; sgdisk not run on 4K images (fdisk -b 4096 was)"),
        }
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

#[test]
fn deterministic_bytes() -> R {
    if !have("cmp") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let case = &cases()[1];
    let mut paths = Vec::new();
    for i in 0..2 {
        let v = TalosVersion::parse(case.version);
        let size = image_disk_size(case.profile_size, v, case.bootloader);
        let gpt = DiskLayout::new(v, case.bootloader, size, 512).gpt()?;
        let mut img = SparseImage::new(size);
        gpt.add_to(&mut img, None)?;
        // insertion order of the values must not matter
        let mut kv = vec![(0x0e, b"x".to_vec()), (0x0c, b"y".to_vec())];
        if i == 1 {
            kv.reverse();
        }
        let values: BTreeMap<u8, Vec<u8>> = kv.into_iter().collect();
        add_meta(&mut img, &gpt, &values)?;
        let path = dir.path().join(format!("d{i}.raw"));
        img.write_sparse_file(&mut File::create(&path)?)?;
        paths.push(path);
    }
    let a = paths[0].to_str().ok_or("path")?;
    let b = paths[1].to_str().ok_or("path")?;
    run("cmp", &[a, b])?;
    assert_eq!(std::fs::metadata(a)?.len(), 1246 * MIB);
    Ok(())
}
