//! The META partition (talos-imager.md §7): the Talos ADV (§7.2) holding the schematic's META
//! values, and the dual-boot key 0x11 rule (§7.4).
//!
//! Layout of the 1 MiB partition: two identical 256 KiB Talos ADV copies at 0 and 256 KiB, zeros
//! after them (including the legacy syslinux ADV tail, §7.3, which fresh images leave zero). No
//! values ⇒ the partition stays all-zero.
//!
//! One ADV copy, big-endian: `u32 magic1 = 0x5a4b3c2d`, then `u32 tag, u32 size, value` records
//! (tag 0 / zero fill terminates), zero fill, at −0x24 the SHA-256 of the whole 256 KiB block
//! computed with that field zeroed, at −4 `u32 magic2 = 0xa5b4c3d2`.
//!
//! Differences from the Go writer: it emits records in Go map iteration order (random); we emit
//! them by ascending key so the same values give the same bytes. Readers do not depend on order.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::gpt::Gpt;
use crate::image::SparseImage;
use crate::layout::{Bootloader, TalosVersion};
use crate::{Error, Result, MIB};

/// Size of the META partition.
pub const META_SIZE: u64 = MIB;
/// Size of one Talos ADV copy.
pub const ADV_LENGTH: usize = 256 * 1024;
/// Bytes available for records, as in the Go ADV (`Length − 40`).
pub const ADV_DATA_LENGTH: usize = ADV_LENGTH - 40;
/// First magic.
pub const MAGIC1: u32 = 0x5a4b3c2d;
/// Second magic.
pub const MAGIC2: u32 = 0xa5b4c3d2;

/// Well-known META keys (§7.1).
pub mod keys {
    /// `Upgrade`.
    pub const UPGRADE: u8 = 6;
    /// `StagedUpgradeImageRef`.
    pub const STAGED_UPGRADE_IMAGE_REF: u8 = 7;
    /// `StagedUpgradeInstallOptions`.
    pub const STAGED_UPGRADE_INSTALL_OPTIONS: u8 = 8;
    /// `StateEncryptionConfig`.
    pub const STATE_ENCRYPTION_CONFIG: u8 = 9;
    /// `MetalNetworkPlatformConfig`.
    pub const METAL_NETWORK_PLATFORM_CONFIG: u8 = 0x0a;
    /// `DownloadURLCode`.
    pub const DOWNLOAD_URL_CODE: u8 = 0x0b;
    /// `UserReserved1`.
    pub const USER_RESERVED1: u8 = 0x0c;
    /// `UserReserved2`.
    pub const USER_RESERVED2: u8 = 0x0d;
    /// `UserReserved3`.
    pub const USER_RESERVED3: u8 = 0x0e;
    /// `UUIDOverride`.
    pub const UUID_OVERRIDE: u8 = 0x0f;
    /// `UniqueMachineToken`.
    pub const UNIQUE_MACHINE_TOKEN: u8 = 0x10;
    /// `DiskImageBootloader` (wiped on first boot).
    pub const DISK_IMAGE_BOOTLOADER: u8 = 0x11;
}

/// META values: key → bytes.
pub type MetaValues = BTreeMap<u8, Vec<u8>>;

/// Encodes one 256 KiB Talos ADV copy. Capacity rule of the Go `SetTagBytes`:
/// `20 + Σ(8 + len) ≤ 256 KiB − 40`.
pub fn encode_adv(values: &MetaValues) -> Result<Vec<u8>> {
    let used: usize = 20 + values.values().map(|v| 8 + v.len()).sum::<usize>();
    if used > ADV_DATA_LENGTH {
        return Err(Error::Meta(format!(
            "values need {used} bytes, the ADV holds {ADV_DATA_LENGTH}"
        )));
    }
    let mut buf = vec![0u8; ADV_LENGTH];
    buf[0..4].copy_from_slice(&MAGIC1.to_be_bytes());
    let mut at = 4;
    for (tag, value) in values {
        buf[at..at + 4].copy_from_slice(&u32::from(*tag).to_be_bytes());
        buf[at + 4..at + 8].copy_from_slice(&(value.len() as u32).to_be_bytes());
        buf[at + 8..at + 8 + value.len()].copy_from_slice(value);
        at += 8 + value.len();
    }
    buf[ADV_LENGTH - 4..].copy_from_slice(&MAGIC2.to_be_bytes());
    let sum = Sha256::digest(&buf);
    buf[ADV_LENGTH - 36..ADV_LENGTH - 4].copy_from_slice(&sum);
    Ok(buf)
}

/// Decodes one ADV copy (checks both magics and the checksum).
pub fn decode_adv(copy: &[u8]) -> Result<MetaValues> {
    if copy.len() != ADV_LENGTH {
        return Err(Error::Meta(format!("ADV copy of {} bytes", copy.len())));
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if be(&copy[0..4]) != MAGIC1 || be(&copy[ADV_LENGTH - 4..]) != MAGIC2 {
        return Err(Error::Meta("bad ADV magic".into()));
    }
    let mut zeroed = copy.to_vec();
    zeroed[ADV_LENGTH - 36..ADV_LENGTH - 4].fill(0);
    if Sha256::digest(&zeroed)[..] != copy[ADV_LENGTH - 36..ADV_LENGTH - 4] {
        return Err(Error::Meta("bad ADV checksum".into()));
    }
    let mut data = &copy[4..ADV_LENGTH - 36];
    let mut out = MetaValues::new();
    while data.len() >= 8 {
        let tag = be(&data[0..4]);
        if tag == 0 {
            break;
        }
        let size = be(&data[4..8]) as usize;
        if data.len() < size + 8 {
            return Err(Error::Meta(format!(
                "tag {tag} of {size} bytes runs past the ADV"
            )));
        }
        out.insert(tag as u8, data[8..8 + size].to_vec());
        data = &data[8 + size..];
    }
    Ok(out)
}

/// Decodes a META partition image: copy 1, falling back to copy 2.
pub fn decode_meta(partition: &[u8]) -> Result<MetaValues> {
    if partition.len() < 2 * ADV_LENGTH {
        return Err(Error::Meta("META shorter than two ADV copies".into()));
    }
    decode_adv(&partition[..ADV_LENGTH]).or_else(|_| decode_adv(&partition[ADV_LENGTH..2 * ADV_LENGTH]))
}

/// The non-zero head of the META partition (both ADV copies, 512 KiB), or `None` when there
/// are no values (the partition stays zero).
pub fn meta_content(values: &MetaValues) -> Result<Option<Vec<u8>>> {
    if values.is_empty() {
        return Ok(None);
    }
    let one = encode_adv(values)?;
    let mut both = Vec::with_capacity(2 * ADV_LENGTH);
    both.extend_from_slice(&one);
    both.extend_from_slice(&one);
    Ok(Some(both))
}

/// The META values of a disk image (§7.4): the schematic's values in order (a later duplicate key
/// wins, as with repeated `SetTag`), plus key 0x11 = `dual-boot` for amd64, non-SecureBoot,
/// ≥1.10 dual-boot images.
pub fn disk_image_meta_values<'a>(
    schematic: impl IntoIterator<Item = (u8, &'a [u8])>,
    arch: &str,
    secureboot: bool,
    version: TalosVersion,
    bootloader: Bootloader,
) -> MetaValues {
    let mut values: MetaValues = schematic.into_iter().map(|(k, v)| (k, v.to_vec())).collect();
    if arch == "amd64" && !secureboot && version.at_least(1, 10) && bootloader == Bootloader::DualBoot {
        values.insert(
            keys::DISK_IMAGE_BOOTLOADER,
            Bootloader::DualBoot.as_str().as_bytes().to_vec(),
        );
    }
    values
}

/// Places the META content in the `META` partition of `gpt` inside `img` (nothing when empty).
pub fn add_meta(img: &mut SparseImage, gpt: &Gpt, values: &MetaValues) -> Result<()> {
    let p = gpt
        .partition("META")
        .ok_or_else(|| Error::Meta("layout has no META partition".into()))?;
    let (offset, len) = gpt.byte_range(p);
    if len < META_SIZE {
        return Err(Error::Meta(format!("META partition of {len} bytes")));
    }
    if let Some(content) = meta_content(values)? {
        img.add_bytes(offset, content)?;
    }
    Ok(())
}
