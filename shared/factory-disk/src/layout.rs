//! The Talos disk-image partition layouts as data (talos-imager.md §3.2, §10.1, §10.2, §13).

use crate::gpt::{guid_from_label, Gpt, Guid, PartitionSize, PartitionSpec};
use crate::{Result, MIB};

/// Disk GUID label of image mode (`GUIDFromLabel("talos-image-disk")`).
pub const DISK_GUID_LABEL: &str = "talos-image-disk";
/// Attribute bit 2: legacy BIOS bootable (set on the BIOS boot partition).
pub const ATTR_LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// `MinRAWDiskSize`.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;
/// `DefaultRAWDiskSize`.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;

/// A Talos version as used by the version gates. `None` inside = unparseable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TalosVersion(Option<(u64, u64, u64)>);

impl TalosVersion {
    /// Parses `v1.11.2`, `1.11.2-alpha.1`, `1.10` …; anything else is "unparseable".
    pub fn parse(s: &str) -> TalosVersion {
        let s = s.strip_prefix('v').unwrap_or(s);
        let core = s.split(['-', '+']).next().unwrap_or("");
        let mut it = core.split('.');
        let mut num = || it.next().map(|p| p.parse::<u64>().ok());
        let parsed = match (num(), num(), num()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Some((a, b, c)),
            (Some(Some(a)), Some(Some(b)), None) => Some((a, b, 0)),
            _ => None,
        };
        TalosVersion(parsed)
    }

    /// A known version.
    pub fn new(major: u64, minor: u64, patch: u64) -> TalosVersion {
        TalosVersion(Some((major, minor, patch)))
    }

    /// `self >= major.minor` with unparseable versions counting as the latest.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        self.0.is_none_or(|(a, b, _)| (a, b) >= (major, minor))
    }

    /// `self >= major.minor` with unparseable versions counting as *not* satisfying the gate
    /// (the sd-boot-for-UEFI gate, §13).
    pub fn at_least_strict(&self, major: u64, minor: u64) -> bool {
        self.0.is_some_and(|(a, b, _)| (a, b) >= (major, minor))
    }
}

/// Disk image bootloader layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bootloader {
    /// systemd-boot only (UEFI): EFI + META.
    SdBoot,
    /// GRUB for BIOS and UEFI: EFI + BIOS + BOOT + META.
    Grub,
    /// GRUB for BIOS, systemd-boot for UEFI: EFI + BIOS + BOOT + META.
    DualBoot,
}

impl Bootloader {
    /// The schematic / profile spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Bootloader::SdBoot => "sd-boot",
            Bootloader::Grub => "grub",
            Bootloader::DualBoot => "dual-boot",
        }
    }

    /// Parses the schematic / profile spelling.
    pub fn parse(s: &str) -> Option<Bootloader> {
        match s {
            "sd-boot" => Some(Bootloader::SdBoot),
            "grub" => Some(Bootloader::Grub),
            "dual-boot" => Some(Bootloader::DualBoot),
            _ => None,
        }
    }

    /// `selectBootloader` (§10.1): SecureBoot → sd-boot; an explicit choice is kept; arm64 ≥1.10 →
    /// sd-boot; <1.10 (or unparseable) → grub; otherwise (amd64 ≥1.10) dual-boot.
    pub fn select(
        version: TalosVersion,
        arch: &str,
        secureboot: bool,
        explicit: Option<Bootloader>,
    ) -> Bootloader {
        if secureboot {
            return Bootloader::SdBoot;
        }
        if let Some(b) = explicit {
            return b;
        }
        let uefi_sd_boot = version.at_least_strict(1, 10);
        match (arch, uefi_sd_boot) {
            ("arm64", true) => Bootloader::SdBoot,
            (_, false) => Bootloader::Grub,
            _ => Bootloader::DualBoot,
        }
    }
}

/// BOOT size: 2000 MiB ≥1.11, else 1000 MiB.
pub fn boot_size_mib(version: TalosVersion) -> u64 {
    if version.at_least(1, 11) {
        2000
    } else {
        1000
    }
}

/// EFI size for systemd-boot layouts (holds the UKI): 2101 MiB ≥1.11, else 1101 MiB.
pub fn uki_efi_size_mib(version: TalosVersion) -> u64 {
    boot_size_mib(version) + 101
}

/// `Output.FillDefaults` for image outputs (§3.2): the profile size plus `bootSize − 1000 MiB`,
/// plus `1 MiB + bootSize` for dual-boot.
pub fn image_disk_size(profile_size: u64, version: TalosVersion, bootloader: Bootloader) -> u64 {
    let boot = boot_size_mib(version) * MIB;
    let mut size = profile_size + boot - 1000 * MIB;
    if bootloader == Bootloader::DualBoot {
        size += MIB + boot;
    }
    size
}

/// IMAGECACHE partition size for a cache of `cache_bytes`: +20 %, rounded up to 1 MiB.
pub fn image_cache_size(cache_bytes: u64) -> u64 {
    (cache_bytes + cache_bytes.div_ceil(5)).div_ceil(MIB) * MIB
}

/// A Talos disk-image layout: everything the builder needs before filling contents.
#[derive(Debug, Clone)]
pub struct DiskLayout {
    /// Talos version.
    pub version: TalosVersion,
    /// Bootloader layout.
    pub bootloader: Bootloader,
    /// Disk size in bytes (already adjusted, see [`image_disk_size`]).
    pub disk_size: u64,
    /// Logical sector size (512 or 4096).
    pub sector_size: u32,
    /// IMAGECACHE partition size in bytes, if any (appended after META).
    pub image_cache: Option<u64>,
    /// Sectors to skip before the primary entries (overlay `partitionOptions.offset`).
    pub skip_lbas: u64,
}

impl DiskLayout {
    /// A layout without image cache or skip.
    pub fn new(version: TalosVersion, bootloader: Bootloader, disk_size: u64, sector_size: u32) -> Self {
        Self {
            version,
            bootloader,
            disk_size,
            sector_size,
            image_cache: None,
            skip_lbas: 0,
        }
    }

    /// The partitions in table order (§10.2).
    pub fn partitions(&self) -> Vec<PartitionSpec> {
        let v = self.version;
        let mut p = Vec::new();
        let bios = || PartitionSpec {
            attributes: ATTR_LEGACY_BIOS_BOOTABLE,
            ..PartitionSpec::mib("BIOS", Guid::BIOS_BOOT, 1)
        };
        match self.bootloader {
            Bootloader::SdBoot => {
                p.push(PartitionSpec::mib("EFI", Guid::ESP, uki_efi_size_mib(v)));
            }
            Bootloader::DualBoot => {
                p.push(PartitionSpec::mib("EFI", Guid::ESP, uki_efi_size_mib(v)));
                p.push(bios());
                p.push(PartitionSpec::mib("BOOT", Guid::LINUX_FS, boot_size_mib(v)));
            }
            Bootloader::Grub => {
                p.push(PartitionSpec::mib("EFI", Guid::ESP, 100));
                p.push(bios());
                p.push(PartitionSpec::mib("BOOT", Guid::LINUX_FS, boot_size_mib(v)));
            }
        }
        p.push(PartitionSpec::mib("META", Guid::LINUX_FS, 1));
        if let Some(size) = self.image_cache {
            p.push(PartitionSpec {
                size: PartitionSize::Bytes(size),
                ..PartitionSpec::mib("IMAGECACHE", Guid::LINUX_FS, 1)
            });
        }
        if !v.at_least(1, 8) {
            p.push(PartitionSpec::mib("STATE", Guid::LINUX_FS, 100));
            p.push(PartitionSpec {
                size: PartitionSize::Rest,
                ..PartitionSpec::mib("EPHEMERAL", Guid::LINUX_FS, 1)
            });
        }
        p
    }

    /// The partition table (deterministic disk GUID `GUIDFromLabel("talos-image-disk")`).
    pub fn gpt(&self) -> Result<Gpt> {
        Gpt::new(
            self.disk_size,
            self.sector_size,
            guid_from_label(DISK_GUID_LABEL),
            &self.partitions(),
            self.skip_lbas,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_dual_boot_1_11() -> Result<()> {
        let v = TalosVersion::parse("v1.11.0");
        let size = image_disk_size(MIN_RAW_DISK_SIZE, v, Bootloader::DualBoot);
        assert_eq!(size, 4247 * MIB);
        let gpt = DiskLayout::new(v, Bootloader::DualBoot, size, 512).gpt()?;
        let starts: Vec<_> = gpt
            .partitions()
            .iter()
            .map(|p| (p.name.as_str(), p.first_lba))
            .collect();
        assert_eq!(
            starts,
            [
                ("EFI", 2048),
                ("BIOS", 4_304_896),
                ("BOOT", 4_306_944),
                ("META", 8_402_944)
            ]
        );
        // 1.15 fixture number of §3.2
        assert_eq!(
            image_disk_size(
                MIN_RAW_DISK_SIZE,
                TalosVersion::parse("1.15.0"),
                Bootloader::DualBoot
            ),
            4_453_302_272
        );
        Ok(())
    }

    #[test]
    fn bootloader_selection() {
        let v110 = TalosVersion::parse("v1.10.3");
        let v19 = TalosVersion::parse("v1.9.5");
        let bad = TalosVersion::parse("latest");
        assert_eq!(
            Bootloader::select(v110, "amd64", false, None),
            Bootloader::DualBoot
        );
        assert_eq!(Bootloader::select(v110, "arm64", false, None), Bootloader::SdBoot);
        assert_eq!(Bootloader::select(v19, "amd64", false, None), Bootloader::Grub);
        assert_eq!(Bootloader::select(v19, "arm64", false, None), Bootloader::Grub);
        assert_eq!(Bootloader::select(bad, "amd64", false, None), Bootloader::Grub);
        assert_eq!(
            Bootloader::select(v110, "amd64", true, Some(Bootloader::Grub)),
            Bootloader::SdBoot
        );
        assert_eq!(
            Bootloader::select(v110, "amd64", false, Some(Bootloader::SdBoot)),
            Bootloader::SdBoot
        );
    }

    #[test]
    fn legacy_layout_has_state_and_ephemeral() -> Result<()> {
        let v = TalosVersion::parse("v1.7.6");
        let gpt = DiskLayout::new(v, Bootloader::Grub, MIN_RAW_DISK_SIZE, 512).gpt()?;
        let names: Vec<_> = gpt.partitions().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["EFI", "BIOS", "BOOT", "META", "STATE", "EPHEMERAL"]);
        let eph = &gpt.partitions()[5];
        assert_eq!(eph.last_lba, gpt.last_usable_lba());
        assert_eq!(image_cache_size(10 * MIB), 12 * MIB);
        assert_eq!(image_cache_size(10 * MIB + 1), 13 * MIB);
        Ok(())
    }
}
