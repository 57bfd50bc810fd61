//! Integration tests live in tests/*.rs. The library holds what the helper binaries
//! (`src/bin/`) share with them.

pub mod slow_assembler;
