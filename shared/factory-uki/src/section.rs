//! Sections to append: a name and where the bytes come from, with the size known up front (the
//! PE headers, written first, carry every section's size and place).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use crate::Error;

/// A PE section name: 1 to 8 bytes of printable ASCII, stored NUL-padded in the section table
/// (the UKI carries no COFF string table, so longer names are impossible).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionName([u8; 8]);

impl SectionName {
    pub const OSREL: SectionName = SectionName::from_static(".osrel");
    pub const CMDLINE: SectionName = SectionName::from_static(".cmdline");
    pub const UNAME: SectionName = SectionName::from_static(".uname");
    pub const SPLASH: SectionName = SectionName::from_static(".splash");
    pub const PCRPKEY: SectionName = SectionName::from_static(".pcrpkey");
    pub const LINUX: SectionName = SectionName::from_static(".linux");
    pub const INITRD: SectionName = SectionName::from_static(".initrd");
    pub const PROFILE: SectionName = SectionName::from_static(".profile");
    pub const PCRSIG: SectionName = SectionName::from_static(".pcrsig");
    pub const SBAT: SectionName = SectionName::from_static(".sbat");

    /// Checks the name: 1 to 8 bytes, printable ASCII (no NUL, no blank).
    pub fn new(name: &str) -> Result<Self, Error> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 8 {
            return Err(Error::SectionName {
                name: name.to_owned(),
                reason: "must be 1 to 8 bytes long",
            });
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(Error::SectionName {
                name: name.to_owned(),
                reason: "must be printable ASCII without blanks",
            });
        }
        let mut raw = [0u8; 8];
        raw[..bytes.len()].copy_from_slice(bytes);
        Ok(Self(raw))
    }

    /// For the constants above (checked at compile time).
    const fn from_static(name: &str) -> Self {
        let bytes = name.as_bytes();
        assert!(!bytes.is_empty() && bytes.len() <= 8);
        let mut raw = [0u8; 8];
        let mut i = 0;
        while i < bytes.len() {
            raw[i] = bytes[i];
            i += 1;
        }
        Self(raw)
    }

    /// A name as found in a section table (NUL-padded); bytes after the first NUL are ignored.
    pub(crate) fn from_raw(raw: [u8; 8]) -> Self {
        let len = raw.iter().position(|&b| b == 0).unwrap_or(8);
        let mut clean = [0u8; 8];
        clean[..len].copy_from_slice(&raw[..len]);
        Self(clean)
    }

    /// The 8 bytes of the section table entry.
    pub fn raw(&self) -> [u8; 8] {
        self.0
    }

    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(8);
        // Names are ASCII by construction; a stub's odd bytes show as the empty string.
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// Where a section's bytes come from. Every variant knows its length before any byte is
/// written; files and readers are streamed, so a large initramfs is never held in memory.
pub enum SectionData {
    /// Small generated contents (`.osrel`, `.cmdline`, …).
    Bytes(Vec<u8>),
    /// A file, sized from its metadata when the layout is computed and read when written; a
    /// file that changes size in between is an error.
    File(PathBuf),
    /// A reader of exactly `len` bytes, read once when written (fewer or more bytes is an error).
    Reader { len: u64, reader: Box<dyn Read + Send> },
}

impl SectionData {
    /// The number of bytes (a file's current size).
    pub fn len(&self) -> Result<u64, Error> {
        match self {
            SectionData::Bytes(b) => Ok(b.len() as u64),
            SectionData::File(path) => std::fs::metadata(path)
                .map(|m| m.len())
                .map_err(|e| Error::io(format!("reading the size of {}", path.display()), e)),
            SectionData::Reader { len, .. } => Ok(*len),
        }
    }

    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len()? == 0)
    }

    /// Copies exactly `len` bytes to `out`; fewer or more is an error naming the section.
    pub(crate) fn copy_to(self, name: SectionName, len: u64, out: &mut dyn io::Write) -> Result<(), Error> {
        match self {
            SectionData::Bytes(bytes) => {
                if bytes.len() as u64 != len {
                    return Err(Error::SizeChanged {
                        section: name.to_string(),
                        expected: len,
                    });
                }
                out.write_all(&bytes)
                    .map_err(|e| Error::io(format!("writing section {name}"), e))
            }
            SectionData::File(path) => {
                let file =
                    File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
                copy_exact(name, Box::new(file), len, out)
            }
            SectionData::Reader { reader, .. } => copy_exact(name, reader, len, out),
        }
    }
}

impl fmt::Debug for SectionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionData::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            SectionData::File(path) => f.debug_tuple("File").field(path).finish(),
            SectionData::Reader { len, .. } => write!(f, "Reader({len} bytes)"),
        }
    }
}

impl From<Vec<u8>> for SectionData {
    fn from(bytes: Vec<u8>) -> Self {
        SectionData::Bytes(bytes)
    }
}

impl From<String> for SectionData {
    fn from(text: String) -> Self {
        SectionData::Bytes(text.into_bytes())
    }
}

impl From<&str> for SectionData {
    fn from(text: &str) -> Self {
        SectionData::Bytes(text.as_bytes().to_vec())
    }
}

/// Streams exactly `len` bytes, then checks that the source has nothing more.
fn copy_exact(
    name: SectionName,
    reader: Box<dyn Read + Send>,
    len: u64,
    out: &mut dyn io::Write,
) -> Result<(), Error> {
    let mut limited = reader.take(len);
    let copied = io::copy(&mut limited, out).map_err(|e| Error::io(format!("copying section {name}"), e))?;
    let size_changed = || Error::SizeChanged {
        section: name.to_string(),
        expected: len,
    };
    if copied != len {
        return Err(size_changed());
    }
    let mut rest = limited.into_inner();
    let mut probe = [0u8; 1];
    loop {
        match rest.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(_) => return Err(size_changed()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(format!("reading section {name}"), e)),
        }
    }
}

/// A section to append: its name and contents.
#[derive(Debug)]
pub struct Section {
    pub name: SectionName,
    pub data: SectionData,
}

impl Section {
    pub fn new(name: SectionName, data: impl Into<SectionData>) -> Self {
        Self {
            name,
            data: data.into(),
        }
    }
}
