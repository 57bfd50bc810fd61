//! Image names of the registry (spec §8.2): which installer a repository `<image>/<schematic>`
//! serves.

use factory_core::arch::Arch;

const INSTALLER: &str = "installer";
const SECUREBOOT_SUFFIX: &str = "-secureboot";
const INSTALLER_SUFFIX: &str = "-installer";

/// A parsed `<image>`: `installer`, `installer-secureboot`, `<platform>-installer`,
/// `<platform>-installer-secureboot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub platform: String,
    pub secureboot: bool,
    /// The pre-1.10 name without a platform (`installer[-secureboot]`, platform metal): its
    /// installer asset has the legacy path too, so both names keep their own cache entries.
    pub legacy: bool,
}

impl ImageName {
    /// Parses an image name; `None` for anything else (the route answers 400 `invalid image`).
    ///
    /// The platform is checked for shape only (as the image paths are, spec §6.1): lowercase
    /// alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric — what an OCI repository
    /// path component allows — and no `installer` word, so that the installer path built from it
    /// parses back to the same platform.
    pub fn parse(name: &str) -> Option<ImageName> {
        let (rest, secureboot) = match name.strip_suffix(SECUREBOOT_SUFFIX) {
            Some(rest) => (rest, true),
            None => (name, false),
        };
        if rest == INSTALLER {
            return Some(ImageName {
                platform: "metal".to_owned(),
                secureboot,
                legacy: true,
            });
        }
        let platform = rest.strip_suffix(INSTALLER_SUFFIX)?;
        valid_platform(platform).then(|| ImageName {
            platform: platform.to_owned(),
            secureboot,
            legacy: false,
        })
    }

    /// The image-route path of this image's installer tarball for `arch` (spec §6.1 rules 6, 7):
    /// legacy → `installer-<arch>[-secureboot].tar`, else
    /// `<platform>-installer-<arch>[-secureboot].tar`.
    pub fn installer_path(&self, arch: Arch) -> String {
        let suffix = if self.secureboot { SECUREBOOT_SUFFIX } else { "" };
        if self.legacy {
            format!("{INSTALLER}-{arch}{suffix}.tar")
        } else {
            format!("{}{INSTALLER_SUFFIX}-{arch}{suffix}.tar", self.platform)
        }
    }

    /// The image name this was parsed from.
    pub fn image(&self) -> String {
        let suffix = if self.secureboot { SECUREBOOT_SUFFIX } else { "" };
        if self.legacy {
            format!("{INSTALLER}{suffix}")
        } else {
            format!("{}{INSTALLER_SUFFIX}{suffix}", self.platform)
        }
    }
}

fn valid_platform(platform: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge(platform.bytes().next())
        && edge(platform.bytes().last())
        && platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
        && !platform.split(['-', '_', '.']).any(|word| word == INSTALLER)
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;
    use factory_core::profile::parse_path;

    #[test]
    fn names_of_the_spec_table() {
        for (name, platform, secureboot, legacy) in [
            ("installer", "metal", false, true),
            ("installer-secureboot", "metal", true, true),
            ("metal-installer", "metal", false, false),
            ("metal-installer-secureboot", "metal", true, false),
            ("aws-installer", "aws", false, false),
            ("digital-ocean-installer", "digital-ocean", false, false),
            ("digital-ocean-installer-secureboot", "digital-ocean", true, false),
            ("rpi_generic-installer", "rpi_generic", false, false),
        ] {
            let parsed = ImageName::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(
                parsed,
                ImageName {
                    platform: platform.to_owned(),
                    secureboot,
                    legacy
                },
                "{name}"
            );
            assert_eq!(parsed.image(), name);
        }
    }

    #[test]
    fn anything_else_is_rejected() {
        for bad in [
            "",
            "installer-",
            "-installer",
            "-installer-secureboot",
            "metal-installer-foo",
            "Metal-installer",
            "INSTALLER",
            "metal-Installer",
            "installer-secureboot-secureboot",
            "metal-installer-secureboot-secureboot",
            "secureboot",
            "-secureboot",
            "metal",
            "metal-installer-installer",
            "installer-installer",
            "metal--installer",
            "metal.-installer",
            "me tal-installer",
            "metal/x-installer",
            "imager",
        ] {
            assert_eq!(ImageName::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn installer_paths_parse_back_to_the_same_installer() {
        for (name, arch, path) in [
            ("installer", Arch::Amd64, "installer-amd64.tar"),
            (
                "installer-secureboot",
                Arch::Arm64,
                "installer-arm64-secureboot.tar",
            ),
            ("metal-installer", Arch::Amd64, "metal-installer-amd64.tar"),
            (
                "digital-ocean-installer-secureboot",
                Arch::Arm64,
                "digital-ocean-installer-arm64-secureboot.tar",
            ),
        ] {
            let image = ImageName::parse(name).unwrap();
            assert_eq!(image.installer_path(arch), path);
            let profile = parse_path(path).unwrap();
            assert_eq!(profile.platform, image.platform, "{path}");
            assert_eq!(profile.arch, arch, "{path}");
            assert_eq!(profile.secureboot, image.secureboot, "{path}");
        }
    }
}
