//! The `initramfs-<arch>.xz` asset (and the UKI's `.initrd`): the release's initramfs with the
//! schematic's official extensions, the `schematic` virtual extension and the embedded machine
//! configuration appended by [`factory_initramfs::build`], as the Talos imager does
//! (talos-imager §4.4, §5.2).
//!
//! The base initramfs comes from the imager image and every extension image is pulled by the
//! exact digest in the spec (signature verified) and extracted to a scratch directory; the build
//! itself is blocking and CPU-bound and runs on a blocking thread, streaming its output.
//!
//! Failures: [`ErrorKind::User`](factory_initramfs::ErrorKind::User) (an extension that does not
//! support the version, a malformed extension) → [`AssembleError::User`] with the builder's
//! message (answered `400`, negative-cached); `Retryable` (I/O) → retried; `Internal` (a broken
//! release or deployment: a base initramfs without `rootfs.sqsh`, no `depmod`) → logged as an
//! error and retried, since it needs the operator rather than the user.

use std::path::{Path, PathBuf};

use factory_core::arch::Arch;
use factory_initramfs::{Base, ErrorKind, Options, Request};
use factory_pipeline::AssembleError;
use factory_upstream::Upstream;
use tokio::io::AsyncWrite;

use crate::blocking::write_blocking;
use crate::extensions::{extension_inputs, extract_extensions};
use crate::imager;
use crate::spec::Spec;

/// kmod's `depmod` (modules.dep for extensions with kernel modules).
pub(crate) const DEPMOD: factory_disk::tools::Tool = factory_disk::tools::Tool {
    program: "depmod",
    package: "kmod",
};

/// What [`factory_initramfs::build`] needs, all on local disk.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub base: Base,
    pub request: Request,
    pub options: Options,
}

/// Pulls the base initramfs (plus `extra` imager files, e.g. the kernel and the stub for a UKI)
/// and the extensions into `scratch`; the paths of `extra`, in order.
pub(crate) async fn prepare(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    extra: &[&str],
    scratch: &Path,
) -> Result<(Prepared, Vec<PathBuf>), AssembleError> {
    let profile = &spec.profile;
    let extensions = extension_inputs(&spec.inputs, profile.inputs.system_extensions.len())?;
    let schematic = spec.schematic_layer()?;

    let mut names = vec![imager::INITRAMFS];
    names.extend_from_slice(extra);
    let mut paths = imager::extract(upstream, &spec.inputs, arch, &names, &scratch.join("imager")).await?;
    let base = paths.remove(0);
    let sources = extract_extensions(upstream, &extensions, arch, &scratch.join("extensions")).await?;

    let prepared = Prepared {
        base: Base::Path(base),
        request: Request {
            version: profile.version.clone(),
            extensions: sources,
            schematic,
        },
        options: Options {
            scratch_dir: scratch.to_owned(),
            depmod: depmod_path(),
            ..Options::default()
        },
    };
    Ok((prepared, paths))
}

/// Builds the customised initramfs into `out` (blocking).
pub(crate) fn build(prepared: &Prepared, out: &mut dyn std::io::Write) -> Result<(), AssembleError> {
    let summary = factory_initramfs::build(&prepared.base, &prepared.request, &prepared.options, out)
        .map_err(initramfs_error)?;
    tracing::info!(
        size = summary.size,
        layers = summary.layers.len(),
        firmware_files = summary.firmware_files,
        microcode = summary.microcode.is_some(),
        kernel_release = summary.kernel_release.as_deref().unwrap_or(""),
        "built the initramfs"
    );
    Ok(())
}

pub(crate) async fn assemble(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let scratch = crate::scratch_dir()?;
    let (prepared, _) = prepare(upstream, spec, arch, &[], scratch.path()).await?;
    // The scratch directory moves along: the blocking work may outlive this future (a dropped
    // assembly) and still reads from it until its next write fails.
    write_blocking(out, move |w| {
        let _scratch = scratch;
        build(&prepared, w)
    })
    .await
}

/// Sorts an initramfs failure for the pipeline (see the module documentation).
pub(crate) fn initramfs_error(error: factory_initramfs::Error) -> AssembleError {
    match error.kind() {
        ErrorKind::User => AssembleError::User(error.to_string()),
        ErrorKind::Retryable => AssembleError::Retryable(format!("building the initramfs: {error}")),
        ErrorKind::Internal => {
            tracing::error!(
                error = %error,
                "building the initramfs failed for a reason neither the user nor a retry can fix: \
                 the release or this deployment needs attention"
            );
            AssembleError::Retryable(format!("building the initramfs: {error}"))
        }
    }
}

/// kmod's `depmod`, found as every builder tool is ([`factory_disk::tools::find`]: `PATH`, then
/// the sbin directories); a bare `depmod` when nowhere, so the build reports it missing.
pub(crate) fn depmod_path() -> PathBuf {
    factory_disk::tools::find(DEPMOD).unwrap_or_else(|_| PathBuf::from(DEPMOD.program))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_sorted_by_whose_fault() {
        let user = factory_initramfs::Error::Incompatible {
            name: "legacy-only".into(),
            version: "0.9.0".into(),
            constraint: "< v1.10.0".into(),
            talos: "1.11.3".into(),
        };
        let message = user.to_string();
        assert_eq!(initramfs_error(user), AssembleError::User(message));
        let internal = factory_initramfs::Error::InvalidBase("no rootfs.sqsh".into());
        assert!(matches!(initramfs_error(internal), AssembleError::Retryable(_)));
        let io = factory_initramfs::Error::Io {
            context: "writing".into(),
            source: std::io::Error::other("disk full"),
        };
        assert!(matches!(initramfs_error(io), AssembleError::Retryable(_)));
    }
}
