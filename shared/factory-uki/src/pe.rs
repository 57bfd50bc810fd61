//! PE32+ assembly: the stub's own sections kept, new sections appended (talos-imager.md §8.2).
//!
//! The stub is parsed (and validated) with the `object` crate; the output headers are written
//! here by hand, field by field, because the algorithm pins every field and `object`'s PE writer
//! lays out a whole new image instead of extending an existing one.
//!
//! Differences from the Go imager's `AssembleNative`, all invisible for the stubs Talos ships:
//!
//! * `SizeOfHeaders` counts the 4-byte `PE\0\0` signature (Go leaves it out, which only matters
//!   when the header size lands within 4 bytes of a `FileAlignment` boundary, where Go's output
//!   would lose the end of its section table).
//! * A COFF symbol table in the stub (Debian's `linuxx64.efi.stub` has one; Go refuses such
//!   stubs) is dropped: `PointerToSymbolTable` and `NumberOfSymbols` become 0. Images never use
//!   it and the trailing bytes are not copied.
//! * The certificate table directory entry (index 4) is cleared: a signed stub's signature does
//!   not cover the UKI and points at trailing bytes that are not copied. A signer adds its own.
//! * New sections start after the highest `VirtualAddress + VirtualSize` of the stub (Go takes the
//!   last table entry, the same thing for linker-made stubs), and a section without raw data
//!   gets `PointerToRawData` 0 as the PE format asks.
//! * `TimeDateStamp` is the stub's unless [`AssembleOptions::timestamp`] says otherwise (Go uses
//!   `SOURCE_DATE_EPOCH` or the current time): the output is a function of the inputs.

use std::io::Write;

use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::LittleEndian as LE;

use crate::section::{Section, SectionData, SectionName};
use crate::Error;

/// Where the NT headers start in the output: the stub's DOS program is dropped, as in Go.
const NT_HEADERS_OFFSET: u32 = 0x80;
const DOS_HEADER_LEN: usize = 0x40;
const PE_SIGNATURE_LEN: u32 = 4;
const COFF_HEADER_LEN: u32 = 20;
const SECTION_HEADER_LEN: u32 = 40;
const IMAGE_SCN_CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
const IMAGE_SCN_MEM_READ: u32 = 0x4000_0000;
/// `IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ`, the flags of every appended section.
pub const APPENDED_SECTION_CHARACTERISTICS: u32 = IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ;

// Offsets inside the PE32+ optional header.
const OPT_MAJOR_LINKER: usize = 2;
const OPT_MINOR_LINKER: usize = 3;
const OPT_SIZE_OF_CODE: usize = 4;
const OPT_SIZE_OF_INITIALIZED_DATA: usize = 8;
const OPT_SIZE_OF_IMAGE: usize = 56;
const OPT_SIZE_OF_HEADERS: usize = 60;
const OPT_CHECKSUM: usize = 64;
const OPT_DATA_DIRECTORIES: usize = 112;
const CERTIFICATE_TABLE_INDEX: usize = 4;

/// The PE machine types of the two Talos architectures.
pub const MACHINE_AMD64: u16 = 0x8664;
pub const MACHINE_ARM64: u16 = 0xaa64;

/// One section of the stub, as read from its section table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StubSection {
    pub name: SectionName,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub size_of_raw_data: u32,
    pub pointer_to_raw_data: u32,
    pub characteristics: u32,
}

/// A parsed systemd-stub (`linuxx64.efi.stub`, `linuxaa64.efi.stub`): a PE32+ image, held in
/// memory (it is ~100 KiB).
#[derive(Clone)]
pub struct Stub {
    bytes: Vec<u8>,
    dos_header: [u8; DOS_HEADER_LEN],
    machine: u16,
    time_date_stamp: u32,
    coff_characteristics: u16,
    optional_header: Vec<u8>,
    section_alignment: u32,
    file_alignment: u32,
    number_of_rva_and_sizes: u32,
    sections: Vec<StubSection>,
}

impl Stub {
    /// Parses and checks a stub: a PE32+ image whose section raw data lies inside the file.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidStub(reason);
        let pe = PeFile64::parse(bytes.as_slice()).map_err(|e| invalid(e.to_string()))?;
        let nt_offset = pe.dos_header().nt_headers_offset() as usize;
        let nt = pe.nt_headers();
        let file_header = nt.file_header();
        let optional = nt.optional_header();

        let optional_start = nt_offset + (PE_SIGNATURE_LEN + COFF_HEADER_LEN) as usize;
        let optional_len = usize::from(file_header.size_of_optional_header.get(LE));
        let number_of_rva_and_sizes = optional.number_of_rva_and_sizes();
        let directories_end = OPT_DATA_DIRECTORIES as u64 + 8 * u64::from(number_of_rva_and_sizes);
        if (optional_len as u64) < directories_end {
            return Err(invalid(format!(
                "optional header of {optional_len} bytes cannot hold {number_of_rva_and_sizes} data directories"
            )));
        }
        let optional_header = bytes
            .get(optional_start..optional_start + optional_len)
            .ok_or_else(|| invalid("optional header outside the file".to_owned()))?
            .to_vec();

        let section_alignment = optional.section_alignment();
        let file_alignment = optional.file_alignment();
        for (what, value) in [
            ("SectionAlignment", section_alignment),
            ("FileAlignment", file_alignment),
        ] {
            if value == 0 || !value.is_power_of_two() {
                return Err(invalid(format!("{what} {value:#x} is not a power of two")));
            }
        }

        let mut sections = Vec::new();
        for header in pe.section_table().iter() {
            let section = StubSection {
                name: SectionName::from_raw(header.name),
                virtual_size: header.virtual_size.get(LE),
                virtual_address: header.virtual_address.get(LE),
                size_of_raw_data: header.size_of_raw_data.get(LE),
                pointer_to_raw_data: header.pointer_to_raw_data.get(LE),
                characteristics: header.characteristics.get(LE).0,
            };
            let end = u64::from(section.pointer_to_raw_data) + u64::from(section.size_of_raw_data);
            if section.size_of_raw_data != 0 && end > bytes.len() as u64 {
                return Err(invalid(format!(
                    "raw data of section {} ends at {end:#x}, past the end of the file ({:#x})",
                    section.name,
                    bytes.len()
                )));
            }
            sections.push(section);
        }
        if sections.is_empty() {
            return Err(invalid("no sections".to_owned()));
        }

        let mut dos_header = [0u8; DOS_HEADER_LEN];
        dos_header.copy_from_slice(
            bytes
                .get(..DOS_HEADER_LEN)
                .ok_or_else(|| invalid("shorter than a DOS header".to_owned()))?,
        );

        Ok(Self {
            dos_header,
            machine: file_header.machine.get(LE).0,
            time_date_stamp: file_header.time_date_stamp.get(LE),
            coff_characteristics: file_header.characteristics.get(LE).0,
            optional_header,
            section_alignment,
            file_alignment,
            number_of_rva_and_sizes,
            sections,
            bytes,
        })
    }

    /// `IMAGE_FILE_MACHINE_*` ([`MACHINE_AMD64`], [`MACHINE_ARM64`]).
    pub fn machine(&self) -> u16 {
        self.machine
    }

    pub fn sections(&self) -> &[StubSection] {
        &self.sections
    }

    pub fn section_alignment(&self) -> u32 {
        self.section_alignment
    }

    pub fn file_alignment(&self) -> u32 {
        self.file_alignment
    }

    /// The raw data of a stub section (`SizeOfRawData` bytes, alignment padding included).
    pub fn section_raw_data(&self, section: &StubSection) -> &[u8] {
        let start = section.pointer_to_raw_data as usize;
        // In bounds: checked by `parse`.
        &self.bytes[start..start + section.size_of_raw_data as usize]
    }

    /// The stub's `.sbat` trimmed to its `VirtualSize`: what systemd-measure (and the PCR 11
    /// prediction of a signed UKI) measures, since the section itself is kept, not appended.
    pub fn sbat(&self) -> Option<&[u8]> {
        let section = self.sections.iter().find(|s| s.name == SectionName::SBAT)?;
        let raw = self.section_raw_data(section);
        Some(&raw[..raw.len().min(section.virtual_size as usize)])
    }
}

impl std::fmt::Debug for Stub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stub")
            .field("len", &self.bytes.len())
            .field("machine", &format_args!("{:#x}", self.machine))
            .field("section_alignment", &self.section_alignment)
            .field("file_alignment", &self.file_alignment)
            .field("sections", &self.sections)
            .finish_non_exhaustive()
    }
}

/// Choices of the assembly that are not in the inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssembleOptions {
    /// COFF `TimeDateStamp`; `None` keeps the stub's. Pass the release's `SOURCE_DATE_EPOCH` for
    /// a Go-like header; either way the output only depends on the inputs.
    pub timestamp: Option<u32>,
}

/// One section of the output, where it lies in the file and in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedSection {
    pub name: SectionName,
    pub virtual_address: u32,
    pub virtual_size: u32,
    pub pointer_to_raw_data: u32,
    pub size_of_raw_data: u32,
    pub characteristics: u32,
    /// `true` for the stub's own sections, `false` for appended ones.
    pub from_stub: bool,
}

/// The computed layout of a UKI: enough for a later signer to hash or patch the image without
/// parsing it again (the Authenticode digest skips the checksum and the certificate table entry,
/// and the signature goes at `file_size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub size_of_headers: u32,
    pub size_of_image: u32,
    pub section_alignment: u32,
    pub file_alignment: u32,
    /// All sections, stub first, in table (= file) order.
    pub sections: Vec<PlacedSection>,
    /// Bytes written in total (headers + every section's raw data).
    pub file_size: u64,
    /// File offset of the optional header's `CheckSum` (written as 0).
    pub checksum_offset: u64,
    /// File offset of data directory 4 (certificate table, written as zeros), if the stub has one.
    pub certificate_table_entry_offset: Option<u64>,
}

/// A UKI ready to be written: headers computed, section sources waiting to be streamed.
pub struct Uki<'s> {
    stub: &'s Stub,
    headers: Vec<u8>,
    layout: Layout,
    appended: Vec<(SectionName, u64, SectionData)>,
}

impl std::fmt::Debug for Uki<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uki")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<'s> Uki<'s> {
    /// Lays out `stub` with `sections` appended in the given order (§8.2). File sources are
    /// sized now; nothing is read yet.
    pub fn new(stub: &'s Stub, sections: Vec<Section>, options: &AssembleOptions) -> Result<Self, Error> {
        let too_large = |what: &str| Error::TooLarge(what.to_owned());
        let section_alignment = stub.section_alignment;
        let file_alignment = stub.file_alignment;

        let mut appended = Vec::with_capacity(sections.len());
        for section in sections {
            let len = section.data.len()?;
            appended.push((section.name, len, section.data));
        }

        let total_sections = stub.sections.len() + appended.len();
        let number_of_sections =
            u16::try_from(total_sections).map_err(|_| too_large("more than 65535 sections"))?;
        let headers_len = u64::from(NT_HEADERS_OFFSET)
            + u64::from(PE_SIGNATURE_LEN + COFF_HEADER_LEN)
            + stub.optional_header.len() as u64
            + u64::from(SECTION_HEADER_LEN) * total_sections as u64;
        let size_of_headers = align_up(headers_len, file_alignment)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| too_large("headers"))?;
        // The headers are mapped at RVA 0; they must not run into the first section.
        if let Some(first_va) = stub.sections.iter().map(|s| s.virtual_address).min() {
            if size_of_headers > first_va {
                return Err(Error::InvalidStub(format!(
                    "no room for {total_sections} section headers: SizeOfHeaders {size_of_headers:#x} would pass the first section at {first_va:#x}"
                )));
            }
        }

        // Stub sections keep their memory layout; file offsets are reassigned sequentially.
        let mut placed = Vec::with_capacity(total_sections);
        let mut file_offset = u64::from(size_of_headers);
        let mut place_raw = |size_of_raw_data: u32| -> Result<u32, Error> {
            if size_of_raw_data == 0 {
                return Ok(0);
            }
            let pointer = u32::try_from(file_offset).map_err(|_| too_large("file offsets"))?;
            file_offset += u64::from(size_of_raw_data);
            Ok(pointer)
        };
        for s in &stub.sections {
            placed.push(PlacedSection {
                name: s.name,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                pointer_to_raw_data: place_raw(s.size_of_raw_data)?,
                size_of_raw_data: s.size_of_raw_data,
                characteristics: s.characteristics,
                from_stub: true,
            });
        }
        let stub_end = stub
            .sections
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
            .max()
            .unwrap_or(0);
        let mut next_va = align_up(stub_end, section_alignment).ok_or_else(|| too_large("image"))?;
        for (name, len, _) in &appended {
            let virtual_size =
                u32::try_from(*len).map_err(|_| too_large(&format!("section {name} ({len} bytes)")))?;
            let size_of_raw_data = align_up(*len, file_alignment)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| too_large(&format!("section {name} ({len} bytes)")))?;
            let virtual_address =
                u32::try_from(next_va).map_err(|_| too_large("image (virtual addresses)"))?;
            placed.push(PlacedSection {
                name: *name,
                virtual_address,
                virtual_size,
                pointer_to_raw_data: place_raw(size_of_raw_data)?,
                size_of_raw_data,
                characteristics: APPENDED_SECTION_CHARACTERISTICS,
                from_stub: false,
            });
            next_va = align_up(next_va + *len, section_alignment)
                .ok_or_else(|| too_large("image (virtual addresses)"))?;
        }
        let image_end = placed
            .iter()
            .map(|s| u64::from(s.virtual_address) + u64::from(s.virtual_size))
            .max()
            .unwrap_or(0);
        let size_of_image = align_up(image_end, section_alignment)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| too_large("image (SizeOfImage)"))?;

        // Go's rule: raw sizes of sections flagged as initialized data, everything else is code.
        let (mut size_of_code, mut size_of_initialized_data) = (0u32, 0u32);
        for s in &placed {
            let sum = if s.characteristics & IMAGE_SCN_CNT_INITIALIZED_DATA != 0 {
                &mut size_of_initialized_data
            } else {
                &mut size_of_code
            };
            *sum = sum
                .checked_add(s.size_of_raw_data)
                .ok_or_else(|| too_large("SizeOfCode/SizeOfInitializedData"))?;
        }

        // The headers, byte by byte.
        let mut headers = Vec::with_capacity(size_of_headers as usize);
        let mut dos = stub.dos_header;
        dos[0x3c..0x40].copy_from_slice(&NT_HEADERS_OFFSET.to_le_bytes());
        headers.extend_from_slice(&dos);
        headers.resize(NT_HEADERS_OFFSET as usize, 0);
        headers.extend_from_slice(b"PE\0\0");
        headers.extend_from_slice(&stub.machine.to_le_bytes());
        headers.extend_from_slice(&number_of_sections.to_le_bytes());
        headers.extend_from_slice(&options.timestamp.unwrap_or(stub.time_date_stamp).to_le_bytes());
        headers.extend_from_slice(&0u32.to_le_bytes()); // PointerToSymbolTable
        headers.extend_from_slice(&0u32.to_le_bytes()); // NumberOfSymbols
        let optional_len = u16::try_from(stub.optional_header.len())
            .map_err(|_| Error::InvalidStub("optional header too long".to_owned()))?;
        headers.extend_from_slice(&optional_len.to_le_bytes());
        headers.extend_from_slice(&stub.coff_characteristics.to_le_bytes());

        let optional_start = headers.len();
        let mut optional = stub.optional_header.clone();
        optional[OPT_MAJOR_LINKER] = 0;
        optional[OPT_MINOR_LINKER] = 0;
        put_u32(&mut optional, OPT_SIZE_OF_CODE, size_of_code);
        put_u32(
            &mut optional,
            OPT_SIZE_OF_INITIALIZED_DATA,
            size_of_initialized_data,
        );
        put_u32(&mut optional, OPT_SIZE_OF_IMAGE, size_of_image);
        put_u32(&mut optional, OPT_SIZE_OF_HEADERS, size_of_headers);
        put_u32(&mut optional, OPT_CHECKSUM, 0);
        let certificate_entry = (stub.number_of_rva_and_sizes as usize > CERTIFICATE_TABLE_INDEX)
            .then_some(OPT_DATA_DIRECTORIES + 8 * CERTIFICATE_TABLE_INDEX);
        if let Some(at) = certificate_entry {
            optional[at..at + 8].fill(0);
        }
        headers.extend_from_slice(&optional);

        for s in &placed {
            headers.extend_from_slice(&s.name.raw());
            headers.extend_from_slice(&s.virtual_size.to_le_bytes());
            headers.extend_from_slice(&s.virtual_address.to_le_bytes());
            headers.extend_from_slice(&s.size_of_raw_data.to_le_bytes());
            headers.extend_from_slice(&s.pointer_to_raw_data.to_le_bytes());
            headers.extend_from_slice(&[0u8; 12]); // relocations, line numbers and their counts
            headers.extend_from_slice(&s.characteristics.to_le_bytes());
        }
        debug_assert_eq!(headers.len() as u64, headers_len);
        headers.resize(size_of_headers as usize, 0);

        let layout = Layout {
            size_of_headers,
            size_of_image,
            section_alignment,
            file_alignment,
            sections: placed,
            file_size: file_offset,
            checksum_offset: (optional_start + OPT_CHECKSUM) as u64,
            certificate_table_entry_offset: certificate_entry.map(|at| (optional_start + at) as u64),
        };
        Ok(Self {
            stub,
            headers,
            layout,
            appended,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The header bytes (`SizeOfHeaders` long), as they will be written.
    pub fn headers(&self) -> &[u8] {
        &self.headers
    }

    /// Streams the image to `out`: headers, then every section's data zero-padded to its raw
    /// size, in file order. Returns the layout (its `file_size` is the number of bytes written).
    pub fn write_to<W: Write>(self, mut out: W) -> Result<Layout, Error> {
        let write_err = |e| Error::io("writing the UKI".to_owned(), e);
        out.write_all(&self.headers).map_err(write_err)?;
        let (from_stub, appended) = self.layout.sections.split_at(self.stub.sections.len());
        for stub_section in &self.stub.sections {
            out.write_all(self.stub.section_raw_data(stub_section))
                .map_err(write_err)?;
        }
        debug_assert_eq!(from_stub.len(), self.stub.sections.len());
        debug_assert_eq!(appended.len(), self.appended.len());
        for (section, (name, len, data)) in appended.iter().zip(self.appended) {
            data.copy_to(name, len, &mut out)?;
            let padding = u64::from(section.size_of_raw_data) - len;
            write_zeros(&mut out, padding).map_err(write_err)?;
        }
        out.flush().map_err(write_err)?;
        Ok(self.layout)
    }
}

/// Lays out and writes a UKI in one call; see [`Uki::new`] and [`Uki::write_to`].
pub fn assemble<W: Write>(
    stub: &Stub,
    sections: Vec<Section>,
    options: &AssembleOptions,
    out: W,
) -> Result<Layout, Error> {
    Uki::new(stub, sections, options)?.write_to(out)
}

fn put_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

/// `value` rounded up to a multiple of `alignment` (a power of two); `None` on overflow.
fn align_up(value: u64, alignment: u32) -> Option<u64> {
    let mask = u64::from(alignment) - 1;
    value.checked_add(mask).map(|v| v & !mask)
}

fn write_zeros(out: &mut dyn Write, mut count: u64) -> std::io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while count > 0 {
        let n = count.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..n])?;
        count -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::SectionData;

    #[test]
    fn align_up_rounds_to_powers_of_two() {
        assert_eq!(align_up(0, 0x200), Some(0));
        assert_eq!(align_up(1, 0x200), Some(0x200));
        assert_eq!(align_up(0x200, 0x200), Some(0x200));
        assert_eq!(align_up(0x1001, 0x1000), Some(0x2000));
        assert_eq!(align_up(u64::MAX, 0x200), None);
    }

    struct TinySection {
        name: &'static str,
        va: u32,
        vs: u32,
        raw: Vec<u8>,
        characteristics: u32,
    }

    /// A minimal PE32+ (x86-64, 16 data directories), sections laid out from 0x400, a DOS stub
    /// program, an optional COFF symbol table and a certificate-table entry to see them dropped.
    fn tiny_stub(sections: &[TinySection], symbols: bool) -> Vec<u8> {
        let mut f = vec![0u8; 0x400];
        f[0..2].copy_from_slice(b"MZ");
        f[0x3c..0x40].copy_from_slice(&0xc0u32.to_le_bytes());
        f[0x40..0x50].copy_from_slice(b"DOS stub program");
        let nt = 0xc0;
        f[nt..nt + 4].copy_from_slice(b"PE\0\0");
        let coff = nt + 4;
        f[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        f[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        f[coff + 4..coff + 8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        f[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        f[coff + 18..coff + 20].copy_from_slice(&0x0206u16.to_le_bytes());
        let opt = coff + 20;
        f[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        f[opt + 2] = 2;
        f[opt + 3] = 40;
        f[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes()); // SectionAlignment
        f[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes()); // FileAlignment
        f[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes()); // SizeOfHeaders
        f[opt + 64..opt + 68].copy_from_slice(&0xabcdu32.to_le_bytes()); // CheckSum
        f[opt + 68..opt + 70].copy_from_slice(&10u16.to_le_bytes()); // EFI application
        f[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        f[opt + 112 + 40..opt + 112 + 48].copy_from_slice(&[0x11; 8]); // base relocations
        let table = opt + 240;
        let mut end = 0x400u32;
        let mut image_end = 0;
        for (i, s) in sections.iter().enumerate() {
            let h = table + 40 * i;
            f[h..h + s.name.len()].copy_from_slice(s.name.as_bytes());
            f[h + 8..h + 12].copy_from_slice(&s.vs.to_le_bytes());
            f[h + 12..h + 16].copy_from_slice(&s.va.to_le_bytes());
            f[h + 16..h + 20].copy_from_slice(&(s.raw.len() as u32).to_le_bytes());
            f[h + 20..h + 24].copy_from_slice(&end.to_le_bytes());
            f[h + 36..h + 40].copy_from_slice(&s.characteristics.to_le_bytes());
            f.extend_from_slice(&s.raw);
            end += s.raw.len() as u32;
            image_end = image_end.max(s.va + s.vs);
        }
        f[opt + 56..opt + 60]
            .copy_from_slice(&align_up(u64::from(image_end), 0x1000).unwrap_or(0).to_le_bytes()[..4]);
        if symbols {
            f[coff + 8..coff + 12].copy_from_slice(&end.to_le_bytes());
            f[coff + 12..coff + 16].copy_from_slice(&1u32.to_le_bytes());
            f.extend_from_slice(&[0u8; 18]); // one symbol
            f.extend_from_slice(&4u32.to_le_bytes()); // empty string table
                                                      // A signature-like trailer the certificate entry points at.
            let at = f.len() as u32;
            f.extend_from_slice(&[0xee; 16]);
            f[opt + 112 + 32..opt + 112 + 36].copy_from_slice(&at.to_le_bytes());
            f[opt + 112 + 36..opt + 112 + 40].copy_from_slice(&16u32.to_le_bytes());
        }
        f
    }

    fn two_sections() -> Vec<TinySection> {
        vec![
            TinySection {
                name: ".text",
                va: 0x1000,
                vs: 0x234,
                raw: vec![0xc3; 0x400],
                characteristics: 0x6000_0020,
            },
            TinySection {
                name: ".sbat",
                va: 0x2000,
                vs: 0x10,
                raw: {
                    let mut r = b"sbat,1,SBAT\n....".to_vec();
                    r.resize(0x200, 0);
                    r
                },
                characteristics: 0x4000_0040,
            },
        ]
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
    }

    #[test]
    fn header_math_follows_the_imager() {
        let stub = Stub::parse(tiny_stub(&two_sections(), true)).expect("stub");
        assert_eq!(stub.machine(), MACHINE_AMD64);
        assert_eq!(stub.sbat(), Some(&b"sbat,1,SBAT\n...."[..]));
        let sections = vec![
            Section::new(SectionName::OSREL, "NAME=x\n"),
            Section::new(SectionName::CMDLINE, "console=ttyS0"),
            Section::new(SectionName::LINUX, vec![7u8; 0x1001]),
        ];
        let mut out = Vec::new();
        let layout = assemble(&stub, sections, &AssembleOptions::default(), &mut out).expect("assemble");
        assert_eq!(out.len() as u64, layout.file_size);

        // DOS header kept, e_lfanew 0x80, DOS program dropped, NT headers at 0x80.
        assert_eq!(&out[0..2], b"MZ");
        assert_eq!(u32_at(&out, 0x3c), 0x80);
        assert!(out[0x40..0x80].iter().all(|&b| b == 0));
        assert_eq!(&out[0x80..0x84], b"PE\0\0");
        let coff = 0x84;
        assert_eq!(u16_at(&out, coff + 2), 5, "NumberOfSections");
        assert_eq!(u32_at(&out, coff + 4), 0x1234_5678, "stub's TimeDateStamp kept");
        assert_eq!(u32_at(&out, coff + 8), 0, "symbol table dropped");
        assert_eq!(u32_at(&out, coff + 12), 0);
        let opt = coff + 20;
        assert_eq!((out[opt + 2], out[opt + 3]), (0, 0), "linker version");
        // 0x80 + 4 + 20 + 240 + 5 × 40 = 0x254 → 0x400.
        assert_eq!(layout.size_of_headers, 0x400);
        assert_eq!(u32_at(&out, opt + 60), 0x400);
        assert_eq!(u32_at(&out, opt + 64), 0, "CheckSum");
        assert_eq!(layout.checksum_offset, (opt + 64) as u64);
        assert_eq!(
            layout.certificate_table_entry_offset,
            Some((opt + 112 + 32) as u64)
        );
        assert!(
            out[opt + 144..opt + 152].iter().all(|&b| b == 0),
            "certificate entry cleared"
        );
        assert_eq!(&out[opt + 152..opt + 160], &[0x11; 8], "other directories kept");

        let placed: Vec<(&str, u32, u32, u32, u32)> = layout
            .sections
            .iter()
            .map(|s| {
                (
                    s.name.as_str(),
                    s.virtual_address,
                    s.virtual_size,
                    s.pointer_to_raw_data,
                    s.size_of_raw_data,
                )
            })
            .collect();
        assert_eq!(
            placed,
            [
                (".text", 0x1000, 0x234, 0x400, 0x400),
                (".sbat", 0x2000, 0x10, 0x800, 0x200),
                (".osrel", 0x3000, 7, 0xa00, 0x200),
                (".cmdline", 0x4000, 13, 0xc00, 0x200),
                (".linux", 0x5000, 0x1001, 0xe00, 0x1200),
            ]
        );
        assert_eq!(layout.size_of_image, 0x7000);
        assert_eq!(u32_at(&out, opt + 56), 0x7000);
        assert_eq!(u32_at(&out, opt + 4), 0x400, "SizeOfCode: .text");
        assert_eq!(u32_at(&out, opt + 8), 0x200 * 3 + 0x1200, "SizeOfInitializedData");
        assert_eq!(layout.file_size, 0x2000);

        // Section table entries and data.
        let table = opt + 240;
        let entry = |i: usize| &out[table + 40 * i..table + 40 * (i + 1)];
        assert_eq!(&entry(3)[..8], b".cmdline");
        assert_eq!(u32_at(entry(3), 36), APPENDED_SECTION_CHARACTERISTICS);
        assert_eq!(&out[0xc00..0xc00 + 13], b"console=ttyS0");
        assert!(out[0xc00 + 13..0xe00].iter().all(|&b| b == 0));
        assert_eq!(&out[0x400..0x800], &[0xc3; 0x400][..]);
        assert_eq!(&out[0x800..0x80c], b"sbat,1,SBAT\n");

        // The result parses as a PE again (and as a stub).
        let again = Stub::parse(out.clone()).expect("reparse");
        assert_eq!(again.sections().len(), 5);
        let pe = PeFile64::parse(out.as_slice()).expect("object parses the UKI");
        assert_eq!(pe.section_table().len(), 5);
    }

    #[test]
    fn timestamp_and_streaming_sources() {
        let stub = Stub::parse(tiny_stub(&two_sections(), false)).expect("stub");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("initrd");
        std::fs::write(&path, &data).expect("write");
        let build = |source: SectionData| {
            let mut out = Vec::new();
            let options = AssembleOptions { timestamp: Some(42) };
            assemble(
                &stub,
                vec![Section::new(SectionName::INITRD, source)],
                &options,
                &mut out,
            )
            .expect("assemble");
            out
        };
        let from_bytes = build(SectionData::Bytes(data.clone()));
        let from_file = build(SectionData::File(path));
        let from_reader = build(SectionData::Reader {
            len: data.len() as u64,
            reader: Box::new(std::io::Cursor::new(data.clone())),
        });
        assert_eq!(from_bytes, from_file);
        assert_eq!(from_bytes, from_reader);
        assert_eq!(u32_at(&from_bytes, 0x84 + 4), 42);
    }

    #[test]
    fn readers_must_match_their_announced_size() {
        let stub = Stub::parse(tiny_stub(&two_sections(), false)).expect("stub");
        for (len, actual) in [(10u64, 9usize), (10, 11)] {
            let section = Section::new(
                SectionName::INITRD,
                SectionData::Reader {
                    len,
                    reader: Box::new(std::io::Cursor::new(vec![1u8; actual])),
                },
            );
            let err = assemble(&stub, vec![section], &AssembleOptions::default(), std::io::sink())
                .expect_err("size mismatch");
            assert_eq!(
                err.to_string(),
                "section .initrd changed size: 10 bytes were announced"
            );
        }
    }

    #[test]
    fn refuses_what_cannot_be_a_uki() {
        assert!(matches!(
            Stub::parse(b"MZ but nothing else".to_vec()),
            Err(Error::InvalidStub(_))
        ));
        // The first section at 0x200 leaves no room once the table grows past 0x200 bytes.
        let mut sections = two_sections();
        sections[0].va = 0x200;
        let stub = Stub::parse(tiny_stub(&sections, false)).expect("stub");
        let three = || {
            [SectionName::OSREL, SectionName::CMDLINE, SectionName::LINUX]
                .into_iter()
                .map(|name| Section::new(name, "x"))
                .collect::<Vec<_>>()
        };
        // 0x80 + 4 + 20 + 240 + 5 × 40 = 0x24c → 0x400, past the first section at 0x200.
        let err = Uki::new(&stub, three(), &AssembleOptions::default()).expect_err("no room");
        assert!(err.to_string().contains("no room for 5 section headers"), "{err}");
        // Two headers fit exactly.
        Uki::new(&stub, vec![], &AssembleOptions::default()).expect("fits");
        assert!(SectionName::new(".toolongname").is_err());
        assert!(SectionName::new("").is_err());
        assert!(SectionName::new(".a b").is_err());
        assert_eq!(SectionName::new(".pcrsig").expect("name"), SectionName::PCRSIG);
    }
}
