//! Why a build failed, sorted by whose fault it is: the request's (a 4xx), the release's or this
//! deployment's (permanent, a 5xx), or the machine's (I/O: worth retrying).

use std::io;
use std::path::Path;

/// How a caller should treat an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request cannot be built, ever: an extension that does not support the Talos version,
    /// a malformed extension, an embedded configuration before 1.12. Answer 400 with the message.
    User,
    /// The release's inputs or this deployment are broken (an initramfs without `rootfs.sqsh`, a
    /// missing `depmod`): retrying does not help, the operator has to act.
    Internal,
    /// Reading or writing failed (disk full, a vanished scratch file, a closed output): the same
    /// build may succeed later.
    Retryable,
}

/// A failed initramfs build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The extension's `compatibility.talos.version` constraint excludes the Talos version.
    #[error(
        "error validating extension {name:?} (version {version}): version constraint {constraint} \
         can't be satisfied with Talos version {talos}"
    )]
    Incompatible {
        /// `metadata.name` of the extension.
        name: String,
        /// `metadata.version` of the extension.
        version: String,
        /// The constraint as written in the manifest.
        constraint: String,
        /// The Talos version, without `v` (as the imager prints it).
        talos: String,
    },

    /// The extension's constraint is not a valid blang/semver range.
    #[error("error validating extension {name:?}: error parsing Talos version constraint {constraint:?}: {reason}")]
    InvalidConstraint {
        name: String,
        constraint: String,
        reason: String,
    },

    /// The extension's file tree or manifest is not an extension (talos-imager §4.1).
    #[error("error loading extension {extension}: {reason}")]
    InvalidExtension {
        /// The extension's manifest name when known, else its position.
        extension: String,
        reason: String,
    },

    /// The schematic embeds a machine configuration, which needs Talos 1.12.
    #[error("embedding configuration is not supported for Talos version {0}")]
    EmbeddedConfigUnsupported(String),

    /// An extension's kernel modules do not fit the release's kernel.
    #[error("kernel modules of extension {extension:?}: {reason}")]
    KernelModules { extension: String, reason: String },

    /// The release's base initramfs is not what a Talos imager ships.
    #[error("invalid base initramfs: {0}")]
    InvalidBase(String),

    /// A program the build needs is not installed (only `depmod`, for extensions with kernel
    /// modules).
    #[error(
        "{tool} is required to build an initramfs with kernel-module extensions but {program:?} \
         was not found (install kmod, or set the depmod path)"
    )]
    ToolMissing { tool: &'static str, program: String },

    /// A program the build ran failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },

    /// Reading or writing failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Whose fault the failure is, see [`ErrorKind`].
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Incompatible { .. }
            | Error::InvalidConstraint { .. }
            | Error::InvalidExtension { .. }
            | Error::EmbeddedConfigUnsupported(_)
            | Error::KernelModules { .. } => ErrorKind::User,
            Error::InvalidBase(_) | Error::ToolMissing { .. } | Error::ToolFailed { .. } => {
                ErrorKind::Internal
            }
            Error::Io { .. } => ErrorKind::Retryable,
        }
    }

    /// Whether the request itself is at fault (HTTP 400).
    pub fn is_user_error(&self) -> bool {
        self.kind() == ErrorKind::User
    }

    /// Whether the same build may succeed when retried.
    pub fn is_retryable(&self) -> bool {
        self.kind() == ErrorKind::Retryable
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }

    pub(crate) fn io_path(action: &str, path: &Path) -> impl FnOnce(io::Error) -> Error {
        Error::io(format!("{action} {}", path.display()))
    }

    pub(crate) fn invalid(extension: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidExtension {
            extension: extension.into(),
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        let incompatible = Error::Incompatible {
            name: "legacy-only".into(),
            version: "0.9.0".into(),
            constraint: "< v1.10.0".into(),
            talos: "1.12.1".into(),
        };
        assert!(incompatible.is_user_error());
        assert_eq!(
            incompatible.to_string(),
            "error validating extension \"legacy-only\" (version 0.9.0): version constraint \
             < v1.10.0 can't be satisfied with Talos version 1.12.1"
        );
        let io = Error::io("writing")(io::Error::other("disk full"));
        assert!(io.is_retryable());
        assert_eq!(io.to_string(), "writing: disk full");
        let missing = Error::ToolMissing {
            tool: "depmod",
            program: "depmod".into(),
        };
        assert_eq!(missing.kind(), ErrorKind::Internal);
    }
}
