//! Talos' built-in platform profiles (talos-imager §3.2, `pkg/imager/profile/default.go` of the
//! pinned Talos), reduced to what a download path borrows from them: disk size and `qemu-img`
//! options. The Go factory looks the profile up by the *platform* of the path, so only entries
//! named after a platform are reachable; `iso`/`installer` entries have no image options and
//! are therefore left out (looking them up in Go would dereference a nil pointer).

use super::{DiskFormat, OutFormat};

const MIB: u64 = 1024 * 1024;

/// Talos `MinRAWDiskSize`: metal and small-disk clouds.
pub const MIN_RAW_DISK_SIZE: u64 = 1246 * MIB;

/// Talos `DefaultRAWDiskSize`: what a disk image gets when its platform has no default profile.
pub const DEFAULT_RAW_DISK_SIZE: u64 = 8192 * MIB;

/// A platform's default disk image profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformDefault {
    pub platform: &'static str,
    pub out_format: OutFormat,
    pub disk_format: DiskFormat,
    pub disk_size: u64,
    pub disk_format_options: &'static str,
}

const fn d(
    platform: &'static str,
    out_format: OutFormat,
    disk_format: DiskFormat,
    disk_size: u64,
    disk_format_options: &'static str,
) -> PlatformDefault {
    PlatformDefault {
        platform,
        out_format,
        disk_format,
        disk_size,
        disk_format_options,
    }
}

/// The built-in image profiles keyed by platform, as in the pinned Talos (talos-imager §3.2).
pub const PLATFORM_DEFAULTS: &[PlatformDefault] = &[
    d("metal", OutFormat::Zst, DiskFormat::Raw, MIN_RAW_DISK_SIZE, ""),
    d("akamai", OutFormat::Gz, DiskFormat::Raw, MIN_RAW_DISK_SIZE, ""),
    d(
        "alibabacloud",
        OutFormat::Raw,
        DiskFormat::Qcow2,
        MIN_RAW_DISK_SIZE,
        "cluster_size=8k",
    ),
    d("aws", OutFormat::Zst, DiskFormat::Raw, DEFAULT_RAW_DISK_SIZE, ""),
    d(
        "azure",
        OutFormat::Zst,
        DiskFormat::Vhd,
        DEFAULT_RAW_DISK_SIZE,
        "subformat=fixed,force_size",
    ),
    d(
        "cloudstack",
        OutFormat::Zst,
        DiskFormat::Raw,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
    d(
        "digital-ocean",
        OutFormat::Gz,
        DiskFormat::Raw,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
    d(
        "exoscale",
        OutFormat::Zst,
        DiskFormat::Qcow2,
        10240 * MIB,
        "cluster_size=8k",
    ),
    d(
        "gcp",
        OutFormat::TarGz,
        DiskFormat::Raw,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
    d("hcloud", OutFormat::Zst, DiskFormat::Raw, MIN_RAW_DISK_SIZE, ""),
    d("nocloud", OutFormat::Zst, DiskFormat::Raw, MIN_RAW_DISK_SIZE, ""),
    d(
        "opennebula",
        OutFormat::Zst,
        DiskFormat::Raw,
        MIN_RAW_DISK_SIZE,
        "",
    ),
    d(
        "openstack",
        OutFormat::Zst,
        DiskFormat::Raw,
        MIN_RAW_DISK_SIZE,
        "",
    ),
    d(
        "oracle",
        OutFormat::Zst,
        DiskFormat::Qcow2,
        DEFAULT_RAW_DISK_SIZE,
        "cluster_size=8k",
    ),
    d("scaleway", OutFormat::Zst, DiskFormat::Raw, MIN_RAW_DISK_SIZE, ""),
    d(
        "upcloud",
        OutFormat::Zst,
        DiskFormat::Raw,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
    d(
        "vmware",
        OutFormat::Raw,
        DiskFormat::Ova,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
    d(
        "vultr",
        OutFormat::Zst,
        DiskFormat::Raw,
        DEFAULT_RAW_DISK_SIZE,
        "",
    ),
];

/// The default profile of a platform, if Talos has one.
pub fn platform_default(platform: &str) -> Option<&'static PlatformDefault> {
    PLATFORM_DEFAULTS.iter().find(|p| p.platform == platform)
}
