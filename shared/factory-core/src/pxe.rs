//! The iPXE script of `GET /pxe/{schematic}/{version}/{platform}-{arch}[-secureboot]` (spec §7):
//! path parsing with the Go factory's errors, and the script text.
//!
//! # How the script differs from the Go factory's, and why
//!
//! The Go factory serves (standard and SecureBoot templates):
//!
//! ```text
//! #!ipxe
//!
//! imgfree
//! kernel <base>/image/<id>/<v>/kernel-<arch> <cmdline>
//! initrd <base>/image/<id>/<v>/initramfs-<arch>.xz
//! boot
//! ```
//!
//! ```text
//! #!ipxe
//!
//! imgfree
//! kernel <base>/image/<id>/<v>/<platform>-<arch>-secureboot-uki.efi <cmdline>
//! boot
//! ```
//!
//! ([`render_go_script`] reproduces them byte for byte). Ours ([`render_script`]) keeps the
//! same URLs and command line, and adds two things:
//!
//! 1. **`initrd=initramfs-<arch>.xz` on the `kernel` line** (standard script only). UEFI builds
//!    of iPXE older than the LoadFile2 initrd protocol (such as Debian's `ipxe-qemu`, a 2019
//!    snapshot, and much firmware in the field) hand the initramfs to the kernel's EFI stub only
//!    as a file of iPXE's virtual filesystem, which the stub opens when the command line names
//!    it: without the argument the kernel boots without its initramfs and panics ("VFS: Unable
//!    to mount root fs"). The name is the image name iPXE gives the download, the last segment
//!    of its URL. BIOS iPXE and kernels loaded by newer iPXE (LoadFile2) ignore the argument; it
//!    shows up in `/proc/cmdline`, where Talos ignores it. The SecureBoot script boots a UKI,
//!    whose initramfs is inside it, so it gets no such argument.
//! 2. **Retries on a cold cache.** The image route answers `503` with `Retry-After` while an
//!    asset is being built (and a gateway may answer `502`/`504` or drop the connection during a
//!    long build). The Go script fails at the first error. Ours wraps the downloads in a loop:
//!    on any failed `kernel`/`initrd` it counts the attempt, prints a line, `sleep`s
//!    [`RetryPolicy::pause_secs`] and starts again from `imgfree` (so no half-fetched image is
//!    kept), up to [`RetryPolicy::attempts`] attempts, then `exit 1` so the firmware moves on to
//!    its next boot option instead of looping forever. A failing `boot` is not retried: the
//!    images were fetched, and fetching them again would not change the outcome.
//!
//!    Note that iPXE's HTTP client (2017 on, Debian's build included) itself re-sends any
//!    request answered with a `Retry-After` header, after that many seconds and *without a
//!    limit*, inside a single `kernel`/`initrd` command: our `503 Retry-After` while building is
//!    therefore waited out by iPXE, and the script loop (and its bound) takes over for answers
//!    without the header: a failed build (`400`/`500`), gateway errors (`502`/`504`), dropped
//!    connections, iPXE builds without that support. A build that never finishes and keeps
//!    answering `503 Retry-After` keeps iPXE waiting; the pipeline's build failure ends it.
//!
//! Every command used (`set` with a typed `int32`, `inc`, `iseq`, `goto` after `imgfree`,
//! `sleep`, `echo`, `exit`) works in Debian's 2019 `ipxe-qemu` build, BIOS and UEFI:
//! `shared/factory-uki/tests/pxe_boot.rs` boots these scripts there in QEMU against a server
//! that answers 503 first (the loop retries, the kernel gets the initramfs), one that never
//! becomes ready (the script gives up after its attempts), and shows the Go script losing the
//! initramfs on UEFI. (On UEFI, iPXE also puts the image name first on the command line,
//! `kernel-amd64 initrd=… talos.platform=…`, with either script.)
//!
//! The command line is copied verbatim, like Go does: iPXE expands `${…}` settings in it (users
//! rely on that, e.g. `talos.config=…?uuid=${uuid}`); only line breaks, which would end the
//! `kernel` line early, become blanks.

use crate::arch::Arch;
use crate::profile::{parse_platform_arch, PathError, PlatformArch};

/// How often and how patiently the script retries failed downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Download attempts before giving up (at least 1).
    pub attempts: u32,
    /// Seconds between attempts.
    pub pause_secs: u32,
}

impl Default for RetryPolicy {
    /// 30 attempts, 10 s apart: with the image route's own wait of up to 20 s per request,
    /// about a quarter of an hour, enough for a cold build of kernel and initramfs.
    fn default() -> Self {
        Self {
            attempts: 30,
            pause_secs: 10,
        }
    }
}

/// What a PXE script points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PxeScript<'a> {
    /// Where iPXE reaches the image routes: the external PXE URL (defaults to the external
    /// URL), e.g. `https://factory.example.com/` or `http://10.0.2.2:8080/prefix`. A query
    /// (`?token=…`) is kept on every generated URL.
    pub base_url: &'a str,
    /// The schematic ID as requested.
    pub schematic: &'a str,
    /// The version as requested; a missing `v` is added (`1.12.1` → `v1.12.1`), as Go does.
    pub version: &'a str,
    pub platform: &'a str,
    pub arch: Arch,
    pub secureboot: bool,
    /// The kernel command line (the `cmdline-<platform>-<arch>[-secureboot]` asset).
    pub cmdline: &'a str,
}

/// Parses the `{platform}-{arch}[-secureboot]` segment exactly as the Go factory does (it
/// parses `cmdline-<segment>` as an image path): `metal-amd64`, `metal-x86_64` (→ amd64),
/// `digital-ocean-amd64`, `metal-amd64-secureboot`. Errors are Go's texts
/// (`invalid architecture: "aarch64"`, `invalid platform-arch: "metal"`); the HTTP layer
/// prefixes them with `error parsing profile from path: ` and answers 400.
pub fn parse_pxe_path(segment: &str) -> Result<PlatformArch, PathError> {
    parse_platform_arch(segment)
}

/// The script we serve (see the module documentation for how and why it differs from Go's).
pub fn render_script(script: &PxeScript<'_>, retry: RetryPolicy) -> String {
    let attempts = retry.attempts.max(1);
    let pause = retry.pause_secs;
    let cmdline = one_line(script.cmdline);
    let arch = script.arch.as_str();
    let mut out = String::from("#!ipxe\n\n");
    out.push_str("set talos-attempt:int32 0\n");
    out.push_str(":talos-retry\n");
    out.push_str("imgfree\n");
    if script.secureboot {
        let uki = image_url(script, &format!("{}-{arch}-secureboot-uki.efi", script.platform));
        out.push_str(&format!("kernel {uki} {cmdline} || goto talos-wait\n"));
    } else {
        let initramfs_name = format!("initramfs-{arch}.xz");
        let kernel = image_url(script, &format!("kernel-{arch}"));
        let initramfs = image_url(script, &initramfs_name);
        out.push_str(&format!(
            "kernel {kernel} initrd={initramfs_name} {cmdline} || goto talos-wait\n"
        ));
        out.push_str(&format!("initrd {initramfs} || goto talos-wait\n"));
    }
    out.push_str("boot\n");
    out.push_str(":talos-wait\n");
    out.push_str("inc talos-attempt\n");
    out.push_str(&format!(
        "iseq ${{talos-attempt}} {attempts} && goto talos-failed ||\n"
    ));
    out.push_str(&format!(
        "echo Talos boot assets not ready (attempt ${{talos-attempt}} of {attempts}), retrying in {pause} s\n"
    ));
    out.push_str(&format!("sleep {pause}\n"));
    out.push_str("goto talos-retry\n");
    out.push_str(":talos-failed\n");
    out.push_str(&format!(
        "echo Talos boot assets could not be downloaded after {attempts} attempts\n"
    ));
    out.push_str("exit 1\n");
    out
}

/// The Go factory's script, byte for byte (for comparison and for clients that diff scripts).
pub fn render_go_script(script: &PxeScript<'_>) -> String {
    let arch = script.arch.as_str();
    if script.secureboot {
        let uki = image_url(script, &format!("{}-{arch}-secureboot-uki.efi", script.platform));
        format!("#!ipxe\n\nimgfree\nkernel {uki} {}\nboot\n", script.cmdline)
    } else {
        format!(
            "#!ipxe\n\nimgfree\nkernel {} {}\ninitrd {}\nboot\n",
            image_url(script, &format!("kernel-{arch}")),
            script.cmdline,
            image_url(script, &format!("initramfs-{arch}.xz")),
        )
    }
}

/// `<base>/image/<schematic>/<vVersion>/<file>`, joined like Go's `url.JoinPath`: one slash
/// between the parts whatever the base ends with, the base's query kept at the end, and each
/// segment percent-encoded where a path needs it.
fn image_url(script: &PxeScript<'_>, file: &str) -> String {
    let (base, query) = match script.base_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (script.base_url, None),
    };
    let version = if script.version.starts_with('v') {
        script.version.to_owned()
    } else {
        format!("v{}", script.version)
    };
    let mut url = base.trim_end_matches('/').to_owned();
    for segment in ["image", script.schematic, &version, file] {
        url.push('/');
        push_segment(&mut url, segment);
    }
    if let Some(query) = query {
        url.push('?');
        url.push_str(query);
    }
    url
}

/// Appends `segment`, percent-encoding everything but RFC 3986 unreserved characters and the
/// `+` of semver build metadata (Go leaves both alone in paths).
fn push_segment(url: &mut String, segment: &str) {
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+') {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The command line on one script line: CR and LF become blanks.
fn one_line(cmdline: &str) -> String {
    cmdline.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
    const CMDLINE: &str = "talos.platform=metal console=tty0 init_on_alloc=1 slab_nomerge pti=on consoleblank=0 nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1 module.sig_enforce=1";

    fn metal(secureboot: bool) -> PxeScript<'static> {
        PxeScript {
            base_url: "https://factory.example.com",
            schematic: ID,
            version: "1.12.1",
            platform: "metal",
            arch: Arch::Amd64,
            secureboot,
            cmdline: CMDLINE,
        }
    }

    #[test]
    fn go_script_is_the_spec_template() {
        assert_eq!(
            render_go_script(&metal(false)),
            format!(
                "#!ipxe\n\nimgfree\n\
                 kernel https://factory.example.com/image/{ID}/v1.12.1/kernel-amd64 {CMDLINE}\n\
                 initrd https://factory.example.com/image/{ID}/v1.12.1/initramfs-amd64.xz\n\
                 boot\n"
            )
        );
        assert_eq!(
            render_go_script(&metal(true)),
            format!(
                "#!ipxe\n\nimgfree\n\
                 kernel https://factory.example.com/image/{ID}/v1.12.1/metal-amd64-secureboot-uki.efi {CMDLINE}\n\
                 boot\n"
            )
        );
    }

    #[test]
    fn golden_standard_script() {
        let expected = format!(
            "#!ipxe\n\
             \n\
             set talos-attempt:int32 0\n\
             :talos-retry\n\
             imgfree\n\
             kernel https://factory.example.com/image/{ID}/v1.12.1/kernel-amd64 initrd=initramfs-amd64.xz {CMDLINE} || goto talos-wait\n\
             initrd https://factory.example.com/image/{ID}/v1.12.1/initramfs-amd64.xz || goto talos-wait\n\
             boot\n\
             :talos-wait\n\
             inc talos-attempt\n\
             iseq ${{talos-attempt}} 30 && goto talos-failed ||\n\
             echo Talos boot assets not ready (attempt ${{talos-attempt}} of 30), retrying in 10 s\n\
             sleep 10\n\
             goto talos-retry\n\
             :talos-failed\n\
             echo Talos boot assets could not be downloaded after 30 attempts\n\
             exit 1\n"
        );
        assert_eq!(render_script(&metal(false), RetryPolicy::default()), expected);
    }

    #[test]
    fn golden_secureboot_script() {
        let expected = format!(
            "#!ipxe\n\
             \n\
             set talos-attempt:int32 0\n\
             :talos-retry\n\
             imgfree\n\
             kernel https://factory.example.com/image/{ID}/v1.12.1/metal-amd64-secureboot-uki.efi {CMDLINE} lockdown=confidentiality || goto talos-wait\n\
             boot\n\
             :talos-wait\n\
             inc talos-attempt\n\
             iseq ${{talos-attempt}} 3 && goto talos-failed ||\n\
             echo Talos boot assets not ready (attempt ${{talos-attempt}} of 3), retrying in 5 s\n\
             sleep 5\n\
             goto talos-retry\n\
             :talos-failed\n\
             echo Talos boot assets could not be downloaded after 3 attempts\n\
             exit 1\n"
        );
        let cmdline = format!("{CMDLINE} lockdown=confidentiality");
        let script = PxeScript {
            cmdline: &cmdline,
            ..metal(true)
        };
        let retry = RetryPolicy {
            attempts: 3,
            pause_secs: 5,
        };
        assert_eq!(render_script(&script, retry), expected);
    }

    #[test]
    fn our_script_carries_the_go_lines() {
        // Same URLs and command line as Go's; the kernel line only gains `initrd=`.
        for secureboot in [false, true] {
            let ours = render_script(&metal(secureboot), RetryPolicy::default());
            for line in render_go_script(&metal(secureboot)).lines() {
                let expected = match line.strip_prefix("kernel ") {
                    Some(rest) if !secureboot => {
                        let (url, cmdline) = rest.split_once(' ').expect("url and cmdline");
                        format!("kernel {url} initrd=initramfs-amd64.xz {cmdline} || goto talos-wait")
                    }
                    Some(_) => format!("{line} || goto talos-wait"),
                    None if line.starts_with("initrd ") => format!("{line} || goto talos-wait"),
                    None => line.to_owned(),
                };
                assert!(
                    ours.lines().any(|l| l == expected),
                    "missing {expected:?} in\n{ours}"
                );
            }
        }
    }

    #[test]
    fn arm64_and_aliases_use_the_canonical_arch() {
        let pa = parse_pxe_path("metal-x86_64").expect("alias");
        assert_eq!(pa.arch, Arch::Amd64);
        let script = PxeScript {
            arch: Arch::Arm64,
            ..metal(false)
        };
        let text = render_script(&script, RetryPolicy::default());
        assert!(text.contains("/kernel-arm64 initrd=initramfs-arm64.xz talos.platform=metal"));
        assert!(text.contains("/initramfs-arm64.xz || goto talos-wait\n"));
    }

    #[test]
    fn urls_join_like_go() {
        let with = |base_url: &'static str, version: &'static str| PxeScript {
            base_url,
            version,
            ..metal(false)
        };
        let kernel = |s: &PxeScript<'_>| image_url(s, "kernel-amd64");
        let tail = format!("image/{ID}/v1.12.1/kernel-amd64");
        assert_eq!(
            kernel(&with("http://10.0.2.2:8080", "v1.12.1")),
            format!("http://10.0.2.2:8080/{tail}")
        );
        assert_eq!(
            kernel(&with("http://10.0.2.2:8080/", "1.12.1")),
            format!("http://10.0.2.2:8080/{tail}")
        );
        assert_eq!(
            kernel(&with("https://h/prefix/", "v1.12.1")),
            format!("https://h/prefix/{tail}")
        );
        assert_eq!(
            kernel(&with("https://h/?token=abc", "v1.12.1")),
            format!("https://h/{tail}?token=abc")
        );
        assert_eq!(
            image_url(&with("https://h", "1.13.0-alpha.1+build.5"), "kernel-amd64"),
            format!("https://h/image/{ID}/v1.13.0-alpha.1+build.5/kernel-amd64")
        );
        let odd = PxeScript {
            platform: "a b/c",
            ..metal(true)
        };
        assert!(render_script(&odd, RetryPolicy::default())
            .contains("/v1.12.1/a%20b%2Fc-amd64-secureboot-uki.efi "));
    }

    #[test]
    fn line_breaks_in_the_cmdline_cannot_add_script_lines() {
        let script = PxeScript {
            cmdline: "a=1\nexit 0\r\nb=${uuid}",
            ..metal(false)
        };
        let text = render_script(&script, RetryPolicy::default());
        assert!(
            text.contains(" a=1 exit 0  b=${uuid} || goto talos-wait\n"),
            "{text}"
        );
        assert!(!text.lines().any(|l| l == "exit 0"));
    }

    #[test]
    fn at_least_one_attempt() {
        let text = render_script(
            &metal(false),
            RetryPolicy {
                attempts: 0,
                pause_secs: 1,
            },
        );
        assert!(text.contains("iseq ${talos-attempt} 1 && goto talos-failed ||\n"));
    }

    #[test]
    fn path_errors_are_gos() {
        let err = |s: &str| parse_pxe_path(s).expect_err(s).to_string();
        assert_eq!(err("metal-aarch64"), "invalid architecture: \"aarch64\"");
        assert_eq!(err("metal"), "invalid platform-arch: \"metal\"");
        assert_eq!(err("metal-amd64.iso"), "invalid architecture: \"amd64.iso\"");
        assert_eq!(err("metal-secureboot"), "invalid platform-arch: \"metal\"");
        let ok = |s: &str| parse_pxe_path(s).expect(s);
        assert_eq!(
            ok("metal-amd64-secureboot"),
            PlatformArch {
                platform: "metal".to_owned(),
                arch: Arch::Amd64,
                secureboot: true
            }
        );
        assert_eq!(ok("digital-ocean-amd64").platform, "digital-ocean");
        assert_eq!(ok("equinixMetal-i386").arch, Arch::Amd64);
        // Same answer as the image route's `cmdline-<segment>`, which is what Go parses.
        for segment in [
            "metal-amd64",
            "aws-arm64-secureboot",
            "metal",
            "metal-foo",
            "x-amd64-uki.efi",
        ] {
            let via_image = crate::profile::parse_path(&format!("cmdline-{segment}"))
                .map(|p| (p.platform, p.arch, p.secureboot));
            let via_pxe = parse_pxe_path(segment).map(|p| (p.platform, p.arch, p.secureboot));
            assert_eq!(via_image, via_pxe, "{segment}");
        }
    }
}
