//! The `/init` of the stand-in initramfs: a busybox shell script that prints one marked report
//! block on the console, then powers the machine off. Tests boot the amd64 payload in QEMU and
//! read the report from the serial log to see what the factory put into the initramfs.

use crate::oci::Arch;
use crate::versions::Release;

/// Prefix of every report line (`<MARKER> BEGIN ...`, `<MARKER> cmdline: ...`, `<MARKER> END`).
pub const REPORT_MARKER: &str = "STAND-IN-TALOS-REPORT";

/// The script (`#!/bin/busybox sh`, busybox at `/bin/busybox` in the same initramfs).
///
/// Report lines, in order: `BEGIN talos=<v> arch=<arch>`, `cmdline: <...>`, one
/// `talos.environment: <value>` per such argument (or `(none)`), one `extensions.yaml: <line>`
/// per line of `/extensions.yaml` (or `(absent)`), one `sqsh: <name> <bytes>` per `/*.sqsh`, one
/// `firmware: <path> <bytes>` per file under `/usr/lib/firmware`, `/lib/firmware` and
/// `/kernel/x86/microcode` (the early-microcode archive is unpacked there too), then `END`.
pub fn script(release: &Release, arch: Arch) -> String {
    SCRIPT
        .replace("@MARKER@", REPORT_MARKER)
        .replace("@TALOS@", release.tag)
        .replace("@ARCH@", arch.name())
}

const SCRIPT: &str = r#"#!/bin/busybox sh
# Stand-in Talos init (talos-factory-rs tools/stand-in-release), Talos @TALOS@ @ARCH@.
# Reports what this initramfs holds on the console, then powers off.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
set -f
M=@MARKER@
{
    echo "$M BEGIN talos=@TALOS@ arch=@ARCH@"
    echo "$M cmdline: $(cat /proc/cmdline)"
    found=0
    for arg in $(cat /proc/cmdline); do
        case "$arg" in
        talos.environment=*)
            echo "$M talos.environment: ${arg#talos.environment=}"
            found=1
            ;;
        esac
    done
    [ "$found" = 1 ] || echo "$M talos.environment: (none)"
    if [ -f /extensions.yaml ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            echo "$M extensions.yaml: $line"
        done </extensions.yaml
    else
        echo "$M extensions.yaml: (absent)"
    fi
    set +f
    for f in /*.sqsh; do
        [ -f "$f" ] && echo "$M sqsh: ${f#/} $(wc -c <"$f")"
    done
    for d in /usr/lib/firmware /lib/firmware /kernel/x86/microcode; do
        [ -d "$d" ] || continue
        find "$d" -type f | sort | while read -r f; do
            echo "$M firmware: ${f#/} $(wc -c <"$f")"
        done
    done
    echo "$M END"
} >/dev/console 2>&1
poweroff -f
"#;
