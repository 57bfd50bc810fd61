//! Talos' default kernel arguments and SecureBoot arguments by version
//! (`pkg/machinery/kernel/kernel.go`, gated by `pkg/machinery/imager/quirks`). Gates compare
//! the version's `major.minor.patch` only, so a pre-release behaves as the release it leads to.

use crate::version::TalosVersion;

use super::platform::NVME_TIMEOUT_AWS_ONLY_SINCE;

/// `init_on_alloc=1` is dropped from 1.14 (quirk `DropInitOnAllocInArgs`).
const INIT_ON_ALLOC_UNTIL: TalosVersion = TalosVersion::new(1, 14, 0);
/// The IMA arguments are present while `core <= 1.10.99` (quirk `SupportsIMA`): the upstream
/// bound is written that way, so it is kept literally rather than as `< 1.11.0`.
const IMA_UNTIL_INCLUSIVE: TalosVersion = TalosVersion::new(1, 10, 99);
/// `selinux=1` from 1.10 (quirk `SupportsSELinux`).
const SELINUX_SINCE: TalosVersion = TalosVersion::new(1, 10, 0);
/// `module.sig_enforce=1` from 1.12 (quirk `SupportsDisablingModuleSignatureVerification`).
const MODULE_SIG_ENFORCE_SINCE: TalosVersion = TalosVersion::new(1, 12, 0);
/// `proc_mem.force_override=never` from 1.13 (quirk `ProcMemOverrideNever`).
const PROC_MEM_SINCE: TalosVersion = TalosVersion::new(1, 13, 0);
/// `lockdown=confidentiality` for SecureBoot before 1.14 (quirk `ForcesLockdownConfidentiality`).
const LOCKDOWN_UNTIL: TalosVersion = TalosVersion::new(1, 14, 0);

/// The default arguments, merged with `AppendAll` after platform and overlay arguments.
/// `slab_nomerge=` has an empty value, so it prints as `slab_nomerge`.
pub fn default_args(version: &TalosVersion) -> Vec<&'static str> {
    let core = version.core();
    let mut args = Vec::new();
    if core < INIT_ON_ALLOC_UNTIL {
        args.push("init_on_alloc=1");
    }
    args.extend(["slab_nomerge=", "pti=on", "consoleblank=0"]);
    if core < NVME_TIMEOUT_AWS_ONLY_SINCE {
        args.push("nvme_core.io_timeout=4294967295");
    }
    // Rate-limited printk would hide early boot messages.
    args.push("printk.devkmsg=on");
    if core <= IMA_UNTIL_INCLUSIVE {
        args.extend(["ima_template=ima-ng", "ima_appraise=fix", "ima_hash=sha512"]);
    }
    if core >= SELINUX_SINCE {
        args.push("selinux=1");
    }
    if core >= MODULE_SIG_ENFORCE_SINCE {
        args.push("module.sig_enforce=1");
    }
    if core >= PROC_MEM_SINCE {
        args.push("proc_mem.force_override=never");
    }
    args
}

/// The arguments added for SecureBoot images, merged with `AppendAll` after the defaults.
///
/// Decision: from 1.14 nothing. This follows the snapshot the docs name (talos `main` @
/// `ad8823176e75`, quirk `ForcesLockdownConfidentiality` = `< 1.14.0`). The tagged imager
/// `v1.14.0-rc.1` still adds `lockdown=confidentiality` unconditionally; if a 1.14 release
/// imager does too, 1.14 SecureBoot cmdlines built here lack that argument.
pub fn secure_boot_args(version: &TalosVersion) -> Vec<&'static str> {
    if version.core() < LOCKDOWN_UNTIL {
        vec!["lockdown=confidentiality"]
    } else {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> TalosVersion {
        TalosVersion::parse(s).expect("test version")
    }

    #[test]
    fn defaults_by_version() {
        let joined = |s: &str| default_args(&v(s)).join(" ");
        let pre_1_10 = "init_on_alloc=1 slab_nomerge= pti=on consoleblank=0 \
                        nvme_core.io_timeout=4294967295 printk.devkmsg=on ima_template=ima-ng \
                        ima_appraise=fix ima_hash=sha512";
        assert_eq!(joined("1.2.0"), pre_1_10);
        assert_eq!(joined("1.9.6"), pre_1_10);
        assert_eq!(joined("1.10.0-alpha.0"), format!("{pre_1_10} selinux=1"));
        assert_eq!(joined("1.10.7"), format!("{pre_1_10} selinux=1"));
        let base_1_11 = "init_on_alloc=1 slab_nomerge= pti=on consoleblank=0 \
                         nvme_core.io_timeout=4294967295 printk.devkmsg=on selinux=1";
        assert_eq!(joined("1.11.0"), base_1_11);
        assert_eq!(joined("1.12.0"), format!("{base_1_11} module.sig_enforce=1"));
        assert_eq!(
            joined("1.13.0"),
            format!("{base_1_11} module.sig_enforce=1 proc_mem.force_override=never")
        );
        assert_eq!(
            joined("1.14.0"),
            "slab_nomerge= pti=on consoleblank=0 printk.devkmsg=on selinux=1 \
             module.sig_enforce=1 proc_mem.force_override=never"
        );
    }

    #[test]
    fn lockdown_before_1_14_only() {
        assert_eq!(secure_boot_args(&v("1.5.0")), vec!["lockdown=confidentiality"]);
        assert_eq!(secure_boot_args(&v("1.13.9")), vec!["lockdown=confidentiality"]);
        assert!(secure_boot_args(&v("1.14.0-rc.1")).is_empty());
        assert!(secure_boot_args(&v("1.15.0")).is_empty());
    }
}
