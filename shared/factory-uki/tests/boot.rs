//! Heavy: a real UEFI boot of a UKI we build. OVMF (QEMU, TCG) boots `EFI/BOOT/BOOTX64.EFI` from
//! a FAT ESP made with mtools; the UKI is Debian's systemd-stub + Debian's kernel + a busybox
//! initramfs (the boot parts of scripts/fetch-boot-parts), whose `/init` prints the kernel
//! command line and kernel release on ttyS0 and powers off. Proves the stub finds and runs our
//! `.linux`, `.initrd` and `.cmdline`.
//!
//! Select it with `cargo nextest run -p factory-uki --test boot` (about 15–40 s). Needs
//! `qemu-system-x86 ovmf mtools systemd-boot-efi busybox-static` and the boot parts; skipped
//! without them unless FACTORY_REQUIRE_BOOT=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{missing_tool, run, skip, stub_path};
use factory_uki::{kernel_version, os_release, AssembleOptions, SectionData, Stub, TalosUki};

const MARKER: &str = "FACTORY-UKI-BOOT-REPORT";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

fn boot_parts_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("FACTORY_BOOT_PARTS").map(PathBuf::from),
        Some(workspace.join(".test-run/boot-parts")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|d| d.join("vmlinuz").is_file() && d.join("busybox").is_file())
}

/// A newc cpio archive (uncompressed; the kernel takes it as is).
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let header = format!(
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.ino += 1;
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

fn initramfs(busybox: &[u8]) -> Vec<u8> {
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo \"{MARKER} cmdline: $(/bin/busybox cat /proc/cmdline)\"\n\
         echo \"{MARKER} release: $(/bin/busybox uname -r)\"\n\
         echo \"{MARKER} END\"\n\
         /bin/busybox poweroff -f\n"
    );
    let mut cpio = Cpio::new();
    cpio.entry("bin", 0o040755, (0, 0), &[]);
    cpio.entry("dev", 0o040755, (0, 0), &[]);
    // Without a console node the kernel starts init with no stdout.
    cpio.entry("dev/console", 0o020600, (5, 1), &[]);
    cpio.entry("bin/busybox", 0o100755, (0, 0), busybox);
    cpio.entry("init", 0o100755, (0, 0), init.as_bytes());
    cpio.finish()
}

#[test]
fn uki_boots_with_ovmf_and_runs_its_embedded_cmdline_and_initrd() {
    let parts = boot_parts_dir();
    let stub = stub_path();
    let mut missing = None;
    if parts.is_none() {
        missing = Some("no boot parts (run scripts/fetch-boot-parts)".to_owned());
    }
    if stub.is_none() {
        missing = missing.or(Some(
            "no systemd-stub (apt-get install systemd-boot-efi)".to_owned(),
        ));
    }
    for file in [OVMF_CODE, OVMF_VARS] {
        if !Path::new(file).is_file() {
            missing = missing.or(Some(format!("{file} is missing (apt-get install ovmf)")));
        }
    }
    missing = missing
        .or_else(|| missing_tool("qemu-system-x86_64", &["--version"], "qemu-system-x86"))
        .or_else(|| missing_tool("mformat", &["--version"], "mtools"));
    if skip("UKI boot in QEMU/OVMF", missing) {
        return;
    }
    let (Some(parts), Some(stub)) = (parts, stub) else {
        return;
    };

    let dir = tempfile::tempdir().expect("tempdir");
    let stub = Stub::parse(std::fs::read(stub).expect("stub")).expect("parsing the stub");
    let kernel_path = parts.join("vmlinuz");
    let mut probe = std::fs::read(&kernel_path).expect("kernel");
    probe.truncate(factory_uki::KERNEL_VERSION_PROBE_LEN);
    let release = kernel_version(&probe).expect("the Debian kernel is a bzImage with a version");
    let initrd_path = dir.path().join("initramfs.cpio");
    std::fs::write(
        &initrd_path,
        initramfs(&std::fs::read(parts.join("busybox")).expect("busybox")),
    )
    .expect("writing the initramfs");

    let cmdline = "console=ttyS0 panic=-1 talos.platform=metal factory-uki.embedded=yes";
    let uki_path = dir.path().join("uki.efi");
    let file = std::fs::File::create(&uki_path).expect("uki");
    factory_uki::build(
        &stub,
        TalosUki {
            osrel: os_release("Talos", "v1.12.1"),
            cmdline: cmdline.to_owned(),
            uname: Some(release.clone()),
            splash: None,
            pcrpkey: None,
            kernel: SectionData::File(kernel_path),
            initrd: SectionData::File(initrd_path),
            profiles: Some(vec![]),
        },
        &AssembleOptions::default(),
        std::io::BufWriter::new(file),
    )
    .expect("building the UKI");

    // The ESP: FAT with the UKI as the removable-media boot path.
    let esp = dir.path().join("esp.img");
    std::fs::File::create(&esp)
        .and_then(|f| f.set_len(48 << 20))
        .expect("esp image");
    let img = esp.as_os_str();
    run("mformat", &["-i".as_ref(), img, "-F".as_ref(), "::".as_ref()]);
    run(
        "mmd",
        &["-i".as_ref(), img, "::/EFI".as_ref(), "::/EFI/BOOT".as_ref()],
    );
    run(
        "mcopy",
        &[
            "-i".as_ref(),
            img,
            uki_path.as_os_str(),
            "::/EFI/BOOT/BOOTX64.EFI".as_ref(),
        ],
    );
    let vars = dir.path().join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("copying the OVMF variables");

    let output = Command::new("timeout")
        .arg("240")
        .arg("qemu-system-x86_64")
        .args(["-accel", "tcg", "-machine", "q35", "-m", "512"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .arg("-drive")
        .arg(format!("if=virtio,format=raw,file={}", esp.display()))
        .output()
        .expect("running qemu");
    let serial = String::from_utf8_lossy(&output.stdout);
    let report: Vec<&str> = serial
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix(MARKER).map(str::trim))
        .collect();
    let tail: Vec<&str> = serial.lines().rev().take(40).collect();
    let context = format!(
        "qemu exit {}; serial tail:\n{}",
        output.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(report.contains(&"END"), "no report; {context}");
    assert!(
        report.contains(&format!("cmdline: {cmdline}").as_str()),
        "the kernel did not get the embedded .cmdline: {report:?}; {context}"
    );
    assert!(
        report.contains(&format!("release: {release}").as_str()),
        "{report:?}"
    );
    assert!(
        output.status.success(),
        "QEMU did not power off cleanly; {context}"
    );
    eprintln!("booted: {report:#?}");
}
