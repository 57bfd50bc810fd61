//! The platforms the Talos imager knows and the kernel arguments each one contributes
//! (`internal/app/machined/pkg/runtime/v1alpha1/platform/*/KernelArgs`, `Name`).

use crate::arch::Arch;
use crate::version::TalosVersion;

/// Every platform name the imager accepts (`platform.NewPlatform`), `packet` being the old name
/// of `equinixMetal`. Anything else makes the imager fail with `unknown platform`.
pub const PLATFORMS: &[&str] = &[
    "akamai",
    "alibabacloud",
    "aws",
    "azure",
    "cloudstack",
    "container",
    "digital-ocean",
    "equinixMetal",
    "exoscale",
    "gcp",
    "hcloud",
    "metal",
    "nocloud",
    "opennebula",
    "openstack",
    "oracle",
    "packet",
    "scaleway",
    "upcloud",
    "vmware",
    "vultr",
];

/// Metal amd64 shows the kernel on the serial console too before 1.8 (quirk
/// `SupportsMetalPlatformConsoleTTYS0`).
const METAL_TTYS0_UNTIL: TalosVersion = TalosVersion::new(1, 8, 0);

/// From 1.14 the NVMe timeout is an AWS-only platform argument instead of a default
/// (quirk `NvmeCoreIoTimeoutAWSOnly`).
pub(crate) const NVME_TIMEOUT_AWS_ONLY_SINCE: TalosVersion = TalosVersion::new(1, 14, 0);

/// A platform as the imager sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformArgs {
    /// The value of `talos.platform` (`packet` is reported as `equinixMetal`).
    pub name: &'static str,
    /// Arguments applied with `SetAll` right after `talos.platform`, in order.
    pub kernel_args: Vec<&'static str>,
}

/// The platform's name and kernel arguments for an architecture and version, or `None` when the
/// imager does not know the platform.
pub fn platform_args(platform: &str, arch: Arch, version: &TalosVersion) -> Option<PlatformArgs> {
    let core = version.core();
    // Many clouds share one serial-console recipe: tty1 (VGA) then ttyS0, predictable names off.
    const SERIAL_CLOUD: &[&str] = &["console=tty1", "console=ttyS0", "net.ifnames=0"];
    const DASHBOARD_OFF: &[&str] = &["talos.dashboard.disabled=1"];
    let (name, args): (&'static str, Vec<&'static str>) = match platform {
        "akamai" => (
            "akamai",
            vec!["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"],
        ),
        "digital-ocean" => (
            "digital-ocean",
            vec!["console=ttyS0", "console=tty0", "console=tty1", "net.ifnames=0"],
        ),
        "alibabacloud" => ("alibabacloud", SERIAL_CLOUD.to_vec()),
        "cloudstack" => ("cloudstack", SERIAL_CLOUD.to_vec()),
        "exoscale" => ("exoscale", SERIAL_CLOUD.to_vec()),
        "hcloud" => ("hcloud", SERIAL_CLOUD.to_vec()),
        "nocloud" => ("nocloud", SERIAL_CLOUD.to_vec()),
        "opennebula" => ("opennebula", SERIAL_CLOUD.to_vec()),
        "openstack" => ("openstack", SERIAL_CLOUD.to_vec()),
        "aws" => {
            let mut args = SERIAL_CLOUD.to_vec();
            if core >= NVME_TIMEOUT_AWS_ONLY_SINCE {
                // AWS recommends the largest NVMe I/O timeout for EBS volumes.
                args.push("nvme_core.io_timeout=4294967295");
            }
            ("aws", args)
        }
        "azure" => (
            "azure",
            vec![
                "console=ttyS0,115200n8",
                "earlyprintk=ttyS0,115200",
                "rootdelay=300",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                // kexec sometimes hangs Azure VMs; a normal reboot is barely slower there.
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        "gcp" => (
            "gcp",
            vec![
                "console=ttyS0",
                "net.ifnames=0",
                "talos.dashboard.disabled=1",
                "sysctl.kernel.kexec_load_disabled=1",
            ],
        ),
        "oracle" => ("oracle", [SERIAL_CLOUD, DASHBOARD_OFF].concat()),
        "scaleway" => ("scaleway", [SERIAL_CLOUD, DASHBOARD_OFF].concat()),
        "upcloud" => ("upcloud", vec!["net.ifnames=0"]),
        "vultr" => ("vultr", vec!["net.ifnames=0"]),
        "container" => ("container", Vec::new()),
        "metal" => (
            "metal",
            match arch {
                Arch::Amd64 if core < METAL_TTYS0_UNTIL => vec!["console=ttyS0", "console=tty0"],
                Arch::Amd64 => vec!["console=tty0"],
                Arch::Arm64 => vec!["console=ttyAMA0", "console=tty0"],
            },
        ),
        "vmware" => (
            "vmware",
            match arch {
                Arch::Amd64 => vec![
                    "talos.config=guestinfo",
                    "console=tty0",
                    "console=ttyS0",
                    "earlyprintk=ttyS0,115200",
                    "net.ifnames=0",
                ],
                Arch::Arm64 => vec![
                    "talos.config=guestinfo",
                    "console=tty0",
                    "console=ttyAMA0",
                    "net.ifnames=0",
                ],
            },
        ),
        "equinixMetal" | "packet" => (
            "equinixMetal",
            match arch {
                Arch::Amd64 => vec!["console=ttyS1,115200n8"],
                Arch::Arm64 => vec!["console=ttyAMA0,115200"],
            },
        ),
        _ => return None,
    };
    Some(PlatformArgs {
        name,
        kernel_args: args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).expect("test version")
    }

    #[test]
    fn every_listed_platform_is_known_and_unknown_ones_are_not() {
        for platform in PLATFORMS {
            for arch in Arch::ALL {
                assert!(
                    platform_args(platform, arch, &v("1.12.0")).is_some(),
                    "{platform}"
                );
            }
        }
        for unknown in ["", "Metal", "digitalocean", "equinix", "sbc", "rpi_generic"] {
            assert_eq!(
                platform_args(unknown, Arch::Amd64, &v("1.12.0")),
                None,
                "{unknown}"
            );
        }
    }

    #[test]
    fn names_are_the_platform_except_packet() {
        for platform in PLATFORMS {
            let name = platform_args(platform, Arch::Amd64, &v("1.12.0")).map(|p| p.name);
            let expected = if *platform == "packet" {
                "equinixMetal"
            } else {
                platform
            };
            assert_eq!(name, Some(expected));
        }
    }

    #[test]
    fn metal_amd64_serial_console_until_1_8_including_pre_releases_of_1_8() {
        let args = |s: &str| platform_args("metal", Arch::Amd64, &v(s)).map(|p| p.kernel_args);
        assert_eq!(args("1.7.6"), Some(vec!["console=ttyS0", "console=tty0"]));
        assert_eq!(args("1.8.0-alpha.1"), Some(vec!["console=tty0"]));
        assert_eq!(args("1.8.0"), Some(vec!["console=tty0"]));
        let arm = platform_args("metal", Arch::Arm64, &v("1.7.0")).map(|p| p.kernel_args);
        assert_eq!(arm, Some(vec!["console=ttyAMA0", "console=tty0"]));
    }

    #[test]
    fn aws_gets_the_nvme_timeout_from_1_14() {
        let args = |s: &str| platform_args("aws", Arch::Arm64, &v(s)).map(|p| p.kernel_args);
        assert_eq!(
            args("1.13.5"),
            Some(vec!["console=tty1", "console=ttyS0", "net.ifnames=0"])
        );
        assert_eq!(
            args("1.14.0-beta.0"),
            Some(vec![
                "console=tty1",
                "console=ttyS0",
                "net.ifnames=0",
                "nvme_core.io_timeout=4294967295"
            ])
        );
    }
}
