//! Booting what the factory serves, for the heavy acceptance tests of issue 5 (`pxe_boot.rs`,
//! `uki_boot.rs`): the prerequisites (the real boot parts of `scripts/fetch-boot-parts`, QEMU,
//! firmware) and FACTORY_REQUIRE_BOOT; `image-factory-local` on LocalStack over a bootable
//! stand-in release at the address a QEMU guest reaches ([`GuestServer`]); QEMU (TCG, under
//! `timeout`) with OVMF; a FAT ESP made with mtools; and the report the stand-in release's
//! `/init` prints on the serial console (tools/stand-in-release/src/init_script.rs), with the
//! checks every boot of [`SCHEMATIC`] shares.
//!
//! QEMU's user networking shows the host's loopback to the guest as `10.0.2.2`: the server
//! listens on `127.0.0.1:<port>` and its external URL is `http://10.0.2.2:<port>/`, so the URLs
//! it hands out and its redirects are what the guest reaches. (The test itself talks to
//! `127.0.0.1:<port>`, mapping `10.0.2.2:<port>` there for redirects with `curl --connect-to`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use factory_disk::meta::{decode_adv, ADV_LENGTH, MAGIC1};
use factory_local::{Options, UpstreamChoice};
use factory_pipeline::BuildStats;
use stand_in_release::REPORT_MARKER;

use super::curl::{curl, Reply};
use super::local_server::LocalServerThread;
use super::stand_in::VERSION;

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Bound of one QEMU run (`timeout`), inside nextest's 300 s limit with the setup.
pub const BOOT_TIMEOUT_SECS: u64 = 200;

/// Two extensions of the stand-in catalog, two extra kernel args (`console=ttyS0` replaces the
/// default `console=tty0`, so that the kernel and `/init` print on the serial console QEMU
/// shows) and one META value.
pub const SCHEMATIC: &str =
    "customization:\n  extraKernelArgs:\n    - console=ttyS0\n    - net.ifnames=0\n  \
     meta:\n    - key: 10\n      value: '{\"externalIPs\":[\"1.2.3.4\"]}'\n  systemExtensions:\n    \
     officialExtensions:\n      - siderolabs/stand-in-firmware\n      - siderolabs/intel-ucode\n";

/// The `cmdline-metal-amd64` asset of [`SCHEMATIC`] at [`VERSION`].
pub const CMDLINE: &str =
    "talos.platform=metal console=ttyS0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 \
     nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1 \
     talos.environment=INSTALLER_META_BASE64=MHhhPXsiZXh0ZXJuYWxJUHMiOlsiMS4yLjMuNCJdfQ== net.ifnames=0";
/// What `INSTALLER_META_BASE64` in [`CMDLINE`] must decode to.
pub const META: &str = "0xa={\"externalIPs\":[\"1.2.3.4\"]}";

/// FACTORY_REQUIRE_BOOT=1 (scripts/test): a boot that cannot run fails instead of skipping.
pub fn boot_required() -> bool {
    std::env::var("FACTORY_REQUIRE_BOOT").is_ok_and(|v| v == "1")
}

/// The complete boot parts of scripts/fetch-boot-parts, if present.
pub fn boot_parts_dir() -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [
        std::env::var_os("FACTORY_BOOT_PARTS").map(PathBuf::from),
        Some(workspace.join(".test-run/boot-parts")),
    ]
    .into_iter()
    .flatten()
    .find(|d| {
        [
            "vmlinuz",
            "busybox",
            "kernel-release",
            "systemd-bootx64.efi",
            "linuxx64.efi.stub",
            // Fetched since the `/init` reports META; an older directory lacks them.
            "modules/kernel/drivers/block/virtio_blk.ko",
        ]
        .iter()
        .all(|f| d.join(f).is_file())
    })
}

/// Why a boot cannot run here, if it cannot: no boot parts, a missing `(file, Debian package)`,
/// or a `(command, Debian package)` that does not run with `--version`. QEMU is always needed.
pub fn missing_prerequisite(files: &[(&str, &str)], tools: &[(&str, &str)]) -> Option<String> {
    if boot_parts_dir().is_none() {
        return Some("no real boot parts (run scripts/fetch-boot-parts)".to_owned());
    }
    if let Some((file, package)) = files.iter().find(|(f, _)| !Path::new(f).is_file()) {
        return Some(format!("{file} is missing (apt-get install {package})"));
    }
    let qemu = [("qemu-system-x86_64", "qemu-system-x86")];
    let broken = qemu.iter().chain(tools).find(|(tool, _)| {
        !Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    broken.map(|(tool, package)| format!("{tool} is not installed (apt-get install {package})"))
}

/// Whether to skip the boot `what` because of `missing` (see [`missing_prerequisite`]); with
/// FACTORY_REQUIRE_BOOT=1 a missing prerequisite fails the test instead.
pub fn skip(what: &str, missing: Option<String>) -> bool {
    let Some(reason) = missing else {
        return false;
    };
    assert!(
        !boot_required(),
        "FACTORY_REQUIRE_BOOT=1 but the {what} cannot run: {reason}"
    );
    eprintln!("SKIPPED {what}: {reason}");
    true
}

/// `image-factory-local` on the LocalStack backend (S3 under a fresh prefix, a fresh build
/// queue: every cache cold) over a stand-in release generated with the real boot parts,
/// listening on `127.0.0.1:<port>` with the external URL `http://10.0.2.2:<port>/`; stopped
/// and cleaned up on drop.
#[derive(Debug)]
pub struct GuestServer {
    // Dropped in this order: the server stops before its release and data go away.
    server: Guest,
    port: u16,
    stats: Option<Arc<BuildStats>>,
    generated: Duration,
    _release: tempfile::TempDir,
    _data: tempfile::TempDir,
}

/// The local server, or the serverless stack of template.yaml.
#[derive(Debug)]
enum Guest {
    Local(LocalServerThread),
    Stack(Box<super::stack::StackThread>),
}

impl GuestServer {
    /// Generates the release with the boot parts in `parts` and starts the server; `name`
    /// (under 40 characters) starts its store prefix and queue name.
    pub fn start(parts: PathBuf, name: &str) -> Self {
        let (release, generated) = Self::release(parts);

        let data = tempfile::tempdir().expect("tempdir");
        let mut options = Options::with_data_dir(data.path().join("data"));
        options.upstream = UpstreamChoice::Layout(release.path().to_owned());
        options.upstream_cosign_key = Some(release.path().join("cosign.pub"));
        let bucket = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async { super::test_bucket(&super::s3_client().await).await });
        options.aws = true;
        options.bucket = bucket;
        options.prefix = format!("{}/", super::unique_name(name));
        options.queue = super::unique_name(name);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("address").port();
        options.external_url = Some(format!("http://10.0.2.2:{port}/"));
        let server = LocalServerThread::start_on(listener, options, true, Duration::from_secs(120));
        let stats = server
            .build_stats()
            .expect("a builder (the release catalog is on)");
        Self {
            server: Guest::Local(server),
            port,
            stats: Some(stats),
            generated,
            _release: release,
            _data: data,
        }
    }

    /// As [`Self::start`], but the serverless stack of template.yaml serves (its own bucket
    /// and queues on LocalStack, every cache cold), its CDN reached by the guest at
    /// `10.0.2.2:<port>`.
    pub fn start_stack(parts: PathBuf) -> Self {
        let (release, generated) = Self::release(parts);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("address").port();
        let stack = super::stack::StackThread::start_on(
            release.path(),
            &release.path().join("cosign.pub"),
            &[],
            Some((listener, format!("10.0.2.2:{port}"))),
        );
        Self {
            server: Guest::Stack(Box::new(stack)),
            port,
            stats: None,
            generated,
            _release: release,
            _data: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The stand-in release with the real boot parts in `parts`; how long generating it took.
    fn release(parts: PathBuf) -> (tempfile::TempDir, Duration) {
        super::localstack_endpoint(); // Fails at once, with instructions, when unset.
        let started = Instant::now();
        let release = tempfile::tempdir().expect("tempdir");
        let summary = stand_in_release::generate(&stand_in_release::GenerateOptions {
            out: release.path().to_owned(),
            boot_parts: stand_in_release::BootPartsSource::Dir(parts),
            key_pem: None,
        })
        .expect("generate the stand-in release");
        assert!(summary.bootable, "{}", summary.payload);
        (release, started.elapsed())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the guest reaches the server (no trailing slash); the server's external URL.
    pub fn guest_url(&self) -> String {
        format!("http://10.0.2.2:{}", self.port)
    }

    /// How long generating the release took.
    pub fn generated(&self) -> Duration {
        self.generated
    }

    /// Assets the server's builder assembled and published so far.
    pub fn built(&self) -> u64 {
        match (&self.stats, &self.server) {
            (Some(stats), _) => stats.built(),
            (None, Guest::Stack(stack)) => stack.built(),
            (None, Guest::Local(_)) => 0,
        }
    }

    /// Waits (bounded) until the builder counted `n` published builds; the count then.
    pub fn built_at_least(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.built() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.built()
    }

    /// `curl` with the guest's address of the server mapped to loopback (redirects point there).
    pub fn curl(&self, args: &[&str], path: &str) -> Reply {
        let connect_to = format!("10.0.2.2:{0}:127.0.0.1:{0}", self.port);
        let mut all = vec!["--connect-to", &connect_to];
        all.extend_from_slice(args);
        curl(&format!("http://127.0.0.1:{}", self.port), &all, path)
    }

    /// A download as a client does it: follow the redirect, retry while it builds (503).
    pub fn download(&self, path: &str) -> Reply {
        self.curl(&["-L", "--retry", "20", "--retry-all-errors"], path)
    }

    /// Stores a schematic through the API; its ID.
    pub fn post_schematic(&self, yaml: &str) -> String {
        let posted = self.curl(&["-X", "POST", "--data-binary", yaml], "/schematics");
        assert_eq!(posted.status, 201, "{}", posted.text());
        posted.json()["id"].as_str().expect("id").to_owned()
    }
}

/// `timeout --kill-after=10 <BOOT_TIMEOUT_SECS> qemu-system-x86_64 -accel tcg -m 1024
/// -nographic -no-reboot`: add the firmware, disks and network.
pub fn qemu() -> Command {
    let mut qemu = Command::new("timeout");
    qemu.args([
        "--kill-after=10",
        &BOOT_TIMEOUT_SECS.to_string(),
        "qemu-system-x86_64",
    ])
    .args(["-accel", "tcg", "-m", "1024", "-nographic", "-no-reboot"]);
    qemu
}

/// UEFI: the `q35` machine with OVMF, its variables a writable copy in `dir`.
pub fn with_ovmf(qemu: &mut Command, dir: &Path) {
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("copying the OVMF variables");
    qemu.args(["-machine", "q35"])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()));
}

/// A FAT ESP image at `image` (made with mtools: `mformat -F`, `mmd`, `mcopy`) holding `efi` as
/// the removable-media boot path `EFI/BOOT/BOOTX64.EFI`, which OVMF boots without any boot entry.
pub fn esp_image(efi: &Path, image: &Path) {
    let size = std::fs::metadata(efi).expect("the EFI binary").len();
    // FAT32 (`-F`) wants at least ~33 MiB; room for the file and the FAT.
    let bytes = (size + (32 << 20)).max(64 << 20).next_multiple_of(1 << 20);
    std::fs::File::create(image)
        .and_then(|f| f.set_len(bytes))
        .expect("creating the ESP image");
    let mtools = |tool: &str, args: &[&std::ffi::OsStr]| {
        let output = Command::new(tool)
            .arg("-i")
            .arg(image)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (apt-get install mtools)"));
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    };
    mtools("mformat", &["-F".as_ref(), "::".as_ref()]);
    mtools("mmd", &["::/EFI".as_ref(), "::/EFI/BOOT".as_ref()]);
    mtools("mcopy", &[efi.as_os_str(), "::/EFI/BOOT/BOOTX64.EFI".as_ref()]);
}

/// A finished QEMU run and the report the stand-in `/init` printed in it.
#[derive(Debug)]
pub struct BootRun {
    /// `timeout`'s exit status (QEMU's own when it finished in time).
    pub status: ExitStatus,
    /// The serial console, `\r` removed.
    pub serial: String,
    /// The report lines, without the marker.
    pub report: Vec<String>,
    pub elapsed: Duration,
}

impl BootRun {
    /// Runs `qemu` (see [`qemu`]) to its end and collects the report.
    pub fn run(qemu: &mut Command) -> Self {
        let started = Instant::now();
        let output = qemu.output().expect("running qemu");
        let elapsed = started.elapsed();
        let serial = String::from_utf8_lossy(&output.stdout).replace('\r', "");
        let report = serial
            .lines()
            .filter_map(|l| l.strip_prefix(REPORT_MARKER).map(str::trim_end))
            .map(|l| l.strip_prefix(' ').unwrap_or(l).to_owned())
            .collect();
        Self {
            status: output.status,
            serial,
            report,
            elapsed,
        }
    }

    /// The report has exactly this line.
    pub fn has(&self, line: &str) -> bool {
        self.report.iter().any(|l| l == line)
    }

    /// Every report line starting with `prefix`, without it.
    pub fn values(&self, prefix: &str) -> Vec<&str> {
        self.report
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    }

    /// The first report line starting with `prefix`, without it.
    pub fn value(&self, prefix: &str) -> Option<&str> {
        self.values(prefix).into_iter().next()
    }

    /// For failure messages: the exit status, the builds so far and the serial console's end.
    pub fn context(&self, server: &GuestServer) -> String {
        let lines: Vec<&str> = self.serial.lines().collect();
        format!(
            "qemu (under timeout) exit {}; built {}; serial tail:\n{}",
            self.status,
            server.built(),
            lines[lines.len().saturating_sub(60)..].join("\n")
        )
    }

    /// The report is complete (`BEGIN` for [`VERSION`] on amd64, `END`) and the guest powered
    /// off by itself.
    pub fn assert_completed(&self, server: &GuestServer) {
        let context = self.context(server);
        assert!(
            self.has(&format!("BEGIN talos={VERSION} arch=amd64")),
            "no report; {context}"
        );
        assert!(self.has("END"), "the report did not end; {context}");
        assert!(
            self.status.success(),
            "QEMU did not power off by itself; {context}"
        );
    }

    /// The META partition the `/init` found (by its GPT label `META`) on the guest's disks,
    /// `None` when it reported `meta: (absent)` (ISO, PXE, UKI boots; disks without META).
    /// Panics when the report has no `meta:` line, or the partition's first Talos ADV copy is
    /// damaged (see [`MetaPartition`]).
    pub fn meta(&self) -> Option<MetaPartition> {
        let line = self
            .value("meta: ")
            .unwrap_or_else(|| panic!("no meta line in the report: {:#?}", self.report));
        if line == "(absent)" {
            return None;
        }
        let (device, head) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("meta line without data: {line:?}"));
        let head = hex::decode(head).unwrap_or_else(|e| panic!("meta: {e}: {line:?}"));
        let tail = self
            .value("meta-tail: ")
            .unwrap_or_else(|| panic!("no meta-tail line in the report: {:#?}", self.report));
        let tail = hex::decode(tail).unwrap_or_else(|e| panic!("meta-tail: {e}: {tail:?}"));
        Some(MetaPartition::decode(device, &head, &tail))
    }

    /// The kernel command line the guest got.
    pub fn cmdline(&self) -> &str {
        self.value("cmdline: ")
            .unwrap_or_else(|| panic!("no cmdline in the report: {:#?}", self.report))
    }

    /// The `talos.environment` arguments of the command line (`(none)` when there are none).
    pub fn environment(&self) -> Vec<&str> {
        self.values("talos.environment: ")
    }

    /// The initramfs of the image route for [`SCHEMATIC`]: its two extensions and the
    /// schematic's in `extensions.yaml`, in that order (the schematic's with `id` as version and
    /// the server as author), each with its squashfs layer; the firmware; both Intel microcode
    /// blobs in the early archive.
    pub fn check_schematic_extensions(&self, server: &GuestServer, id: &str) {
        let yaml: Vec<&str> = self
            .values("extensions.yaml: ")
            .into_iter()
            .map(str::trim)
            .collect();
        let at = |line: &str| {
            yaml.iter()
                .position(|l| l.trim_start_matches("- ") == line)
                .unwrap_or_else(|| panic!("{line:?} is not in extensions.yaml: {yaml:#?}"))
        };
        assert!(at("image: 0.sqsh") < at("name: stand-in-firmware"), "{yaml:#?}");
        assert!(at("name: stand-in-firmware") < at("image: 1.sqsh"), "{yaml:#?}");
        assert!(at("image: 1.sqsh") < at("name: intel-ucode"), "{yaml:#?}");
        assert!(at("name: intel-ucode") < at("image: 2.sqsh"), "{yaml:#?}");
        assert!(at("image: 2.sqsh") < at("name: schematic"), "{yaml:#?}");
        at(&format!("version: {id}"));
        at(&format!("author: Image Factory ({}/)", server.guest_url()));
        let sized = |prefix: &str, name: &str| {
            let line = self
                .values(prefix)
                .into_iter()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {prefix}{name} in the report: {:#?}", self.report));
            line.parse::<u64>()
                .unwrap_or_else(|e| panic!("{prefix}{name} {line:?}: {e}"))
        };
        for layer in ["rootfs.sqsh", "0.sqsh", "1.sqsh", "2.sqsh"] {
            assert!(sized("sqsh: ", layer) > 0, "{layer} is empty");
        }
        assert!(sized("firmware: ", "usr/lib/firmware/stand-in/stand-in-fw.bin") > 0);
        assert_eq!(
            sized("firmware: ", "kernel/x86/microcode/GenuineIntel.bin"),
            2 * 2048,
            "both Intel microcode blobs, in the early archive"
        );
    }
}

/// What the `/init` reported of a META partition: its first 4 KiB (`meta:`) and the last 36
/// bytes of the first 256 KiB Talos ADV copy (`meta-tail:`: SHA-256 and magic2), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaPartition {
    /// The partition's kernel name, e.g. `vda4`.
    pub device: String,
    /// The values of the first ADV copy; `None` when the partition is all zero there (an image
    /// without META values leaves it so).
    pub values: Option<BTreeMap<u8, Vec<u8>>>,
}

impl MetaPartition {
    /// Size of the head the report shows.
    pub const HEAD: usize = 4096;
    /// Size of the tail the report shows (32-byte SHA-256 + u32 magic2).
    pub const TAIL: usize = 36;

    /// Decodes the reported `head` and `tail` of `device` with `factory_disk::meta`: the report
    /// leaves out bytes 4096..262108 of the copy, which are zero fill whenever the records end
    /// in the head, so the whole copy is rebuilt that way and both magics and the checksum are
    /// checked. Values that run past the head fail the checksum (and the test): keep test META
    /// under 4 KiB.
    pub fn decode(device: &str, head: &[u8], tail: &[u8]) -> Self {
        assert_eq!(head.len(), Self::HEAD, "meta head of {device}");
        assert_eq!(tail.len(), Self::TAIL, "meta-tail of {device}");
        let values = if head.iter().chain(tail).all(|&b| b == 0) {
            None
        } else {
            assert_eq!(
                head[..4],
                MAGIC1.to_be_bytes(),
                "no Talos ADV magic1 at the start of {device}"
            );
            let mut copy = vec![0u8; ADV_LENGTH];
            copy[..Self::HEAD].copy_from_slice(head);
            copy[ADV_LENGTH - Self::TAIL..].copy_from_slice(tail);
            Some(
                decode_adv(&copy)
                    .unwrap_or_else(|e| panic!("the first ADV copy of {device} (values past 4 KiB?): {e}")),
            )
        };
        Self {
            device: device.to_owned(),
            values,
        }
    }

    /// The value of `key`, if the ADV has it (`None` too when the partition is zero).
    pub fn get(&self, key: &u8) -> Option<&Vec<u8>> {
        self.values.as_ref()?.get(key)
    }

    /// The value of `key` as text, if the ADV has it.
    pub fn value(&self, key: u8) -> Option<String> {
        let value = self.values.as_ref()?.get(&key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }
}

/// Standard base64 (with padding), enough for the META payload.
pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut bits = 0u32;
    let mut count = 0;
    for c in text.bytes().take_while(|&c| c != b'=') {
        let value = ALPHABET
            .iter()
            .position(|&a| a == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}"));
        bits = (bits << 6) | u32::try_from(value).expect("6 bits");
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push(u8::try_from((bits >> count) & 0xff).expect("8 bits"));
        }
    }
    out
}
