//! What Talos puts into its UKI (talos-imager.md §8.1, §8.3): the section list in file order,
//! the `.osrel` text, the kernel version for `.uname`, and the boot profiles of ≥ 1.10.

use crate::section::{Section, SectionData, SectionName};

/// A UKI boot profile (≥ 1.10): a `.profile` section, followed by its own `.cmdline` when it
/// has one (systemd-stub then uses it instead of the base `.cmdline`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UkiProfile {
    pub id: String,
    pub title: Option<String>,
    pub cmdline: Option<String>,
}

impl UkiProfile {
    /// The default profile every ≥ 1.10 UKI starts its profiles with: `ID=main`, no cmdline.
    pub fn main() -> Self {
        Self {
            id: "main".to_owned(),
            title: None,
            cmdline: None,
        }
    }

    /// The extra profile of ISOs: wipe the system disk.
    pub fn reset_iso(base_cmdline: &str) -> Self {
        Self {
            id: "reset".to_owned(),
            title: Some("Reset system disk".to_owned()),
            cmdline: Some(format!("{base_cmdline} talos.experimental.wipe=system")),
        }
    }

    /// The extra profile of disk images and installers: wipe STATE and EPHEMERAL.
    pub fn reset_maintenance(base_cmdline: &str) -> Self {
        Self {
            id: "reset-maintenance".to_owned(),
            title: Some("Reset to maintenance mode".to_owned()),
            cmdline: Some(format!(
                "{base_cmdline} talos.experimental.wipe=system:EPHEMERAL,STATE"
            )),
        }
    }

    /// The `.profile` contents: `ID=<id>`, then `\nTITLE=<title>` when titled (no trailing
    /// newline).
    pub fn section_text(&self) -> String {
        match &self.title {
            Some(title) => format!("ID={}\nTITLE={title}", self.id),
            None => format!("ID={}", self.id),
        }
    }
}

/// The inputs of a Talos UKI. [`TalosUki::into_sections`] orders them as §8.1.
#[derive(Debug)]
pub struct TalosUki {
    /// `.osrel`, usually [`os_release`].
    pub osrel: String,
    /// `.cmdline`: the kernel command line, without NUL or newline.
    pub cmdline: String,
    /// `.uname`: the kernel version ([`kernel_version`]); the section is left out when unknown.
    pub uname: Option<String>,
    /// `.splash`: the boot logo BMP, when the release provides one.
    pub splash: Option<SectionData>,
    /// `.pcrpkey`: PEM public key of the PCR signing key (SecureBoot only; a later step).
    pub pcrpkey: Option<SectionData>,
    /// `.linux`: the kernel image.
    pub kernel: SectionData,
    /// `.initrd`: the initramfs (after the extension rebuild).
    pub initrd: SectionData,
    /// `None` below Talos 1.10 (no profile sections). `Some(extra)` for ≥ 1.10: `ID=main` first,
    /// then each extra profile (`uki` output: none; ISO: [`UkiProfile::reset_iso`]; disk
    /// image and installer: [`UkiProfile::reset_maintenance`]).
    pub profiles: Option<Vec<UkiProfile>>,
}

/// Why the inputs cannot make a Talos UKI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TalosUkiError {
    #[error("the kernel command line contains a NUL or newline")]
    BadCmdline,
    #[error("profile ID \"main\" is reserved")]
    ReservedProfile,
}

impl TalosUki {
    /// The sections to append to the stub, in file order (§8.1):
    /// `.osrel .cmdline [.uname] [.splash] [.pcrpkey] .linux .initrd`, then for ≥ 1.10
    /// `.profile` (`ID=main`) and, per extra profile, `.profile [.cmdline]`. The stub's own
    /// `.sbat` stays where it is. `.pcrsig` sections (SecureBoot) are inserted by the signer
    /// after each profile (or last, before 1.10).
    ///
    /// Pre-1.10 Go imagers appended the same sections in another order (`.initrd` before
    /// `.splash`/`.uname`, `.linux` last); systemd-stub finds sections by name and PCR 11 is
    /// measured in a fixed name order, so one order serves every version.
    pub fn into_sections(self) -> Result<Vec<Section>, TalosUkiError> {
        let check_cmdline = |c: &str| {
            if c.contains(['\0', '\n']) {
                Err(TalosUkiError::BadCmdline)
            } else {
                Ok(())
            }
        };
        check_cmdline(&self.cmdline)?;
        let mut sections = vec![
            Section::new(SectionName::OSREL, self.osrel),
            Section::new(SectionName::CMDLINE, self.cmdline),
        ];
        if let Some(uname) = self.uname {
            sections.push(Section::new(SectionName::UNAME, uname));
        }
        if let Some(splash) = self.splash {
            sections.push(Section::new(SectionName::SPLASH, splash));
        }
        if let Some(pcrpkey) = self.pcrpkey {
            sections.push(Section::new(SectionName::PCRPKEY, pcrpkey));
        }
        sections.push(Section::new(SectionName::LINUX, self.kernel));
        sections.push(Section::new(SectionName::INITRD, self.initrd));
        if let Some(extra) = self.profiles {
            if extra.iter().any(|p| p.id == "main") {
                return Err(TalosUkiError::ReservedProfile);
            }
            for profile in std::iter::once(UkiProfile::main()).chain(extra) {
                sections.push(Section::new(SectionName::PROFILE, profile.section_text()));
                if let Some(cmdline) = profile.cmdline {
                    check_cmdline(&cmdline)?;
                    sections.push(Section::new(SectionName::CMDLINE, cmdline));
                }
            }
        }
        Ok(sections)
    }
}

/// The `.osrel` text of §8.3 for `name` (`Talos`) and `version` (`v1.12.1`), newline-terminated.
pub fn os_release(name: &str, version: &str) -> String {
    let id = name.to_lowercase().replace(' ', "_");
    format!(
        "NAME=\"{name}\"\n\
         ID={id}\n\
         VERSION_ID={version}\n\
         PRETTY_NAME=\"{name} ({version})\"\n\
         HOME_URL=\"https://www.talos.dev/\"\n\
         BUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
         VENDOR_NAME=\"Sidero Labs\"\n\
         VENDOR_URL=\"https://www.siderolabs.com/\"\n"
    )
}

/// How many leading bytes of a kernel image [`kernel_version`] may need: the version string
/// lies within the setup sectors (at most 255 × 512 after the boot sector) and is read as a
/// 256-byte window.
pub const KERNEL_VERSION_PROBE_LEN: usize = 0x200 + 255 * 0x200 + 256;

/// The kernel version of an x86 bzImage (Linux boot protocol: `HdrS` at 0x202, setup sectors
/// at 0x1f1, version string offset at 0x20e, relative to 0x200), cut at the first blank, as the
/// Go imager reads it for `.uname`. `None` for anything else (arm64 `Image`s have no such
/// header). `image` may be just the first [`KERNEL_VERSION_PROBE_LEN`] bytes.
pub fn kernel_version(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let setup_sectors = u16::from(*image.get(0x1f1)?);
    let offset = u16::from_le_bytes(image.get(0x20e..0x210)?.try_into().ok()?);
    if offset == 0 || u32::from(offset) > u32::from(setup_sectors) * 0x200 {
        return None;
    }
    let start = usize::from(offset) + 0x200;
    // Go reads a full 256-byte window and gives up when the file is shorter.
    let window = image.get(start..start + 256)?;
    let end = window.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&window[..end]).ok()?;
    let version = text.split(' ').next().unwrap_or_default();
    (!version.is_empty()).then(|| version.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_is_the_talos_text() {
        assert_eq!(
            os_release("Talos", "v1.12.1"),
            "NAME=\"Talos\"\nID=talos\nVERSION_ID=v1.12.1\nPRETTY_NAME=\"Talos (v1.12.1)\"\n\
             HOME_URL=\"https://www.talos.dev/\"\n\
             BUG_REPORT_URL=\"https://github.com/siderolabs/talos/issues\"\n\
             VENDOR_NAME=\"Sidero Labs\"\nVENDOR_URL=\"https://www.siderolabs.com/\"\n"
        );
        assert!(os_release("Talos Enterprise", "v1.12.1").contains("\nID=talos_enterprise\n"));
    }

    fn bzimage(version: &str, setup_sectors: u8, offset: u16) -> Vec<u8> {
        let mut image = vec![0u8; 0x200 + usize::from(setup_sectors) * 0x200 + 0x1000];
        image[0x1f1] = setup_sectors;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20e..0x210].copy_from_slice(&offset.to_le_bytes());
        let at = usize::from(offset) + 0x200;
        image[at..at + version.len()].copy_from_slice(version.as_bytes());
        image
    }

    #[test]
    fn kernel_version_reads_the_bzimage_header() {
        let image = bzimage("6.18.45-talos (root@buildkitsandbox) #1 SMP", 30, 0x3000);
        assert_eq!(kernel_version(&image).as_deref(), Some("6.18.45-talos"));
        // A truncated probe that still holds the window works too.
        assert_eq!(
            kernel_version(&image[..0x3200 + 256]).as_deref(),
            Some("6.18.45-talos")
        );
    }

    #[test]
    fn kernel_version_refuses_what_go_refuses() {
        assert_eq!(kernel_version(b"MZ not a bzImage"), None);
        assert_eq!(kernel_version(&bzimage("6.1", 30, 0)), None, "no offset");
        assert_eq!(
            kernel_version(&bzimage("6.1", 1, 0x400)),
            None,
            "offset past the setup sectors"
        );
        let mut no_nul = bzimage("", 30, 0x3000);
        no_nul[0x3200..0x3300].fill(b'x');
        assert_eq!(kernel_version(&no_nul), None);
        let image = bzimage("6.1.0", 30, 0x3000);
        assert_eq!(kernel_version(&image[..0x3200 + 100]), None, "short window");
    }

    #[test]
    fn sections_follow_the_talos_order() {
        let uki = TalosUki {
            osrel: os_release("Talos", "v1.12.1"),
            cmdline: "talos.platform=metal".to_owned(),
            uname: Some("6.18.45-talos".to_owned()),
            splash: Some(SectionData::Bytes(b"BM".to_vec())),
            pcrpkey: None,
            kernel: SectionData::Bytes(b"kernel".to_vec()),
            initrd: SectionData::Bytes(b"initrd".to_vec()),
            profiles: Some(vec![UkiProfile::reset_iso("talos.platform=metal")]),
        };
        let sections = uki.into_sections().expect("sections");
        let names: Vec<&str> = sections.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                ".osrel", ".cmdline", ".uname", ".splash", ".linux", ".initrd", ".profile", ".profile",
                ".cmdline"
            ]
        );
        let text = |i: usize| match &sections[i].data {
            SectionData::Bytes(b) => String::from_utf8(b.clone()).expect("utf-8"),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(text(6), "ID=main");
        assert_eq!(text(7), "ID=reset\nTITLE=Reset system disk");
        assert_eq!(text(8), "talos.platform=metal talos.experimental.wipe=system");
        assert_eq!(
            UkiProfile::reset_maintenance("a").cmdline.as_deref(),
            Some("a talos.experimental.wipe=system:EPHEMERAL,STATE")
        );
    }

    #[test]
    fn before_1_10_there_are_no_profiles_and_no_optional_sections() {
        let uki = TalosUki {
            osrel: String::new(),
            cmdline: "a".to_owned(),
            uname: None,
            splash: None,
            pcrpkey: None,
            kernel: SectionData::Bytes(vec![]),
            initrd: SectionData::Bytes(vec![]),
            profiles: None,
        };
        let names: Vec<String> = uki
            .into_sections()
            .expect("sections")
            .iter()
            .map(|s| s.name.to_string())
            .collect();
        assert_eq!(names, [".osrel", ".cmdline", ".linux", ".initrd"]);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let base = || TalosUki {
            osrel: String::new(),
            cmdline: "a".to_owned(),
            uname: None,
            splash: None,
            pcrpkey: None,
            kernel: SectionData::Bytes(vec![]),
            initrd: SectionData::Bytes(vec![]),
            profiles: Some(vec![]),
        };
        let mut uki = base();
        uki.cmdline = "a\nb".to_owned();
        assert_eq!(uki.into_sections().err(), Some(TalosUkiError::BadCmdline));
        let mut uki = base();
        uki.profiles = Some(vec![UkiProfile::main()]);
        assert_eq!(uki.into_sections().err(), Some(TalosUkiError::ReservedProfile));
    }
}
