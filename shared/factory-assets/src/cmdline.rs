//! The `cmdline-<platform>-<arch>[-secureboot]` asset and the UKI's `.cmdline`: the command line
//! the imager builds for the profile ([`kernel_cmdline`]: platform, version and SecureBoot rules,
//! then the schematic's META and extra kernel args where the kind carries them, spec §6.5).

use factory_core::cmdline::{kernel_cmdline, CmdlineInput};

use crate::spec::Spec;

/// The command line of a spec's profile (no trailing newline). ISOs add
/// `talos.halt_if_installed=1` (≥ 1.8); disk images carry no META on the command line, they write
/// it into their META partition (talos-imager §6.2 step 7, §7.4).
pub(crate) fn cmdline(spec: &Spec) -> Result<String, factory_pipeline::AssembleError> {
    let profile = &spec.profile;
    let meta = match profile.output.kind.as_str() {
        "image" => Vec::new(),
        _ => spec.meta(),
    };
    Ok(kernel_cmdline(&CmdlineInput {
        platform: &profile.platform,
        arch: spec.arch()?,
        version: &profile.version,
        secureboot: profile.secureboot,
        iso: profile.output.kind == "iso",
        extra_kernel_args: &profile.customization.extra_kernel_args,
        overlay_kernel_args: &profile.customization.overlay_kernel_args,
        meta: &meta,
    }))
}
