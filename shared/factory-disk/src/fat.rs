//! A write-once FAT32 builder for the ESP (talos-imager.md §10.3: `mkfs.vfat -F 32 -n EFI
//! --invariant [-S sector]` then `mcopy -s -p -Q -m`), producing extents of a [`SparseImage`]
//! directly: boot sectors, FSInfo, both FATs and the directories are small in-memory extents, file
//! contents are referenced ([`FatSource::File`]) or small in-memory bytes, everything else is a
//! hole. Nothing of partition size is ever allocated.
//!
//! Geometry (dosfstools-like): 32 reserved sectors, 2 FATs, media 0xF8, root directory at cluster 2,
//! FSInfo at sector 1, backup boot sector at 6 (backup FSInfo at 7), 32 sectors/track, 64 heads,
//! 0 hidden sectors, drive 0x80, OEM name `mkfs.fat`. Cluster size as dosfstools picks it for FAT32:
//! 512 B up to 260 MiB, 4 KiB up to 8 GiB, 8 KiB up to 16 GiB, …, never below the sector size,
//! at most 32 KiB. Fewer than 65 525 clusters is an error (not a valid FAT32).
//!
//! Determinism: directories list their entries by name; files are allocated contiguously in
//! depth-first name order; the volume id defaults to `0x1234ABCD` (`mkfs.vfat --invariant`); every
//! timestamp is the given epoch (UTC) or 1980-01-01 00:00. Names that are not plain upper-case 8.3
//! names get VFAT long-name entries plus a generated short name (`BASIS~N.EXT` when lossy).
//! Not byte-identical with mkfs.vfat + mcopy (boot code area left zero, FAT sizing may differ by
//! a sector, short-name case flags not used).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::image::{Extent, Source, SparseImage};
use crate::{Error, Result, MIB};

/// Volume id used by `mkfs.vfat --invariant`.
pub const INVARIANT_VOLUME_ID: u32 = 0x1234_ABCD;
const RESERVED_SECTORS: u64 = 32;
const NUM_FATS: u64 = 2;
const MEDIA: u8 = 0xF8;
const EOC: u32 = 0x0FFF_FFFF;
const ATTR_READ_ONLY: u8 = 0x01;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_LFN: u8 = 0x0F;

/// Content of a file on the FAT volume.
#[derive(Debug, Clone)]
pub enum FatSource {
    /// In-memory bytes.
    Bytes(Arc<[u8]>),
    /// A whole file on the local disk (streamed when the image is written; its size is read when
    /// the volume is laid out and must not change).
    File(PathBuf),
    /// The inner content, its directory entry marked read-only (the ISO's `loader/random-seed`,
    /// talos-imager.md §9.3: systemd-boot must not try to refresh it on read-only media).
    ReadOnly(Box<FatSource>),
}

impl FatSource {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            FatSource::Bytes(b) => Ok(b.len() as u64),
            FatSource::File(p) => Ok(std::fs::metadata(p)?.len()),
            FatSource::ReadOnly(inner) => inner.len(),
        }
    }

    fn source(&self) -> Source {
        match self {
            FatSource::Bytes(b) => Source::Bytes(b.clone()),
            FatSource::File(p) => Source::File {
                path: p.clone(),
                offset: 0,
            },
            FatSource::ReadOnly(inner) => inner.source(),
        }
    }

    fn attributes(&self) -> u8 {
        match self {
            FatSource::ReadOnly(_) => ATTR_ARCHIVE | ATTR_READ_ONLY,
            _ => ATTR_ARCHIVE,
        }
    }
}

impl From<Vec<u8>> for FatSource {
    fn from(v: Vec<u8>) -> Self {
        FatSource::Bytes(v.into())
    }
}

/// FAT32 volume options.
#[derive(Debug, Clone)]
pub struct FatOptions {
    /// Volume size in bytes (the partition size).
    pub size: u64,
    /// Logical sector size: 512 or 4096.
    pub sector_size: u32,
    /// Volume label (≤ 11 ASCII characters), `EFI` for the ESP.
    pub label: String,
    /// Volume id (serial).
    pub volume_id: u32,
    /// Timestamp of every entry, seconds since the Unix epoch (SOURCE_DATE_EPOCH); `None` =
    /// 1980-01-01 00:00:00.
    pub timestamp: Option<u64>,
}

impl FatOptions {
    /// The ESP defaults: label `EFI`, invariant volume id, no timestamp.
    pub fn esp(size: u64, sector_size: u32) -> Self {
        Self {
            size,
            sector_size,
            label: "EFI".into(),
            volume_id: INVARIANT_VOLUME_ID,
            timestamp: None,
        }
    }
}

/// DOS (date, time) of a Unix timestamp (UTC), clamped to 1980..=2107.
pub fn dos_date_time(ts: Option<u64>) -> (u16, u16) {
    let Some(secs) = ts.filter(|&s| s >= 315_532_800) else {
        return ((1 << 5) | 1, 0);
    };
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // civil-from-days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u16;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u16;
    let year = (yoe + era * 400 + i64::from(month <= 2)) as u16;
    if year > 2107 {
        return (((2107 - 1980) << 9) | (12 << 5) | 31, (23 << 11) | (59 << 5) | 29);
    }
    let date = ((year - 1980) << 9) | (month << 5) | day;
    let time = (((rem / 3600) as u16) << 11) | ((((rem / 60) % 60) as u16) << 5) | ((rem % 60) as u16 / 2);
    (date, time)
}

/// Computed FAT32 geometry.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    ss: u64,
    spc: u64,
    total_sectors: u64,
    fat_sectors: u64,
    clusters: u64,
}

impl Geometry {
    fn new(size: u64, sector_size: u32) -> Result<Self> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(Error::SectorSize(sector_size));
        }
        let ss = u64::from(sector_size);
        let cluster_bytes = if size <= 260 * MIB {
            512
        } else if size <= 8192 * MIB {
            4096
        } else {
            (size.next_power_of_two() / (2048 * MIB)) * 1024
        };
        let spc = cluster_bytes.clamp(ss, 32 * 1024) / ss;
        let total_sectors = size / ss;
        if total_sectors > u64::from(u32::MAX) || total_sectors <= RESERVED_SECTORS + 8 {
            return Err(fat_err(format!("unusable volume size {size}")));
        }
        // the smallest FAT that covers the clusters left next to it (need() shrinks as FAT grows)
        let clusters_for = |fat: u64| total_sectors.saturating_sub(RESERVED_SECTORS + NUM_FATS * fat) / spc;
        let need = |fat: u64| ((clusters_for(fat) + 2) * 4).div_ceil(ss);
        let (mut lo, mut hi) = (1u64, ((total_sectors / spc + 2) * 4).div_ceil(ss));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if need(mid) <= mid {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let fat_sectors = lo;
        let clusters = clusters_for(fat_sectors);
        if clusters < 65_525 {
            return Err(fat_err(format!(
                "{clusters} clusters of {} bytes: too few for FAT32",
                spc * ss
            )));
        }
        Ok(Geometry {
            ss,
            spc,
            total_sectors,
            fat_sectors,
            clusters: clusters.min(0x0FFF_FFF5),
        })
    }

    fn cluster_bytes(&self) -> u64 {
        self.spc * self.ss
    }

    fn fat_offset(&self, copy: u64) -> u64 {
        (RESERVED_SECTORS + copy * self.fat_sectors) * self.ss
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        (RESERVED_SECTORS + NUM_FATS * self.fat_sectors) * self.ss
            + u64::from(cluster - 2) * self.cluster_bytes()
    }
}

fn fat_err(reason: String) -> Error {
    Error::Partition {
        name: "FAT32".into(),
        reason,
    }
}

#[derive(Debug, Default)]
struct Dir {
    dirs: BTreeMap<String, Dir>,
    files: BTreeMap<String, (FatSource, u64)>,
    cluster: u32,
    clusters: u32,
}

/// Valid short-name characters (besides A-Z, 0-9).
fn sfn_char_ok(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || "$%'-_@~`!(){}^#&".contains(c)
}

/// Short name (11 bytes) and whether a long name entry is needed.
fn short_name(name: &str, taken: &mut BTreeSet<[u8; 11]>) -> ([u8; 11], bool) {
    if name == "." || name == ".." {
        let mut s = [b' '; 11];
        s[..name.len()].copy_from_slice(name.as_bytes());
        return (s, false);
    }
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut lossy = false;
    let mut conv = |part: &str, max: usize| -> Vec<u8> {
        let mut out = Vec::new();
        for c in part.chars() {
            if c == ' ' || c == '.' {
                lossy = true;
                continue;
            }
            let u = c.to_ascii_uppercase();
            if u.is_ascii() && sfn_char_ok(u) {
                out.push(u as u8);
            } else {
                lossy = true;
                out.push(b'_');
            }
        }
        if out.len() > max {
            lossy = true;
            out.truncate(max);
        }
        out
    };
    let b = conv(base, 8);
    let e = conv(ext, 3);
    let mut s = [b' '; 11];
    s[..b.len()].copy_from_slice(&b);
    s[8..8 + e.len()].copy_from_slice(&e);
    let exact = !lossy && {
        let mut shown = String::from_utf8_lossy(&b).into_owned();
        if !e.is_empty() {
            shown.push('.');
            shown.push_str(&String::from_utf8_lossy(&e));
        }
        shown == name
    };
    if !lossy && !taken.contains(&s) {
        taken.insert(s);
        return (s, !exact);
    }
    for n in 1u32.. {
        let tail = format!("~{n}");
        let keep = b.len().min(8 - tail.len());
        let mut t = [b' '; 11];
        t[..keep].copy_from_slice(&b[..keep]);
        t[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
        t[8..].copy_from_slice(&s[8..]);
        if taken.insert(t) {
            return (t, true);
        }
    }
    unreachable!("short name space exhausted")
}

fn lfn_checksum(s: &[u8; 11]) -> u8 {
    s.iter().fold(0u8, |sum, &c| {
        ((sum & 1) << 7).wrapping_add(sum >> 1).wrapping_add(c)
    })
}

struct Entries {
    buf: Vec<u8>,
    taken: BTreeSet<[u8; 11]>,
    date: u16,
    time: u16,
}

impl Entries {
    fn new(date: u16, time: u16) -> Self {
        Self {
            buf: Vec::new(),
            taken: BTreeSet::new(),
            date,
            time,
        }
    }

    fn raw(&mut self, short: [u8; 11], attr: u8, cluster: u32, size: u32) {
        let mut e = [0u8; 32];
        e[..11].copy_from_slice(&short);
        e[11] = attr;
        if attr != ATTR_VOLUME {
            e[14..16].copy_from_slice(&self.time.to_le_bytes());
            e[16..18].copy_from_slice(&self.date.to_le_bytes());
            e[18..20].copy_from_slice(&self.date.to_le_bytes());
        }
        e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
        e[22..24].copy_from_slice(&self.time.to_le_bytes());
        e[24..26].copy_from_slice(&self.date.to_le_bytes());
        e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
        e[28..32].copy_from_slice(&size.to_le_bytes());
        self.buf.extend_from_slice(&e);
    }

    fn named(&mut self, name: &str, attr: u8, cluster: u32, size: u32) {
        let (short, lfn) = short_name(name, &mut self.taken);
        if lfn {
            let units: Vec<u16> = name.encode_utf16().collect();
            let n = units.len().div_ceil(13);
            let sum = lfn_checksum(&short);
            for i in (0..n).rev() {
                let mut e = [0u8; 32];
                e[0] = (i as u8 + 1) | if i == n - 1 { 0x40 } else { 0 };
                e[11] = ATTR_LFN;
                e[13] = sum;
                let slots = (1..11)
                    .step_by(2)
                    .chain((14..26).step_by(2))
                    .chain((28..32).step_by(2));
                for (k, at) in slots.enumerate() {
                    let idx = i * 13 + k;
                    let u = match idx.cmp(&units.len()) {
                        std::cmp::Ordering::Less => units[idx],
                        std::cmp::Ordering::Equal => 0x0000,
                        std::cmp::Ordering::Greater => 0xFFFF,
                    };
                    e[at..at + 2].copy_from_slice(&u.to_le_bytes());
                }
                self.buf.extend_from_slice(&e);
            }
        }
        self.raw(short, attr, cluster, size);
    }
}

/// Number of directory bytes a directory needs (., .., label, LFN + SFN entries).
fn dir_bytes(dir: &Dir, root: bool) -> u64 {
    let lfn = |name: &str| 1 + name.encode_utf16().count().div_ceil(13) as u64;
    let names = dir
        .dirs
        .keys()
        .chain(dir.files.keys())
        .map(|n| lfn(n))
        .sum::<u64>();
    (names + if root { 1 } else { 2 }) * 32
}

/// A laid-out FAT32 volume.
#[derive(Debug)]
pub struct FatVolume {
    geo: Geometry,
    extents: Vec<Extent>,
}

impl FatVolume {
    /// Lays out a FAT32 volume holding `files` (`"EFI/boot/BOOTX64.efi"` → content; `/`
    /// separated; directories are created as needed).
    pub fn new(opts: &FatOptions, files: &BTreeMap<String, FatSource>) -> Result<FatVolume> {
        let geo = Geometry::new(opts.size, opts.sector_size)?;
        if opts.label.len() > 11 || !opts.label.is_ascii() {
            return Err(fat_err(format!(
                "label {:?}: at most 11 ASCII characters",
                opts.label
            )));
        }
        let mut root = Dir::default();
        for (path, src) in files {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((name, parents)) = parts.split_last() else {
                return Err(fat_err(format!("empty path {path:?}")));
            };
            let mut d = &mut root;
            for p in parents {
                if d.files.contains_key(*p) {
                    return Err(fat_err(format!("{path:?}: {p} is a file")));
                }
                if !d.dirs.contains_key(*p) && d.dirs.keys().any(|n| n.eq_ignore_ascii_case(p)) {
                    return Err(fat_err(format!(
                        "{path:?}: {p} differs from a sibling only by case"
                    )));
                }
                d = d.dirs.entry((*p).to_owned()).or_default();
            }
            let len = src.len()?;
            if len > u64::from(u32::MAX) {
                return Err(fat_err(format!("{path:?} over 4 GiB")));
            }
            let clash = |n: &String| n.eq_ignore_ascii_case(name);
            if d.dirs.keys().any(clash) || d.files.keys().any(clash) {
                return Err(fat_err(format!(
                    "duplicate path {path:?} (FAT names ignore case)"
                )));
            }
            if d.files.insert((*name).to_owned(), (src.clone(), len)).is_some() {
                return Err(fat_err(format!("duplicate path {path:?}")));
            }
        }

        // allocate: directories first (depth-first, name order), then files in the same order
        let cb = geo.cluster_bytes();
        let mut next: u64 = 2;
        fn alloc_dirs(d: &mut Dir, root: bool, next: &mut u64, cb: u64) {
            let n = dir_bytes(d, root).div_ceil(cb).max(1);
            d.cluster = *next as u32;
            d.clusters = n as u32;
            *next += n;
            for sub in d.dirs.values_mut() {
                alloc_dirs(sub, false, next, cb);
            }
        }
        alloc_dirs(&mut root, true, &mut next, cb);
        let mut file_clusters: Vec<(u32, u64, FatSource)> = Vec::new(); // (first, len, src)
        fn alloc_files(d: &Dir, next: &mut u64, cb: u64, out: &mut Vec<(u32, u64, FatSource)>) {
            for (src, len) in d.files.values() {
                let n = len.div_ceil(cb);
                out.push((if n == 0 { 0 } else { *next as u32 }, *len, src.clone()));
                *next += n;
            }
            for sub in d.dirs.values() {
                alloc_files(sub, next, cb, out);
            }
        }
        alloc_files(&root, &mut next, cb, &mut file_clusters);
        if next - 2 > geo.clusters {
            return Err(fat_err(format!(
                "{} clusters needed, {} available",
                next - 2,
                geo.clusters
            )));
        }
        let used = next - 2;

        // the FAT (only the used prefix; the rest is zero)
        let mut fat = vec![0u8; (next as usize) * 4];
        let mut put =
            |c: u32, v: u32| fat[c as usize * 4..c as usize * 4 + 4].copy_from_slice(&v.to_le_bytes());
        put(0, 0x0FFF_FF00 | u32::from(MEDIA));
        put(1, EOC);
        let mut chain = |first: u32, n: u32| {
            for i in 0..n {
                put(first + i, if i + 1 == n { EOC } else { first + i + 1 });
            }
        };
        fn dir_chains(d: &Dir, chain: &mut dyn FnMut(u32, u32)) {
            chain(d.cluster, d.clusters);
            for sub in d.dirs.values() {
                dir_chains(sub, chain);
            }
        }
        dir_chains(&root, &mut chain);
        for (first, len, _) in &file_clusters {
            if *first != 0 {
                chain(*first, len.div_ceil(cb) as u32);
            }
        }

        let mut extents = Vec::new();
        let fat: Arc<[u8]> = fat.into();
        for copy in 0..NUM_FATS {
            extents.push(Extent {
                offset: geo.fat_offset(copy),
                len: fat.len() as u64,
                source: Source::Bytes(fat.clone()),
            });
        }

        // directories
        let (date, time) = dos_date_time(opts.timestamp);
        let mut label = [b' '; 11];
        for (d, s) in label.iter_mut().zip(opts.label.to_ascii_uppercase().bytes()) {
            *d = s;
        }
        let mut file_iter = file_clusters.iter();
        fn emit_dirs<'f>(
            d: &Dir,
            parent: Option<u32>,
            label: &[u8; 11],
            dt: (u16, u16),
            geo: &Geometry,
            files: &mut impl Iterator<Item = &'f (u32, u64, FatSource)>,
            out: &mut Vec<Extent>,
        ) {
            let mut e = Entries::new(dt.0, dt.1);
            match parent {
                None => e.raw(*label, ATTR_VOLUME, 0, 0),
                Some(p) => {
                    e.named(".", ATTR_DIR, d.cluster, 0);
                    // the root is cluster 0 in "..", by convention
                    e.named("..", ATTR_DIR, if p == 2 { 0 } else { p }, 0);
                }
            }
            // entries in name order, directories and files interleaved
            let mut names: Vec<(&String, Option<&Dir>)> = d
                .dirs
                .iter()
                .map(|(n, s)| (n, Some(s)))
                .chain(d.files.keys().map(|n| (n, None)))
                .collect();
            names.sort_by(|a, b| a.0.cmp(b.0));
            // file clusters were allocated in BTreeMap order of d.files: take them in that order
            let mine: BTreeMap<&String, &(u32, u64, FatSource)> = d
                .files
                .keys()
                .map(|n| (n, files.next()))
                .filter_map(|(n, f)| f.map(|f| (n, f)))
                .collect();
            for (name, sub) in names {
                match sub {
                    Some(s) => e.named(name, ATTR_DIR, s.cluster, 0),
                    None => {
                        let (first, len, src) = mine[name];
                        e.named(name, src.attributes(), *first, *len as u32);
                    }
                }
            }
            let buf: Arc<[u8]> = e.buf.into();
            out.push(Extent {
                offset: geo.cluster_offset(d.cluster),
                len: buf.len() as u64,
                source: Source::Bytes(buf),
            });
            for sub in d.dirs.values() {
                emit_dirs(sub, Some(d.cluster), label, dt, geo, files, out);
            }
        }
        emit_dirs(
            &root,
            None,
            &label,
            (date, time),
            &geo,
            &mut file_iter,
            &mut extents,
        );

        // file contents
        for (first, len, src) in &file_clusters {
            if *first == 0 {
                continue;
            }
            let offset = geo.cluster_offset(*first);
            let source = src.source();
            extents.push(Extent {
                offset,
                len: *len,
                source,
            });
        }

        // boot sector, FSInfo, backups
        let boot = boot_sector(&geo, opts, &label);
        let fsinfo = fsinfo_sector(&geo, geo.clusters - used, next as u32);
        for (sector, bytes) in [(0, &boot), (1, &fsinfo), (6, &boot), (7, &fsinfo)] {
            extents.push(Extent {
                offset: sector * geo.ss,
                len: bytes.len() as u64,
                source: Source::Bytes(bytes.clone()),
            });
        }
        Ok(FatVolume { geo, extents })
    }

    /// Volume size in bytes (whole sectors).
    pub fn size(&self) -> u64 {
        self.geo.total_sectors * self.geo.ss
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.geo.cluster_bytes()
    }

    /// Adds the volume to `img` at byte `offset` (the partition start).
    pub fn add_to(&self, img: &mut SparseImage, offset: u64) -> Result<()> {
        for e in &self.extents {
            img.add(Extent {
                offset: offset + e.offset,
                ..e.clone()
            })?;
        }
        Ok(())
    }

    /// Writes the volume alone to a sparse file (tests, tools).
    pub fn write_sparse_file(&self, path: &Path) -> Result<()> {
        let mut img = SparseImage::new(self.size());
        self.add_to(&mut img, 0)?;
        img.write_sparse_file(&mut File::create(path)?)
    }
}

fn boot_sector(geo: &Geometry, opts: &FatOptions, label: &[u8; 11]) -> Arc<[u8]> {
    let mut b = vec![0u8; geo.ss as usize];
    b[0..3].copy_from_slice(&[0xEB, 0x58, 0x90]);
    b[3..11].copy_from_slice(b"mkfs.fat");
    b[11..13].copy_from_slice(&(geo.ss as u16).to_le_bytes());
    b[13] = geo.spc as u8;
    b[14..16].copy_from_slice(&(RESERVED_SECTORS as u16).to_le_bytes());
    b[16] = NUM_FATS as u8;
    // 17..19 root entries 0, 19..21 total sectors 16 = 0
    b[21] = MEDIA;
    // 22..24 FAT size 16 = 0
    b[24..26].copy_from_slice(&32u16.to_le_bytes());
    b[26..28].copy_from_slice(&64u16.to_le_bytes());
    // 28..32 hidden sectors 0
    b[32..36].copy_from_slice(&(geo.total_sectors as u32).to_le_bytes());
    b[36..40].copy_from_slice(&(geo.fat_sectors as u32).to_le_bytes());
    // 40..42 ext flags 0, 42..44 version 0
    b[44..48].copy_from_slice(&2u32.to_le_bytes());
    b[48..50].copy_from_slice(&1u16.to_le_bytes());
    b[50..52].copy_from_slice(&6u16.to_le_bytes());
    b[64] = 0x80;
    b[66] = 0x29;
    b[67..71].copy_from_slice(&opts.volume_id.to_le_bytes());
    b[71..82].copy_from_slice(label);
    b[82..90].copy_from_slice(b"FAT32   ");
    b[510] = 0x55;
    b[511] = 0xAA;
    b.into()
}

fn fsinfo_sector(geo: &Geometry, free: u64, next_free: u32) -> Arc<[u8]> {
    let mut b = vec![0u8; geo.ss as usize];
    b[0..4].copy_from_slice(&0x4161_5252u32.to_le_bytes());
    b[484..488].copy_from_slice(&0x6141_7272u32.to_le_bytes());
    b[488..492].copy_from_slice(&(free as u32).to_le_bytes());
    b[492..496].copy_from_slice(&next_free.to_le_bytes());
    b[508..512].copy_from_slice(&0xAA55_0000u32.to_le_bytes());
    b.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dos_time_conversion() {
        // 2023-11-14 22:13:20 UTC
        let (d, t) = dos_date_time(Some(1_700_000_000));
        assert_eq!((d >> 9, (d >> 5) & 15, d & 31), (43, 11, 14));
        assert_eq!((t >> 11, (t >> 5) & 63, (t & 31) * 2), (22, 13, 20));
        assert_eq!(dos_date_time(None), (33, 0));
    }

    #[test]
    fn short_names() {
        let mut taken = BTreeSet::new();
        let s = |n: &str, t: &mut BTreeSet<[u8; 11]>| {
            let (s, l) = short_name(n, t);
            (String::from_utf8_lossy(&s).into_owned(), l)
        };
        assert_eq!(s("EFI", &mut taken), ("EFI        ".into(), false));
        assert_eq!(s("boot", &mut taken), ("BOOT       ".into(), true));
        assert_eq!(s("BOOTX64.efi", &mut taken), ("BOOTX64 EFI".into(), true));
        assert_eq!(s("Talos-v1.11.0.efi", &mut taken), ("TALOS-~1EFI".into(), true));
        assert_eq!(s("Talos-v1.12.0.efi", &mut taken), ("TALOS-~2EFI".into(), true));
        assert_eq!(lfn_checksum(b"BOOTX64 EFI"), lfn_checksum(b"BOOTX64 EFI"));
    }

    #[test]
    fn too_few_clusters_is_an_error() {
        assert!(Geometry::new(100 * MIB, 4096).is_err());
        assert!(Geometry::new(100 * MIB, 512).is_ok());
    }
}
