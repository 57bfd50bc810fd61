//! The `<platform>-<arch>-uki.efi` asset without SecureBoot (talos-imager §8.1–8.3): the
//! release's systemd-stub (`usr/install/<arch>/systemd-stub.efi`) with `.osrel`, `.cmdline`,
//! `.uname`, `.linux`, `.initrd` and, from Talos 1.10, the `main` boot profile appended by
//! [`factory_uki::build`].
//!
//! * `.cmdline`: the profile's command line, the same string the `cmdline-<platform>-<arch>`
//!   asset serves for that profile (platform and version rules; the schematic's extra kernel
//!   args only from 1.10, and never META, spec §6.5).
//! * `.initrd`: the customised initramfs, byte for byte the `initramfs-<arch>.xz` asset of the
//!   same schematic, built into a scratch file first (its size goes into the PE headers, which
//!   are written before any section).
//! * `.uname`: the kernel version from the bzImage header ([`kernel_version`]; none on arm64).
//! * `.osrel`: [`os_release`] of the profile's name and version.
//! * No `.splash`: the Talos logo is compiled into the Go imager, not shipped in the release.
//! * COFF `TimeDateStamp`: [`SOURCE_DATE_EPOCH`], as the imager runs; the output depends only on
//!   the inputs.
//!
//! Failures: an unusable command line (a newline in an extra kernel arg) or a UKI over the PE
//! limits is the user's; a stub that is not a PE32+ image is the release's (logged as an error,
//! retried); I/O is retried.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use factory_core::arch::Arch;
use factory_core::version::TalosVersion;
use factory_initramfs::SOURCE_DATE_EPOCH;
use factory_pipeline::AssembleError;
use factory_uki::{
    kernel_version, os_release, AssembleOptions, SectionData, Stub, TalosUki, TalosUkiError,
    KERNEL_VERSION_PROBE_LEN,
};
use factory_upstream::Upstream;
use tokio::io::AsyncWrite;

use crate::blocking::write_blocking;
use crate::imager;
use crate::initramfs;
use crate::spec::Spec;

/// Boot profiles (`.profile` sections) exist from Talos 1.10.
const PROFILES_SINCE: TalosVersion = TalosVersion::new(1, 10, 0);

pub(crate) async fn assemble(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let profile = &spec.profile;
    let cmdline = crate::cmdline::cmdline(spec)?;
    let osrel = os_release(&profile.name, &profile.version.to_string());
    // The `uki` output has only the `main` profile (talos-imager §8.1).
    let profiles = (profile.version.core() >= PROFILES_SINCE).then(Vec::new);

    let scratch = crate::scratch_dir()?;
    let (prepared, paths) = initramfs::prepare(
        upstream,
        spec,
        arch,
        &[imager::KERNEL, imager::SD_STUB],
        scratch.path(),
    )
    .await?;
    let (kernel, stub) = (paths[0].clone(), paths[1].clone());
    let initrd = scratch.path().join("initrd");

    write_blocking(out, move |w| {
        let _scratch = scratch;
        write_file(&initrd, |f| initramfs::build(&prepared, f))?;
        build_uki(
            &UkiFiles {
                stub: &stub,
                kernel: &kernel,
                initrd: &initrd,
            },
            osrel,
            cmdline,
            profiles,
            w,
        )
    })
    .await
}

/// The files a UKI is made of, on local disk.
pub(crate) struct UkiFiles<'a> {
    pub stub: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
}

/// A `map_err` for I/O on `path` (retried: local disk trouble is not the user's).
pub(crate) fn io_error(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> AssembleError {
    let what = format!("{what} {}", path.display());
    move |e: std::io::Error| AssembleError::Retryable(format!("{what}: {e}"))
}

/// Writes a scratch file through `build`, flushed (blocking).
pub(crate) fn write_file(
    path: &Path,
    build: impl FnOnce(&mut dyn Write) -> Result<(), AssembleError>,
) -> Result<(), AssembleError> {
    let file = File::create(path).map_err(io_error("creating", path))?;
    let mut file = BufWriter::new(file);
    build(&mut file)?;
    file.flush().map_err(io_error("writing", path))
}

/// Builds a UKI into `w` (blocking): also the one inside ISOs and disk images, whose command
/// line is that of their own profile.
pub(crate) fn build_uki(
    files: &UkiFiles<'_>,
    osrel: String,
    cmdline: String,
    profiles: Option<Vec<factory_uki::UkiProfile>>,
    w: &mut dyn std::io::Write,
) -> Result<(), AssembleError> {
    let stub = std::fs::read(files.stub).map_err(io_error("reading", files.stub))?;
    let stub = Stub::parse(stub).map_err(uki_error)?;
    let mut probe = Vec::with_capacity(KERNEL_VERSION_PROBE_LEN);
    File::open(files.kernel)
        .and_then(|f| f.take(KERNEL_VERSION_PROBE_LEN as u64).read_to_end(&mut probe))
        .map_err(io_error("reading", files.kernel))?;
    let uki = TalosUki {
        osrel,
        cmdline,
        uname: kernel_version(&probe),
        splash: None,
        pcrpkey: None,
        kernel: SectionData::File(files.kernel.to_owned()),
        initrd: SectionData::File(files.initrd.to_owned()),
        profiles,
    };
    let options = AssembleOptions {
        timestamp: Some(SOURCE_DATE_EPOCH),
    };
    let layout = factory_uki::build(&stub, uki, &options, w).map_err(uki_error)?;
    tracing::info!(size = layout.file_size, "built the UKI");
    Ok(())
}

/// Sorts a UKI failure for the pipeline (see the module documentation).
fn uki_error(error: factory_uki::Error) -> AssembleError {
    use factory_uki::Error;
    match &error {
        Error::Talos(TalosUkiError::BadCmdline) | Error::TooLarge(_) => {
            AssembleError::User(format!("building the UKI: {error}"))
        }
        Error::Io { .. } | Error::SizeChanged { .. } => {
            AssembleError::Retryable(format!("building the UKI: {error}"))
        }
        Error::InvalidStub(_) | Error::SectionName { .. } | Error::Talos(_) => {
            tracing::error!(
                error = %error,
                "building the UKI failed for a reason neither the user nor a retry can fix: \
                 the release or this factory needs attention"
            );
            AssembleError::Retryable(format!("building the UKI: {error}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_whose_fault() {
        assert!(matches!(
            uki_error(factory_uki::Error::Talos(TalosUkiError::BadCmdline)),
            AssembleError::User(_)
        ));
        assert!(matches!(
            uki_error(factory_uki::Error::InvalidStub("MZ".into())),
            AssembleError::Retryable(_)
        ));
        assert!(matches!(
            uki_error(factory_uki::Error::Io {
                context: "writing".into(),
                source: std::io::Error::other("gone"),
            }),
            AssembleError::Retryable(_)
        ));
    }
}
