//! Heavy: the iPXE scripts of `factory_core::pxe` booted by Debian's 2019 iPXE (`ipxe-qemu`),
//! BIOS and UEFI (OVMF), in QEMU (TCG). A small HTTP server on loopback plays the image routes
//! during a cold build: the first kernel request gets `503` without `Retry-After` (only the
//! script's retry loop can recover), the first initramfs request `503 Retry-After: 1` (iPXE's
//! HTTP client retries by itself, without limit, within the same command); then the Debian
//! kernel and a busybox initramfs are served. A second server never gets ready (503 without
//! `Retry-After`): the script must give up after its attempts. A third serves the Go factory's
//! script, which UEFI iPXE boots without the initramfs.
//! The initramfs `/init` prints `/proc/cmdline` on ttyS0 and powers off.
//!
//! Shows, on the real firmware: `set …:int32`, `inc`, `iseq`, `sleep` and `goto` work after
//! `imgfree`; the loop retries; and on UEFI the kernel gets its initramfs only thanks to
//! `initrd=<name>` on the `kernel` line (the Go script's UEFI boot panics without it).
//!
//! Select with `cargo nextest run -p factory-uki --test pxe_boot` (~30–60 s). Needs
//! `qemu-system-x86 ipxe-qemu ovmf busybox-static` and the boot parts; skipped without them
//! unless FACTORY_REQUIRE_BOOT=1.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{missing_tool, skip};
use factory_core::arch::Arch;
use factory_core::pxe::{render_go_script, render_script, PxeScript, RetryPolicy};

const MARKER: &str = "FACTORY-PXE-BOOT-REPORT";
const SCHEMATIC: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
const CMDLINE: &str = "console=ttyS0 panic=-1 talos.platform=metal";
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

fn boot_parts_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    [
        std::env::var_os("FACTORY_BOOT_PARTS").map(PathBuf::from),
        Some(workspace.join(".test-run/boot-parts")),
    ]
    .into_iter()
    .flatten()
    .find(|d| d.join("vmlinuz").is_file() && d.join("busybox").is_file())
}

/// newc cpio with `/init`, busybox and a console node (uncompressed: the kernel sniffs it).
fn initramfs(busybox: &[u8]) -> Vec<u8> {
    let init = format!(
        "#!/bin/busybox sh\n\
         /bin/busybox mkdir -p /proc\n\
         /bin/busybox mount -t proc proc /proc\n\
         echo \"{MARKER} cmdline: $(/bin/busybox cat /proc/cmdline)\"\n\
         echo \"{MARKER} END\"\n\
         /bin/busybox poweroff -f\n"
    );
    let mut out = Vec::new();
    let mut ino = 1;
    let mut entry =
        |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
            let header =
                format!(
            "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, name.len() + 1, 0
        );
            ino += 1;
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(data);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        };
    entry("bin", 0o040755, (0, 0), &[]);
    entry("dev", 0o040755, (0, 0), &[]);
    entry("dev/console", 0o020600, (5, 1), &[]);
    entry("bin/busybox", 0o100755, (0, 0), busybox);
    entry("init", 0o100755, (0, 0), init.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// How the fake factory behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Our script; the first kernel and initramfs requests answer 503 (a cold cache).
    ColdCache,
    /// Our script; every image request answers 503 without `Retry-After` (a build that never
    /// finishes): the script must give up after its attempts.
    NeverReady,
    /// The Go factory's script, everything ready at once.
    GoScript,
}

/// What the fake factory serves, and the request log.
struct Site {
    mode: Mode,
    script: String,
    kernel: Vec<u8>,
    initramfs: Vec<u8>,
    hits: Mutex<HashMap<String, u32>>,
}

fn serve(site: Arc<Site>, listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let site = Arc::clone(&site);
        std::thread::spawn(move || {
            let _ = handle(&site, stream);
        });
    }
}

fn handle(site: &Site, mut stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let hit = {
        let mut hits = site.hits.lock().unwrap_or_else(|e| e.into_inner());
        let n = hits.entry(path.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let prefix = format!("/image/{SCHEMATIC}/v1.12.1/");
    let busy = |first: bool| match site.mode {
        Mode::ColdCache => first,
        Mode::NeverReady => true,
        Mode::GoScript => false,
    };
    let (status, extra, body): (&str, &str, &[u8]) = match path.strip_prefix(&prefix) {
        _ if path == "/script.ipxe" => ("200 OK", "", site.script.as_bytes()),
        Some(_) if site.mode == Mode::NeverReady => ("503 Service Unavailable", "", b"building\n"),
        Some("kernel-amd64") if busy(hit == 1) => ("503 Service Unavailable", "", b"building\n"),
        Some("kernel-amd64") => ("200 OK", "", &site.kernel),
        Some("initramfs-amd64.xz") if busy(hit == 1) => {
            ("503 Service Unavailable", "Retry-After: 1\r\n", b"building\n")
        }
        Some("initramfs-amd64.xz") => ("200 OK", "", &site.initramfs),
        _ => ("404 Not Found", "", b"404 page not found\n"),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    stream.flush()
}

/// What a QEMU run printed on its serial console, and whether it powered off by itself.
struct Run {
    serial: String,
    powered_off: bool,
}

/// Runs QEMU (our own child, killed by its handle) until it exits, `stop` matches a serial
/// line, or four minutes pass.
fn run_qemu(mut qemu: Command, stop: impl Fn(&str) -> bool) -> Run {
    let mut child = qemu
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("starting qemu");
    let stdout = child.stdout.take().expect("qemu stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
            if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    let mut serial = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let stopped = stop(line.trim_end());
                serial.push_str(&line);
                if stopped {
                    break;
                }
            }
            // Disconnected: QEMU closed its output (it exited).
            Err(_) => break,
        }
    }
    let powered_off = match child.try_wait() {
        Ok(Some(status)) => status.success(),
        _ => {
            // Still running: give a powering-off guest a moment, then kill our child.
            std::thread::sleep(std::time::Duration::from_secs(2));
            match child.try_wait() {
                Ok(Some(status)) => status.success(),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    false
                }
            }
        }
    };
    Run { serial, powered_off }
}

fn boot(firmware: &str, mode: Mode) {
    let parts = boot_parts_dir();
    let mut missing = parts
        .is_none()
        .then(|| "no boot parts (run scripts/fetch-boot-parts)".to_owned());
    let mut files = vec![IPXE_ROM];
    if firmware == "uefi" {
        files.extend([OVMF_CODE, OVMF_VARS]);
    }
    for file in files {
        if !Path::new(file).is_file() {
            missing = missing.or(Some(format!(
                "{file} is missing (apt-get install ipxe-qemu ovmf)"
            )));
        }
    }
    missing = missing.or_else(|| missing_tool("qemu-system-x86_64", &["--version"], "qemu-system-x86"));
    if skip(&format!("iPXE {firmware} boot ({mode:?})"), missing) {
        return;
    }
    let Some(parts) = parts else { return };

    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the HTTP server");
    let port = listener.local_addr().expect("address").port();
    let base_url = format!("http://10.0.2.2:{port}/");
    let request = PxeScript {
        base_url: &base_url,
        schematic: SCHEMATIC,
        version: "1.12.1",
        platform: "metal",
        arch: Arch::Amd64,
        secureboot: false,
        cmdline: CMDLINE,
    };
    let retry = RetryPolicy {
        attempts: if mode == Mode::NeverReady { 2 } else { 4 },
        pause_secs: 1,
    };
    let script = match mode {
        Mode::GoScript => render_go_script(&request),
        _ => render_script(&request, retry),
    };
    let site = Arc::new(Site {
        mode,
        script,
        kernel: std::fs::read(parts.join("vmlinuz")).expect("kernel"),
        initramfs: initramfs(&std::fs::read(parts.join("busybox")).expect("busybox")),
        hits: Mutex::new(HashMap::new()),
    });
    {
        let site = Arc::clone(&site);
        std::thread::spawn(move || serve(site, listener));
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .arg("-netdev")
        .arg(format!("user,id=n0,bootfile=http://10.0.2.2:{port}/script.ipxe"));
    if firmware == "uefi" {
        let vars = dir.path().join("OVMF_VARS.fd");
        std::fs::copy(OVMF_VARS, &vars).expect("copying the OVMF variables");
        qemu.args(["-machine", "q35"])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .args(["-device", "virtio-net-pci,netdev=n0,bootindex=1"]);
    } else {
        qemu.args(["-device", "virtio-net-pci,netdev=n0", "-boot", "n"]);
    }
    let gave_up = "Talos boot assets could not be downloaded after 2 attempts";
    let run = run_qemu(qemu, |line| {
        line.contains(&format!("{MARKER} END")) || line.contains(gave_up) || line.contains("Kernel panic")
    });
    let serial = &run.serial;
    let report: Vec<&str> = serial
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix(MARKER).map(str::trim))
        .collect();
    let hits = site.hits.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let hits_of = |file: &str| {
        hits.iter()
            .find(|(p, _)| p.ends_with(file))
            .map_or(0, |(_, n)| *n)
    };
    let tail: Vec<&str> = serial.lines().rev().take(40).collect();
    let context = format!(
        "requests {hits:?}; serial tail:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );

    match mode {
        Mode::ColdCache => {
            assert!(report.contains(&"END"), "no report; {context}");
            let cmdline = report
                .iter()
                .find_map(|l| l.strip_prefix("cmdline: "))
                .unwrap_or_else(|| panic!("no cmdline line; {context}"));
            assert!(
                cmdline.ends_with(&format!("initrd=initramfs-amd64.xz {CMDLINE}")),
                "{cmdline:?}; {context}"
            );
            // The kernel's 503 had no Retry-After: only the script loop fetched it again.
            assert_eq!(hits_of("/kernel-amd64"), 2, "{context}");
            assert!(
                serial.contains("Talos boot assets not ready (attempt 1 of 4)"),
                "no retry message; {context}"
            );
            // The initramfs' 503 carried `Retry-After`: iPXE re-sent it by itself, within the
            // same `initrd` command, so the script loop ran only once.
            assert_eq!(hits_of("/initramfs-amd64.xz"), 2, "{context}");
            assert!(!serial.contains("(attempt 2 of 4)"), "{context}");
            assert!(run.powered_off, "QEMU did not power off cleanly; {context}");
        }
        Mode::NeverReady => {
            assert!(serial.contains(gave_up), "the script did not give up; {context}");
            assert!(
                serial.contains("Talos boot assets not ready (attempt 1 of 2)"),
                "{context}"
            );
            assert_eq!(hits_of("/kernel-amd64"), 2, "exactly two attempts; {context}");
            assert!(report.is_empty(), "{context}");
        }
        Mode::GoScript => {
            // The Go script has no `initrd=`: UEFI iPXE of 2019 cannot hand the initramfs over.
            assert!(
                serial.contains("VFS: Unable to mount root fs"),
                "expected the initramfs-less panic; {context}"
            );
            assert_eq!(hits_of("/initramfs-amd64.xz"), 1, "{context}");
        }
    }
    eprintln!("{firmware} {mode:?}: requests {hits:?}, report {report:?}");
}

#[test]
fn ipxe_bios_boots_our_script_through_a_cold_cache() {
    boot("bios", Mode::ColdCache);
}

#[test]
fn ipxe_uefi_boots_our_script_through_a_cold_cache() {
    boot("uefi", Mode::ColdCache);
}

#[test]
fn ipxe_script_gives_up_after_its_attempts() {
    boot("bios", Mode::NeverReady);
}

#[test]
fn ipxe_uefi_loses_the_initramfs_with_the_go_script() {
    boot("uefi", Mode::GoScript);
}
