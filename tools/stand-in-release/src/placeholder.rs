//! Small placeholder boot parts with the headers real tools look at, used when the host lacks
//! the real parts (and always for arm64): they are not bootable, but a kernel-version probe, a
//! PE section parser or `file`/`objdump -h` reads them like the real thing (talos-imager §14.4).

/// An x86 "bzImage" of 4 KiB: boot-sector signature, `HdrS` setup header (protocol 2.15,
/// loaded high) and the kernel-version pointer at 0x20e, aimed at `<kver> (...)` inside the
/// setup area.
pub fn bzimage(kernel_release: &str) -> Vec<u8> {
    const SETUP_SECTS: u8 = 3;
    const VERSION_AT: usize = 0x400;
    let mut image = vec![0u8; 4096];
    image[0x1f1] = SETUP_SECTS;
    image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    image[0x211] = 0x01; // loadflags LOADED_HIGH: a "big" kernel, i.e. bzImage
    let pointer = u16::try_from(VERSION_AT - 0x200).unwrap_or(0);
    image[0x20e..0x210].copy_from_slice(&pointer.to_le_bytes());
    let version = format!("{kernel_release} (stand-in@talos-factory-rs) #1 SMP PREEMPT_DYNAMIC stand-in\0");
    image[VERSION_AT..VERSION_AT + version.len()].copy_from_slice(version.as_bytes());
    let note = b"STAND-IN PLACEHOLDER KERNEL: not bootable (run scripts/fetch-boot-parts for a real one)\n";
    image[2048..2048 + note.len()].copy_from_slice(note);
    image
}

/// An arm64 kernel `Image` header (magic `ARM\x64` at 0x38) followed by a Linux banner.
pub fn arm64_image(kernel_release: &str) -> Vec<u8> {
    let mut image = vec![0u8; 64];
    image[8..16].copy_from_slice(&0x80000u64.to_le_bytes()); // text_offset
    image[0x38..0x3c].copy_from_slice(b"ARM\x64");
    image.extend_from_slice(
        format!(
            "Linux version {kernel_release} (stand-in@talos-factory-rs) #1 SMP PREEMPT stand-in\n\
             STAND-IN PLACEHOLDER KERNEL: not bootable\n"
        )
        .as_bytes(),
    );
    image.resize(4096, 0);
    image
}

/// A busybox stand-in: a shell script, so the layout is the same as with the real binary.
pub fn busybox() -> Vec<u8> {
    b"#!/bin/sh\n# STAND-IN PLACEHOLDER busybox (run scripts/fetch-boot-parts for a real one)\nexit 1\n"
        .to_vec()
}

/// The PE machine types of the two architectures.
pub const PE_AMD64: u16 = 0x8664;
pub const PE_ARM64: u16 = 0xaa64;

/// systemd-boot stand-in: PE32+ EFI application with `.text`, `.sbat` and `.sdmagic`.
pub fn systemd_boot(machine: u16) -> Vec<u8> {
    pe32plus(
        machine,
        &[
            (".text", &[0xc3; 16][..]),
            (".sbat", SBAT.as_bytes()),
            (".sdmagic", b"#### LoaderInfo: systemd-boot 252 (stand-in) ####\0"),
        ],
    )
}

/// systemd-stub stand-in: like [`systemd_boot`], with the stub's `.sdmagic`.
pub fn systemd_stub(machine: u16) -> Vec<u8> {
    pe32plus(
        machine,
        &[
            (".text", &[0xc3; 16][..]),
            (".sbat", SBAT.as_bytes()),
            (".sdmagic", b"#### LoaderInfo: systemd-stub 252 (stand-in) ####\0"),
        ],
    )
}

const SBAT: &str = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n\
                    systemd,1,The systemd Developers,systemd,252,https://systemd.io/\n\
                    systemd.stand-in,1,talos-factory-rs,systemd,252,https://example.invalid/stand-in\n";

const FILE_ALIGN: u32 = 0x200;
const SECTION_ALIGN: u32 = 0x1000;

fn align(value: u32, to: u32) -> u32 {
    value.div_ceil(to) * to
}

/// A minimal valid PE32+ image (EFI application subsystem) holding `sections` in order; the
/// first section is the entry point. Enough for section-table parsers and UKI assembly (which
/// appends sections after the last one's virtual address).
pub fn pe32plus(machine: u16, sections: &[(&str, &[u8])]) -> Vec<u8> {
    let count = u16::try_from(sections.len()).unwrap_or(u16::MAX);
    let headers_len = 0x40 + 4 + 20 + 240 + 40 * u32::from(count);
    let size_of_headers = align(headers_len, FILE_ALIGN);

    // Place sections: raw data file-aligned after the headers, virtual addresses page-aligned.
    let mut placed = Vec::new();
    let (mut raw_at, mut va) = (size_of_headers, SECTION_ALIGN);
    for (name, data) in sections {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let raw_len = align(len, FILE_ALIGN);
        placed.push((*name, *data, len, va, raw_at, raw_len));
        raw_at += raw_len;
        va = align(va + len.max(1), SECTION_ALIGN);
    }
    let size_of_image = va;
    let entry = placed.first().map(|p| p.3).unwrap_or(0);
    let code_size = placed.first().map(|p| p.5).unwrap_or(0);

    let mut out = Vec::with_capacity(raw_at as usize);
    // DOS header: "MZ" and e_lfanew = 0x40.
    out.extend_from_slice(b"MZ");
    out.resize(0x3c, 0);
    out.extend_from_slice(&0x40u32.to_le_bytes());
    // PE signature and COFF header.
    out.extend_from_slice(b"PE\0\0");
    out.extend_from_slice(&machine.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // timestamp 0 (reproducible), no symbol table
    out.extend_from_slice(&240u16.to_le_bytes()); // SizeOfOptionalHeader
    out.extend_from_slice(&0x0022u16.to_le_bytes()); // executable, large-address-aware
                                                     // Optional header (PE32+).
    out.extend_from_slice(&0x020bu16.to_le_bytes());
    out.extend_from_slice(&[2, 40]); // linker version
    for field in [code_size, raw_at - size_of_headers - code_size, 0, entry, entry] {
        out.extend_from_slice(&field.to_le_bytes()); // code, init data, bss, entry, base of code
    }
    out.extend_from_slice(&0u64.to_le_bytes()); // ImageBase
    out.extend_from_slice(&SECTION_ALIGN.to_le_bytes());
    out.extend_from_slice(&FILE_ALIGN.to_le_bytes());
    out.extend_from_slice(&[0; 12]); // OS, image and subsystem versions
    out.extend_from_slice(&0u32.to_le_bytes()); // Win32VersionValue
    out.extend_from_slice(&size_of_image.to_le_bytes());
    out.extend_from_slice(&size_of_headers.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // CheckSum
    out.extend_from_slice(&10u16.to_le_bytes()); // Subsystem: EFI application
    out.extend_from_slice(&0u16.to_le_bytes()); // DllCharacteristics
    for field in [0x10000u64, 0x10000, 0x10000, 0x10000] {
        out.extend_from_slice(&field.to_le_bytes()); // stack and heap reserve/commit
    }
    out.extend_from_slice(&0u32.to_le_bytes()); // LoaderFlags
    out.extend_from_slice(&16u32.to_le_bytes()); // NumberOfRvaAndSizes
    out.extend_from_slice(&[0; 16 * 8]); // data directories, all empty
                                         // Section table.
    for (i, (name, _, len, va, raw_at, raw_len)) in placed.iter().enumerate() {
        let mut name8 = [0u8; 8];
        let bytes = name.as_bytes();
        name8[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        out.extend_from_slice(&name8);
        for field in [*len, *va, *raw_len, *raw_at, 0, 0] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(&[0; 4]); // relocation and line-number counts
        let characteristics: u32 = if i == 0 { 0x6000_0020 } else { 0x4000_0040 };
        out.extend_from_slice(&characteristics.to_le_bytes());
    }
    out.resize(size_of_headers as usize, 0);
    for (_, data, _, _, raw_at, raw_len) in &placed {
        debug_assert_eq!(out.len(), *raw_at as usize);
        out.extend_from_slice(data);
        out.resize((*raw_at + *raw_len) as usize, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bzimage_header_points_at_the_version() {
        let image = bzimage("6.1.0-stand-in");
        assert_eq!(&image[0x202..0x206], b"HdrS");
        let pointer = u16::from_le_bytes([image[0x20e], image[0x20f]]) as usize + 0x200;
        assert!(image[pointer..].starts_with(b"6.1.0-stand-in "));
    }

    #[test]
    fn pe_has_sections_where_the_table_says() {
        let pe = systemd_stub(PE_AMD64);
        assert_eq!(&pe[..2], b"MZ");
        assert_eq!(&pe[0x40..0x44], b"PE\0\0");
        let count = u16::from_le_bytes([pe[0x46], pe[0x47]]) as usize;
        assert_eq!(count, 3);
        let table = 0x40 + 4 + 20 + 240;
        let sbat = &pe[table + 40..table + 80];
        assert_eq!(&sbat[..5], b".sbat");
        let raw_at = u32::from_le_bytes([sbat[20], sbat[21], sbat[22], sbat[23]]) as usize;
        assert!(pe[raw_at..].starts_with(b"sbat,1,"));
    }
}
