//! Version gates (Talos `quirks`; spec §6.3, talos-imager §13). Talos compares only
//! `major.minor.patch`, so a pre-release counts as the release it leads to: `v1.12.0-alpha.1`
//! already supports embedded configuration.

use crate::version::TalosVersion;

/// The gates of one Talos version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quirks {
    core: TalosVersion,
}

impl Quirks {
    pub fn new(version: &TalosVersion) -> Self {
        Self { core: version.core() }
    }

    fn since(&self, major: u64, minor: u64, patch: u64) -> bool {
        self.core >= TalosVersion::new(major, minor, patch)
    }

    /// sd-boot / sd-stub exist in the imager, so UKIs and SecureBoot can be built (≥ 1.5).
    pub fn supports_uki(&self) -> bool {
        self.since(1, 5, 0)
    }

    /// Board overlays (≥ 1.7); also when the schematic YAML is embedded in the schematic
    /// virtual extension's `extraInfo`.
    pub fn supports_overlays(&self) -> bool {
        self.since(1, 7, 0)
    }

    /// zstd for initramfs and squashfs (≥ 1.8; xz before).
    pub fn supports_zstd(&self) -> bool {
        self.since(1, 8, 0)
    }

    /// Unified installer: `installer-base`, platform installers, extra kernel args in
    /// installer/UKI outputs without SecureBoot (≥ 1.10).
    pub fn supports_unified_installer(&self) -> bool {
        self.since(1, 10, 0)
    }

    /// UEFI boots through systemd-boot (dual-boot / sd-boot layouts) (≥ 1.10; grub before).
    pub fn uses_sd_boot_for_uefi(&self) -> bool {
        self.since(1, 10, 0)
    }

    /// `/talosctl/*` downloads exist (≥ 1.11).
    pub fn supports_talosctl_downloads(&self) -> bool {
        self.since(1, 11, 0)
    }

    /// BOOT partition of 2000 MiB instead of 1000 MiB (≥ 1.11).
    pub fn boot_partition_2000_mib(&self) -> bool {
        self.since(1, 11, 0)
    }

    /// The schematic's embedded machine configuration can be built in (≥ 1.12).
    pub fn supports_embedded_config(&self) -> bool {
        self.since(1, 12, 0)
    }

    /// `isoOptions.bootloader` is honoured (≥ 1.12).
    pub fn iso_bootloader_selectable(&self) -> bool {
        self.since(1, 12, 0)
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn q(s: &str) -> Quirks {
        Quirks::new(&TalosVersion::parse(s).unwrap())
    }

    #[test]
    fn gates_at_their_edges_and_pre_releases_count_as_the_release() {
        assert!(!q("1.6.7").supports_overlays());
        assert!(q("1.7.0-alpha.0").supports_overlays());
        assert!(q("1.7.0").supports_overlays());
        assert!(!q("1.9.5").supports_unified_installer());
        assert!(q("1.10.0-beta.1").supports_unified_installer());
        assert!(!q("1.11.9").supports_embedded_config());
        assert!(q("1.12.0-alpha.2").supports_embedded_config());
        assert!(!q("1.4.8").supports_uki());
        assert!(q("1.5.0").supports_uki());
        assert!(q("1.8.0-rc.0").supports_zstd());
    }
}
