//! The image factory's domain, free of I/O so that every rule is unit-testable.

pub mod arch;
pub mod catalog;
pub mod cmdline;
pub mod goyaml;
pub mod profile;
pub mod pxe;
pub mod schematic;
pub mod version;
