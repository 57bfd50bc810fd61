//! YAML as the Go image factory reads and writes it (`go.yaml.in/yaml/v4`).
//!
//! A schematic's ID is the sha256 of the bytes go-yaml's `Marshal` produces, so byte-exactness is
//! not negotiable: this module re-implements, for the value shapes a schematic can hold, go-yaml's
//! scalar resolution (which plain strings would read back as numbers, booleans, nulls or
//! timestamps), its representer (which style a string asks for), and its emitter (indentation,
//! quoting, literal blocks, map key order). It was written from go-yaml's documented behaviour and
//! checked against the Go library's output on thousands of generated inputs (see the
//! `go_vectors` test), not translated from its source.

mod emit;
mod load;
mod resolve;

pub use emit::{emit_document, go_key_less, sort_go_map, Value};
pub use load::{load_first_document, LoadError, Node, NodeKind};
pub use resolve::{format_go_float, resolve_plain, Resolved};
