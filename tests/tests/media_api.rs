//! Disk image formats through the image route (cold cache, embedded store, stand-in release),
//! each checked by an independent tool: platform sizes and formats of talos-imager §3.2 as the
//! factory's path grammar selects them.
//!
//! * `oracle-amd64.qcow2`: `qemu-img info` (qcow2, 8 KiB clusters, the exact virtual size) and
//!   `qemu-img check`;
//! * `vmware-amd64.ova`: `tar -tvf` (members `disk.ovf`, `disk.mf`, `disk.vmdk` in that order),
//!   the manifest's SHA-256 lines, `qemu-img check`/`info` of the stream-optimized VMDK;
//! * `gcp-amd64.raw.tar.gz`: `tar -tzvf` (one member `disk.raw` of the image size);
//! * `azure-amd64.vhd.gz`: `gzip -t`, and the fixed VHD footer (`conectix`, the exact size) at
//!   the end of the decompressed stream;
//! * `metal-arm64.raw.zst` (arm64 defaults to the sd-boot layout: no GRUB): `zstd -t`,
//!   `sgdisk -v`/`-p` (EFI, META), `mdir` (`EFI/boot/BOOTAA64.efi`).
//!
//! Sizes for 1.12 amd64 (dual-boot): the platform's size + 1000 MiB + 1 MiB + 2000 MiB; arm64
//! (sd-boot): + 1000 MiB (talos-imager §3.2).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::disk::{gpt_names, gpt_partitions, tool, unzstd};

use crate::common::image::{download, Backend, ImageServer};
use crate::common::stand_in::VERSION;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

fn fetch(server: &ImageServer, id: &str, path: &str, dir: &Path) -> std::path::PathBuf {
    let reply = download(server.url(), &format!("/image/{id}/{VERSION}/{path}"));
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    let file = dir.join(path);
    std::fs::write(&file, &reply.body).unwrap();
    file
}

fn qemu_img_info(file: &Path, format: &str) -> serde_json::Value {
    let info = tool(
        "qemu-img",
        &["info", "--output=json", "-f", format, file.to_str().unwrap()],
        "qemu-utils",
    );
    serde_json::from_str(&info).unwrap()
}

#[test]
fn qcow2_ova_and_tar_gz() {
    let server = ImageServer::start(Backend::Fs);
    let id = server.post_schematic("customization: {}\n");
    let dir = tempfile::tempdir().unwrap();
    let size_8g = (8192 + 3001) * MIB;

    // Oracle: qcow2 with 8 KiB clusters.
    let qcow2 = fetch(&server, &id, "oracle-amd64.qcow2", dir.path());
    let info = qemu_img_info(&qcow2, "qcow2");
    assert_eq!(info["virtual-size"], size_8g, "{info}");
    assert_eq!(info["cluster-size"], 8192, "{info}");
    tool(
        "qemu-img",
        &["check", "-f", "qcow2", qcow2.to_str().unwrap()],
        "qemu-utils",
    );

    // VMware: OVA = OVF, manifest, stream-optimized VMDK.
    let ova = fetch(&server, &id, "vmware-amd64.ova", dir.path());
    let listing = tool("tar", &["-tvf", ova.to_str().unwrap()], "tar");
    let names: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(names, ["disk.ovf", "disk.mf", "disk.vmdk"], "{listing}");
    let unpacked = dir.path().join("ova");
    std::fs::create_dir(&unpacked).unwrap();
    tool(
        "tar",
        &["-xf", ova.to_str().unwrap(), "-C", unpacked.to_str().unwrap()],
        "tar",
    );
    let manifest = std::fs::read_to_string(unpacked.join("disk.mf")).unwrap();
    for member in ["disk.vmdk", "disk.ovf"] {
        let digest = hex::encode(Sha256::digest(std::fs::read(unpacked.join(member)).unwrap()));
        assert!(
            manifest.contains(&format!("SHA256({member})= {digest}")),
            "{member}: {manifest}"
        );
    }
    let vmdk = unpacked.join("disk.vmdk");
    let info = qemu_img_info(&vmdk, "vmdk");
    assert_eq!(info["virtual-size"], size_8g, "{info}");
    assert_eq!(
        info["format-specific"]["data"]["create-type"], "streamOptimized",
        "{info}"
    );
    tool(
        "qemu-img",
        &["check", "-f", "vmdk", vmdk.to_str().unwrap()],
        "qemu-utils",
    );

    // GCP: a gzip-compressed tar with the single member disk.raw.
    let tgz = fetch(&server, &id, "gcp-amd64.raw.tar.gz", dir.path());
    let listing = tool("tar", &["-tzvf", tgz.to_str().unwrap()], "tar");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 1, "{listing}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields.last(), Some(&"disk.raw"), "{listing}");
    assert!(fields.contains(&size_8g.to_string().as_str()), "{listing}");
}

#[test]
fn fixed_vhd_gz() {
    let server = ImageServer::start(Backend::Fs);
    let id = server.post_schematic("customization: {}\n");
    let dir = tempfile::tempdir().unwrap();
    let vhd = fetch(&server, &id, "azure-amd64.vhd.gz", dir.path());
    tool("gzip", &["-t", vhd.to_str().unwrap()], "gzip");
    // The last 512 bytes of the stream: the fixed VHD footer, after exactly the image's bytes.
    let mut gunzip = Command::new("gzip")
        .args(["-dc", vhd.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = gunzip.stdout.take().unwrap();
    let mut total = 0u64;
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 512 {
            tail.drain(..tail.len() - 512);
        }
    }
    assert!(gunzip.wait().unwrap().success());
    let image = (8192 + 3001) * MIB;
    assert_eq!(total, image + 512);
    assert_eq!(&tail[..8], b"conectix");
    // Current size (offset 48) and disk type fixed (2, offset 60), big-endian.
    assert_eq!(u64::from_be_bytes(tail[48..56].try_into().unwrap()), image);
    assert_eq!(u32::from_be_bytes(tail[60..64].try_into().unwrap()), 2);
}

#[test]
fn arm64_sd_boot_raw_zst() {
    let server = ImageServer::start(Backend::Fs);
    let id = server.post_schematic("customization: {}\n");
    let dir = tempfile::tempdir().unwrap();
    let zst = fetch(&server, &id, "metal-arm64.raw.zst", dir.path());
    let raw = unzstd(&zst);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), (1246 + 1000) * MIB);
    assert_eq!(gpt_names(&raw), ["EFI", "META"]);
    let parts = gpt_partitions(&raw);
    let raw = raw.to_str().unwrap();
    // The ESP at its start sector (512-byte sectors): systemd-boot for arm64 and the UKI.
    let start: u64 = parts[0][1].parse().unwrap();
    let esp = format!("{raw}@@{}", start * 512);
    let listing = tool("mdir", &["-/", "-b", "-i", &esp, "::"], "mtools");
    assert!(listing.contains("/EFI/boot/BOOTAA64.efi"), "{listing}");
    assert!(
        listing.contains(&format!("/EFI/Linux/Talos-{VERSION}.efi")),
        "{listing}"
    );
}
