//! The Talos versions of the stand-in release and the version gates that shape their images.
//!
//! Each version sits on one side of a gate the factory (or the Talos imager inside it) branches
//! on, so that tests against the stand-in release exercise every branch; see the crate docs for
//! the table of why each one is here.

/// One Talos version of the stand-in release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// The tag, as on `ghcr.io/siderolabs/imager`.
    pub tag: &'static str,
    /// `major.minor.patch` without the pre-release: the Talos quirks compare only this.
    pub core: (u64, u64, u64),
    /// Only an imager tag exists (a CI build tag that the factory's version filter must drop);
    /// real Talos publishes no other images for such tags.
    pub imager_only: bool,
    /// Whether the factory's version list (`GET /versions`, spec §10.1) keeps this tag.
    pub listed_by_factory: bool,
    /// Why the version is part of the stand-in release.
    pub why: &'static str,
}

/// Every version, in ascending semver order (the order `GET /versions` lists the kept ones in).
pub const RELEASES: &[Release] = &[
    release(
        "v1.1.2",
        (1, 1, 2),
        "below the factory's minimum 1.2.0: never listed",
    ),
    release(
        "v1.6.4",
        (1, 6, 4),
        "before overlays (1.7): overlays route answers []",
    ),
    release(
        "v1.7.6",
        (1, 7, 6),
        "overlays exist; last xz era (initramfs/squashfs xz < 1.8)",
    ),
    release(
        "v1.9.5",
        (1, 9, 5),
        "zstd era (>= 1.8), still installer + /lib paths (< 1.10)",
    ),
    release(
        "v1.10.7",
        (1, 10, 7),
        "installer-base, usr-merge, sd-boot era starts (>= 1.10)",
    ),
    release(
        "v1.11.3",
        (1, 11, 3),
        "talosctl-all catalog (>= 1.11), 2000 MiB boot partition",
    ),
    release(
        "v1.12.1",
        (1, 12, 1),
        "embedded machine config (>= 1.12), module.sig_enforce",
    ),
    release(
        "v1.13.0-alpha.1",
        (1, 13, 0),
        "pre-release of the newest line: kept by §10.1",
    ),
    Release {
        tag: "v1.12.0-alpha.0-12-gabc",
        core: (1, 12, 0),
        imager_only: true,
        listed_by_factory: false,
        why: "CI build tag (pre-release not <alpha|beta|rc>.<n>, not newest line): dropped",
    },
];

/// A full release (all images); listed by the factory iff at least its minimum 1.2.0.
const fn release(tag: &'static str, core: (u64, u64, u64), why: &'static str) -> Release {
    Release {
        tag,
        core,
        imager_only: false,
        listed_by_factory: core.0 > 1 || core.1 >= 2,
        why,
    }
}

impl Release {
    /// Whether the core version is at least `major.minor.0` (pre-releases count as the release,
    /// as in the Talos quirks).
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.core.0, self.core.1) >= (major, minor)
    }

    /// Initramfs and squashfs are zstd since 1.8 (xz before).
    pub fn zstd(&self) -> bool {
        self.at_least(1, 8)
    }

    /// Overlays (`siderolabs/overlays:<v>`) exist since 1.7.
    pub fn has_overlays(&self) -> bool {
        self.at_least(1, 7)
    }

    /// The installer base image is `installer-base` since 1.10 (`installer` before).
    pub fn installer_base(&self) -> bool {
        self.at_least(1, 10)
    }

    /// `siderolabs/talosctl-all:<v>` exists since 1.11.
    pub fn has_talosctl_all(&self) -> bool {
        self.at_least(1, 11)
    }

    /// Since 1.10 Talos is usr-merged: modules and firmware live under `/usr/lib`, before under
    /// `/lib`. Extensions and the rootfs follow their era.
    pub fn usr_merged(&self) -> bool {
        self.at_least(1, 10)
    }

    /// Where kernel modules live in the root filesystem and in extensions (no leading slash).
    pub fn modules_dir(&self) -> &'static str {
        if self.usr_merged() {
            "usr/lib/modules"
        } else {
            "lib/modules"
        }
    }

    /// Where firmware lives in the root filesystem and in extensions (no leading slash).
    pub fn firmware_dir(&self) -> &'static str {
        if self.usr_merged() {
            "usr/lib/firmware"
        } else {
            "lib/firmware"
        }
    }

    /// `major.minor.0` with a `v`, for compatibility ranges tied to a release line.
    pub fn line(&self) -> String {
        format!("v{}.{}.0", self.core.0, self.core.1)
    }
}

/// The tags `GET /versions` must list for the stand-in release, ascending.
pub fn factory_versions() -> Vec<&'static str> {
    RELEASES
        .iter()
        .filter(|r| r.listed_by_factory)
        .map(|r| r.tag)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_straddle_the_gates() {
        let by_tag = |tag: &str| RELEASES.iter().find(|r| r.tag == tag).copied();
        let v = |tag| by_tag(tag).unwrap_or_else(|| panic!("{tag} missing"));
        assert!(!v("v1.7.6").zstd() && v("v1.9.5").zstd());
        assert!(!v("v1.6.4").has_overlays() && v("v1.7.6").has_overlays());
        assert!(!v("v1.9.5").installer_base() && v("v1.10.7").installer_base());
        assert!(!v("v1.10.7").has_talosctl_all() && v("v1.11.3").has_talosctl_all());
        assert_eq!(v("v1.9.5").modules_dir(), "lib/modules");
        assert_eq!(v("v1.10.7").firmware_dir(), "usr/lib/firmware");
    }

    #[test]
    fn factory_list_drops_old_and_ci_tags() {
        assert_eq!(
            factory_versions(),
            [
                "v1.6.4",
                "v1.7.6",
                "v1.9.5",
                "v1.10.7",
                "v1.11.3",
                "v1.12.1",
                "v1.13.0-alpha.1"
            ]
        );
    }
}
