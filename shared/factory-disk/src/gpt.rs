//! GPT writer with go-blockdevice's geometry (talos-imager.md §10.2).
//!
//! * 128 entries × 128 bytes; primary header at LBA 1, entries at LBA `2 + skip`; backup header at
//!   the last LBA with its entries just before it.
//! * first usable LBA = primary entries LBA + entry sectors (34 at 512-byte sectors, 6 at 4096 —
//!   go-blockdevice does not round it; partition *starts* are rounded), last usable LBA = backup
//!   entries LBA − 1.
//! * Every partition start is rounded up to the alignment (1 MiB in sectors); partitions are laid
//!   out in order, each after the previous one; size = `bytes / sector` sectors; a
//!   [`PartitionSize::Rest`] partition runs to the last usable LBA.
//! * Header revision 1.0, size 92, CRC32 (IEEE) of the entry array and of the header; the header
//!   occupies a whole sector (zero padded).
//! * Protective MBR: boot code (optional, first 446 bytes) kept, one entry type 0xEE, status 0,
//!   CHS `00 02 00`/`FF FF FF`, start LBA 1, length min(last LBA, 0xFFFFFFFF), signature `55 AA`.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::image::SparseImage;
use crate::{Error, Result, MIB};

/// Number of partition entries.
pub const NUM_ENTRIES: u64 = 128;
/// Size of one partition entry.
pub const ENTRY_SIZE: u64 = 128;
/// GPT header size.
pub const HEADER_SIZE: u32 = 92;

/// A GUID in its canonical (string) byte order; [`Guid::to_gpt_bytes`] gives the on-disk
/// mixed-endian form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// EFI System Partition.
    pub const ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
    /// BIOS boot partition.
    pub const BIOS_BOOT: Guid = Guid::from_u128(0x21686148_6449_6E6F_744E_656564454649);
    /// Linux filesystem data.
    pub const LINUX_FS: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);

    /// From the 128-bit big-endian value of the canonical string.
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (case-insensitive).
    pub fn parse(s: &str) -> Option<Guid> {
        let hex: String = s.chars().filter(|&c| c != '-').collect();
        if hex.len() != 32 || s.len() != 36 {
            return None;
        }
        u128::from_str_radix(&hex, 16).ok().map(Guid::from_u128)
    }

    /// On-disk GPT form: the first three fields little-endian, the rest as is.
    pub fn to_gpt_bytes(&self) -> [u8; 16] {
        let b = self.0;
        let mut o = b;
        o[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        o[4..6].copy_from_slice(&[b[5], b[4]]);
        o[6..8].copy_from_slice(&[b[7], b[6]]);
        o
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The imager's deterministic GUID (`GUIDFromLabel`): a version-8 UUID made of the first 16 bytes
/// of SHA-256(16 zero bytes ‖ label), version nibble 8, RFC 4122 variant.
pub fn guid_from_label(label: &str) -> Guid {
    let mut h = Sha256::new();
    h.update([0u8; 16]);
    h.update(label.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Guid(b)
}

/// Size of a partition to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionSize {
    /// Exactly this many bytes (truncated to whole sectors).
    Bytes(u64),
    /// Everything up to the last usable LBA.
    Rest,
}

/// A partition to allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    /// Partition name (the Talos label), at most 36 UTF-16 code units.
    pub name: String,
    /// Partition type GUID.
    pub type_guid: Guid,
    /// Size.
    pub size: PartitionSize,
    /// Attribute bits (bit 2: legacy BIOS bootable).
    pub attributes: u64,
    /// Unique partition GUID; `None` = [`guid_from_label`] of the name (image mode).
    pub guid: Option<Guid>,
}

impl PartitionSpec {
    /// A partition of `mib` MiB.
    pub fn mib(name: &str, type_guid: Guid, mib: u64) -> Self {
        Self {
            name: name.to_owned(),
            type_guid,
            size: PartitionSize::Bytes(mib * MIB),
            attributes: 0,
            guid: None,
        }
    }
}

/// An allocated partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number.
    pub number: u32,
    /// Name.
    pub name: String,
    /// Type GUID.
    pub type_guid: Guid,
    /// Unique GUID.
    pub guid: Guid,
    /// First LBA.
    pub first_lba: u64,
    /// Last LBA (inclusive).
    pub last_lba: u64,
    /// Attribute bits.
    pub attributes: u64,
}

/// A computed partition table for a disk.
#[derive(Debug, Clone)]
pub struct Gpt {
    sector_size: u64,
    disk_size: u64,
    last_lba: u64,
    primary_entries_lba: u64,
    backup_entries_lba: u64,
    first_usable_lba: u64,
    last_usable_lba: u64,
    alignment: u64,
    disk_guid: Guid,
    partitions: Vec<Partition>,
}

impl Gpt {
    /// Lays out `specs` in order on a disk of `disk_size` bytes. `skip_lbas` moves the primary
    /// entries (overlay `partitionOptions.offset`, in sectors; 0 normally).
    pub fn new(
        disk_size: u64,
        sector_size: u32,
        disk_guid: Guid,
        specs: &[PartitionSpec],
        skip_lbas: u64,
    ) -> Result<Gpt> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(Error::SectorSize(sector_size));
        }
        let ss = u64::from(sector_size);
        let entry_lbas = (NUM_ENTRIES * ENTRY_SIZE).div_ceil(ss);
        let sectors = disk_size / ss;
        if sectors < 34 + 2 * entry_lbas + skip_lbas {
            return Err(Error::DiskTooSmall(disk_size));
        }
        let last_lba = sectors - 1;
        let primary_entries_lba = 2 + skip_lbas;
        let backup_entries_lba = last_lba - entry_lbas;
        let first_usable_lba = primary_entries_lba + entry_lbas;
        let last_usable_lba = backup_entries_lba - 1;
        let alignment = MIB.div_ceil(ss);

        let mut partitions = Vec::with_capacity(specs.len());
        let mut next = first_usable_lba;
        for (i, spec) in specs.iter().enumerate() {
            if spec.name.encode_utf16().count() > 36 {
                return Err(Error::NameTooLong(spec.name.clone()));
            }
            let first = next.div_ceil(alignment) * alignment;
            let last = match spec.size {
                PartitionSize::Bytes(b) => {
                    if b < ss {
                        return Err(Error::Partition {
                            name: spec.name.clone(),
                            reason: "size smaller than a sector".into(),
                        });
                    }
                    first + b / ss - 1
                }
                PartitionSize::Rest => last_usable_lba,
            };
            if first > last_usable_lba || last > last_usable_lba || last < first {
                return Err(Error::DiskTooSmall(disk_size));
            }
            partitions.push(Partition {
                number: i as u32 + 1,
                name: spec.name.clone(),
                type_guid: spec.type_guid,
                guid: spec.guid.unwrap_or_else(|| guid_from_label(&spec.name)),
                first_lba: first,
                last_lba: last,
                attributes: spec.attributes,
            });
            next = last + 1;
        }
        Ok(Gpt {
            sector_size: ss,
            disk_size,
            last_lba,
            primary_entries_lba,
            backup_entries_lba,
            first_usable_lba,
            last_usable_lba,
            alignment,
            disk_guid,
            partitions,
        })
    }

    /// Sector size in bytes.
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }
    /// Disk size in bytes.
    pub fn disk_size(&self) -> u64 {
        self.disk_size
    }
    /// Last LBA of the disk (the backup header).
    pub fn last_lba(&self) -> u64 {
        self.last_lba
    }
    /// First usable LBA.
    pub fn first_usable_lba(&self) -> u64 {
        self.first_usable_lba
    }
    /// Last usable LBA.
    pub fn last_usable_lba(&self) -> u64 {
        self.last_usable_lba
    }
    /// Partition start alignment in sectors.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
    /// Disk GUID.
    pub fn disk_guid(&self) -> Guid {
        self.disk_guid
    }
    /// The partitions, in table order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }
    /// The partition named `name`.
    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.name == name)
    }
    /// Byte range (offset, length) of a partition.
    pub fn byte_range(&self, p: &Partition) -> (u64, u64) {
        (
            p.first_lba * self.sector_size,
            (p.last_lba - p.first_lba + 1) * self.sector_size,
        )
    }

    /// The 16 KiB partition entry array.
    pub fn entries(&self) -> Vec<u8> {
        let mut buf = vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize];
        for (i, p) in self.partitions.iter().enumerate() {
            let e = &mut buf[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.to_gpt_bytes());
            e[16..32].copy_from_slice(&p.guid.to_gpt_bytes());
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, u) in p.name.encode_utf16().enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&u.to_le_bytes());
            }
        }
        buf
    }

    /// A header sector (primary when `primary`, else backup) for the given entry array.
    fn header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let mut h = vec![0u8; self.sector_size as usize];
        let (my, alt, entries_lba) = if primary {
            (1, self.last_lba, self.primary_entries_lba)
        } else {
            (self.last_lba, 1, self.backup_entries_lba)
        };
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC, 20..24 reserved
        h[24..32].copy_from_slice(&u64::to_le_bytes(my));
        h[32..40].copy_from_slice(&u64::to_le_bytes(alt));
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_gpt_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(NUM_ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The primary header sector.
    pub fn primary_header(&self) -> Vec<u8> {
        self.header(true, crc32fast::hash(&self.entries()))
    }

    /// The backup header sector.
    pub fn backup_header(&self) -> Vec<u8> {
        self.header(false, crc32fast::hash(&self.entries()))
    }

    /// The 512-byte protective MBR; `boot_code` (≤ 446 bytes) goes at offset 0.
    pub fn protective_mbr(&self, boot_code: Option<&[u8]>) -> Result<[u8; 512]> {
        let mut m = [0u8; 512];
        if let Some(code) = boot_code {
            if code.len() > 446 {
                return Err(Error::Partition {
                    name: "MBR".into(),
                    reason: "boot code over 446 bytes".into(),
                });
            }
            m[..code.len()].copy_from_slice(code);
        }
        let e = &mut m[446..462];
        e[0] = 0x00;
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&(self.last_lba.min(u64::from(u32::MAX)) as u32).to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        Ok(m)
    }

    /// Adds the protective MBR, both headers and both entry arrays to `img` (whose size must be
    /// the disk size).
    pub fn add_to(&self, img: &mut SparseImage, boot_code: Option<&[u8]>) -> Result<()> {
        if img.size() != self.disk_size {
            return Err(Error::DiskTooSmall(img.size()));
        }
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let ss = self.sector_size;
        img.add_bytes(0, self.protective_mbr(boot_code)?.to_vec())?;
        img.add_bytes(ss, self.header(true, crc))?;
        img.add_bytes(self.primary_entries_lba * ss, entries.clone())?;
        img.add_bytes(self.backup_entries_lba * ss, entries)?;
        img.add_bytes(self.last_lba * ss, self.header(false, crc))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_from_label_matches_documented_values() {
        for (label, want) in [
            ("talos-image-disk", "d92d45b3-cde9-8760-be9f-a2a71fac8d11"),
            ("EFI", "bca5174b-0118-8a6a-af0b-2c6e1585acae"),
            ("BIOS", "a2a02ff5-d88d-8e6e-9c95-26b9b6c80bc3"),
            ("BOOT", "24c73076-4092-85dd-9d98-686a2dbf6d81"),
            ("META", "cf04f137-101e-8ec6-9627-fa3f51cdabb8"),
        ] {
            assert_eq!(guid_from_label(label).to_string(), want, "{label}");
        }
    }

    #[test]
    fn guid_parse_and_mixed_endian() {
        let g = Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(g, Some(Guid::ESP));
        assert_eq!(
            Guid::ESP.to_gpt_bytes(),
            [
                0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
                0x3b
            ]
        );
    }
}
