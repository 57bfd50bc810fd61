//! One real boot: the generated amd64 kernel and initramfs in QEMU (TCG), with the `/init`
//! report read from the serial console. Needs the real boot parts (`scripts/fetch-boot-parts`)
//! and `qemu-system-x86_64`; without them the test is skipped — unless FACTORY_REQUIRE_BOOT=1,
//! which turns a missing part into a failure (CI sets it so the boot is never silently lost).

mod common;

use std::process::Command;

use common::{extract, generated, rootfs};
use stand_in_release::REPORT_MARKER;

fn boot_required() -> bool {
    std::env::var("FACTORY_REQUIRE_BOOT").is_ok_and(|v| v == "1")
}

/// `Some(reason)` when the boot cannot run here.
fn missing_prerequisite(bootable: bool) -> Option<String> {
    if !bootable {
        return Some("no real boot parts (run scripts/fetch-boot-parts)".to_owned());
    }
    let qemu = Command::new("qemu-system-x86_64").arg("--version").output();
    if !qemu.is_ok_and(|o| o.status.success()) {
        return Some("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)".to_owned());
    }
    None
}

fn boot(tag: &str) {
    let g = generated();
    if let Some(reason) = missing_prerequisite(g.summary.bootable) {
        assert!(
            !boot_required(),
            "FACTORY_REQUIRE_BOOT=1 but the boot cannot run: {reason}"
        );
        eprintln!("SKIPPED boot of {tag}: {reason}");
        return;
    }
    let extracted = extract(g.path(), "siderolabs/imager", tag, "amd64");
    let dir = rootfs(&extracted).join("usr/install/amd64");
    let append =
        "console=ttyS0 panic=-1 talos.platform=metal talos.environment=http_proxy=http://10.0.2.2:3128";
    let output = Command::new("timeout")
        .arg("120")
        .arg("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-nographic",
            "-no-reboot",
            "-m",
            "512",
            "-kernel",
        ])
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initramfs.xz"))
        .args(["-append", append])
        .output()
        .expect("running qemu");
    let serial = String::from_utf8_lossy(&output.stdout);
    let report: Vec<&str> = serial
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with(REPORT_MARKER))
        .collect();
    let context = || {
        format!(
            "qemu exit {}, serial log tail:\n{}",
            output.status,
            tail(&serial, 40)
        )
    };
    let has = |line: &str| report.iter().any(|l| *l == format!("{REPORT_MARKER} {line}"));
    assert!(
        has(&format!("BEGIN talos={tag} arch=amd64")),
        "no report BEGIN; {}",
        context()
    );
    assert!(has(&format!("cmdline: {append}")), "{report:#?}");
    assert!(
        has("talos.environment: http_proxy=http://10.0.2.2:3128"),
        "{report:#?}"
    );
    assert!(has("extensions.yaml: (absent)"), "{report:#?}");
    assert!(
        report
            .iter()
            .any(|l| l.starts_with(&format!("{REPORT_MARKER} sqsh: rootfs.sqsh "))),
        "{report:#?}"
    );
    // No disk attached: the virtio modules load, nothing waits, no META partition.
    assert!(has("meta: (absent)"), "{report:#?}");
    assert!(has("END"), "no report END; {}", context());
    assert!(
        output.status.success(),
        "QEMU did not power off cleanly; {}",
        context()
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[test]
fn amd64_payload_boots_with_a_zstd_initramfs() {
    boot("v1.12.1");
}

#[test]
fn amd64_payload_boots_with_an_xz_initramfs() {
    boot("v1.7.6");
}
