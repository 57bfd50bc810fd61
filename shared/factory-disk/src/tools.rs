//! External tools the image builder calls where no sound Rust implementation exists
//! (talos-imager.md §14.2): `mkfs.xfs` (BOOT), `grub-mkimage` (GRUB core/EFI images),
//! `xorrisofs`/`grub-mkrescue` (ISOs).
//!
//! Why a module of its own: the builder checks for every tool at start and names the missing
//! package in its error (the builder's container image must contain them, see `infra/`; the one
//! list of every tool the builder calls is `factory_assets::BUILDER_TOOLS`), and
//! every call reports the tool's stderr when it fails, so a broken builder image is diagnosed
//! from one log line.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// One external tool: the executable and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const MKFS_XFS: Tool = Tool {
    program: "mkfs.xfs",
    package: "xfsprogs",
};
pub const GRUB_MKIMAGE: Tool = Tool {
    program: "grub-mkimage",
    package: "grub-common",
};
pub const GRUB_MKRESCUE: Tool = Tool {
    program: "grub-mkrescue",
    package: "grub-common",
};
pub const XORRISO: Tool = Tool {
    program: "xorriso",
    package: "xorriso",
};

/// The absolute path of `tool` on `PATH` (also searching the sbin directories, which a
/// non-root `PATH` may lack), or [`Error::ToolMissing`].
pub fn find(tool: Tool) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(tool.program))
        .find(|p| p.is_file())
        .ok_or(Error::ToolMissing {
            program: tool.program,
            package: tool.package,
        })
}

/// Checks every tool of `tools`; the error names the first one missing.
pub fn check(tools: &[Tool]) -> Result<()> {
    tools.iter().try_for_each(|t| find(*t).map(|_| ()))
}

/// Runs `tool` with `args`, stdin closed; its stdout is discarded and its stderr (last 4 KiB)
/// goes into [`Error::ToolFailed`] when it exits non-zero.
pub fn run<I, S>(tool: Tool, args: I) -> Result<()>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(find(tool)?);
    cmd.args(args);
    run_command(tool, cmd)
}

/// Runs a prepared command of `tool` (for callers that set the environment or directory).
pub fn run_command(tool: Tool, mut cmd: Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::ToolFailed {
            program: tool.program,
            message: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: String = {
        let s = stderr.trim();
        let cut = s.len().saturating_sub(4096);
        let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
        s[cut..].to_owned()
    };
    Err(Error::ToolFailed {
        program: tool.program,
        message: format!("{}: {tail}", out.status),
    })
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool {
            program: "no-such-tool-talos-factory",
            package: "no-such-package",
        };
        let err = find(t).unwrap_err().to_string();
        assert!(
            err.contains("no-such-tool-talos-factory") && err.contains("no-such-package"),
            "{err}"
        );
    }

    #[test]
    fn failing_tool_reports_stderr() {
        let t = Tool {
            program: "sh",
            package: "dash",
        };
        let err = run(t, ["-c", "echo boom >&2; exit 3"]).unwrap_err().to_string();
        assert!(err.contains("boom") && err.contains("3"), "{err}");
    }
}
