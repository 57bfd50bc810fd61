//! The `cmdline-<platform>-<arch>[-secureboot]` asset and the UKI's `.cmdline`: the command line
//! the imager builds for the profile ([`kernel_cmdline`]: platform, version and SecureBoot rules,
//! then the schematic's META and extra kernel args where the kind carries them, spec §6.5).

use factory_core::cmdline::{kernel_cmdline, CmdlineInput};

use crate::spec::Spec;

/// The command line of a spec's profile (no trailing newline).
pub(crate) fn cmdline(spec: &Spec) -> Result<String, factory_pipeline::AssembleError> {
    let profile = &spec.profile;
    let meta = spec.meta();
    Ok(kernel_cmdline(&CmdlineInput {
        platform: &profile.platform,
        arch: spec.arch()?,
        version: &profile.version,
        secureboot: profile.secureboot,
        iso: false,
        extra_kernel_args: &profile.customization.extra_kernel_args,
        overlay_kernel_args: &profile.customization.overlay_kernel_args,
        meta: &meta,
    }))
}
