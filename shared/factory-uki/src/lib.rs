//! Unified Kernel Images (UKI): the systemd-stub EFI application with the kernel, initramfs,
//! command line and os-release appended as PE sections (talos-imager.md §8.1–8.3).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use factory_uki::{os_release, AssembleOptions, SectionData, Stub, TalosUki, UkiProfile};
//!
//! let stub = Stub::parse(std::fs::read("linuxx64.efi.stub")?)?;
//! let uki = TalosUki {
//!     osrel: os_release("Talos", "v1.12.1"),
//!     cmdline: "talos.platform=metal console=tty0".to_owned(),
//!     uname: Some("6.18.45-talos".to_owned()),
//!     splash: None,
//!     pcrpkey: None,
//!     kernel: SectionData::File("vmlinuz".into()),
//!     initrd: SectionData::File("initramfs.xz".into()),
//!     profiles: Some(vec![]), // ≥ 1.10: `ID=main`
//! };
//! let out = std::fs::File::create("metal-amd64-uki.efi")?;
//! let layout = factory_uki::build(&stub, uki, &AssembleOptions::default(), out)?;
//! # let _ = layout; Ok(()) }
//! ```
//!
//! * [`Stub`] parses the stub (with the `object` crate), [`Uki`] computes every header field
//!   before any data is read, then streams the sections (files and sized readers are copied
//!   through a small buffer, so the initramfs is never held in memory) to any
//!   [`std::io::Write`].
//! * The output depends only on the inputs (no clock: [`AssembleOptions::timestamp`]).
//! * SecureBoot comes later and slots in here: the PCR 11 prediction needs the section contents
//!   ([`Stub::sbat`] gives the stub's `.sbat`) and produces `.pcrpkey`/`.pcrsig` sections, which
//!   are ordinary [`Section`]s; Authenticode hashes the written image, whose [`Layout`] names
//!   the checksum and certificate-table offsets to skip and the file size to append at.

mod pe;
mod section;
mod talos;

pub use pe::{
    assemble, AssembleOptions, Layout, PlacedSection, Stub, StubSection, Uki,
    APPENDED_SECTION_CHARACTERISTICS, MACHINE_AMD64, MACHINE_ARM64,
};
pub use section::{Section, SectionData, SectionName};
pub use talos::{kernel_version, os_release, TalosUki, TalosUkiError, UkiProfile, KERNEL_VERSION_PROBE_LEN};

/// Why a UKI could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid systemd-stub: {0}")]
    InvalidStub(String),
    #[error("invalid section name {name:?}: {reason}")]
    SectionName { name: String, reason: &'static str },
    #[error(transparent)]
    Talos(#[from] TalosUkiError),
    #[error("the UKI exceeds the PE32+ limits: {0}")]
    TooLarge(String),
    #[error("section {section} changed size: {expected} bytes were announced")]
    SizeChanged { section: String, expected: u64 },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        Error::Io { context, source }
    }
}

/// Builds a Talos UKI: [`TalosUki::into_sections`] appended to `stub`, written to `out`.
pub fn build<W: std::io::Write>(
    stub: &Stub,
    uki: TalosUki,
    options: &AssembleOptions,
    out: W,
) -> Result<Layout, Error> {
    assemble(stub, uki.into_sections()?, options, out)
}
