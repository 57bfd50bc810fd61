//! CPU architectures of Talos artifacts.

use std::fmt;

/// A Talos architecture. Requests may use iPXE's aliases (`x86_64`, `i386`), which mean amd64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    /// The canonical name (`amd64`, `arm64`), as in OCI platforms and Talos paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// Parses a canonical name or an iPXE alias.
    pub fn parse(s: &str) -> Option<Arch> {
        match s {
            "amd64" | "x86_64" | "i386" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_mean_amd64() {
        assert_eq!(Arch::parse("x86_64"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("i386"), Some(Arch::Amd64));
        assert_eq!(Arch::parse("arm64"), Some(Arch::Arm64));
        assert_eq!(Arch::parse("aarch64"), None);
        assert_eq!(Arch::Arm64.to_string(), "arm64");
    }
}
