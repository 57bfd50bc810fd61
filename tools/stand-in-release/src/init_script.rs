//! The `/init` of the stand-in initramfs: a busybox shell script that prints one marked report
//! block on the console, then powers the machine off. Tests boot the amd64 payload in QEMU and
//! read the report from the serial log to see what the factory put into the initramfs.

use crate::boot::VIRTIO_BLOCK_MODULES;
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
/// `/kernel/x86/microcode` (the early-microcode archive is unpacked there too), then
/// `meta: <dev> <hex>` and `meta-tail: <hex>` (or `meta: (absent)`), then `END`.
///
/// `meta:` is about the first block device whose GPT partition label is `META` (talos-imager.md
/// §7): `<dev>` its kernel name (e.g. `vda4`), `<hex>` its first 4096 bytes as lowercase hex
/// without spaces (the head of the first Talos ADV copy: magic1 and the records), and
/// `meta-tail:` the hex of its bytes 262108..262144 (the first copy's SHA-256 and magic2). To see
/// virtio disks the script first loads the [`VIRTIO_BLOCK_MODULES`] found under
/// `/lib/modules/<uname -r>/`, and waits (≤ 5 s) only for virtio block devices that exist.
pub fn script(release: &Release, arch: Arch) -> String {
    SCRIPT
        .replace("@MARKER@", REPORT_MARKER)
        .replace("@TALOS@", release.tag)
        .replace("@ARCH@", arch.name())
        .replace("@MODULES@", &VIRTIO_BLOCK_MODULES.join(" "))
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
    # The Debian kernel has virtio only as modules. Failures (a module built in or already
    # loaded) only cost the META line, so they are noted without the marker and ignored.
    moddir=/lib/modules/$(uname -r)
    for ko in @MODULES@; do
        [ -f "$moddir/$ko" ] || continue
        insmod "$moddir/$ko" 2>/dev/null || echo "stand-in init: insmod $ko failed"
    done
    # virtio_blk probes its disks and reads their partition tables within insmod; the wait
    # only covers a slower probe, and only for virtio block devices (virtio id 2) that exist,
    # so that ISO, PXE and UKI boots do not pay for it.
    tries=0
    for d in /sys/bus/virtio/devices/*; do
        [ "$(cat "$d/device" 2>/dev/null)" = 0x0002 ] || continue
        while [ ! -d "$d/block" ] && [ "$tries" -lt 50 ]; do
            sleep 0.1
            tries=$((tries + 1))
        done
    done
    meta=
    for u in /sys/class/block/*/uevent; do
        if grep -qx PARTNAME=META "$u" 2>/dev/null; then
            meta=${u%/uevent}
            meta=${meta##*/}
            break
        fi
    done
    if [ -n "$meta" ]; then
        if [ ! -b "/dev/$meta" ]; then
            majmin=$(cat "/sys/class/block/$meta/dev")
            mknod "/dev/$meta" b "${majmin%:*}" "${majmin#*:}"
        fi
        # A kernel message printed in the middle would split these long lines: quiet the
        # console meanwhile.
        read -r level _ </proc/sys/kernel/printk
        echo 1 >/proc/sys/kernel/printk
        echo "$M meta: $meta $(dd if="/dev/$meta" bs=4096 count=1 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
        echo "$M meta-tail: $(dd if="/dev/$meta" bs=4 skip=65527 count=9 2>/dev/null | od -An -v -tx1 | tr -d ' \n')"
        echo "$level" >/proc/sys/kernel/printk
    else
        echo "$M meta: (absent)"
    fi
    echo "$M END"
} >/dev/console 2>&1
poweroff -f
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versions::RELEASES;

    #[test]
    fn script_loads_the_virtio_modules_in_order_and_reports_meta() {
        let script = script(&RELEASES[0], Arch::Amd64);
        assert!(!script.contains('@'), "a placeholder is left:\n{script}");
        let loads = format!("for ko in {}; do", VIRTIO_BLOCK_MODULES.join(" "));
        assert!(script.contains(&loads), "{script}");
        assert!(script.contains("grep -qx PARTNAME=META"), "{script}");
        assert!(
            script.contains("bs=4 skip=65527 count=9"),
            "the ADV tail, 262108..262144"
        );
        let at = |needle: &str| {
            script
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in:\n{script}"))
        };
        assert!(at("firmware: ") < at("insmod "));
        assert!(at("insmod ") < at("$M meta: $meta"));
        assert!(at("$M meta: (absent)") < at("$M END"));
    }
}
