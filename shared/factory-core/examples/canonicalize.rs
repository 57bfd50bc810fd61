//! Reads JSON lines, each a JSON string holding a schematic body, and prints one JSON line per
//! input: `{"ok":true,"canonical":…,"id":…}` or `{"ok":false,"error":…}`. Used to compare our
//! canonical form with the Go factory's on generated inputs (see tests/go_vectors.rs).

use std::io::{self, BufRead, Write};

use factory_core::schematic::{Schematic, SchematicError};

fn main() -> io::Result<()> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in io::stdin().lock().lines() {
        let body: String = serde_json::from_str(&line?).map_err(io::Error::other)?;
        let result = match Schematic::parse(body.as_bytes()) {
            Ok(s) => serde_json::json!({"ok": true, "canonical": s.canonical_yaml(), "id": s.id().as_str()}),
            Err(SchematicError::Empty) => serde_json::json!({"ok": false, "error": "EOF"}),
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string()}),
        };
        writeln!(out, "{result}")?;
    }
    Ok(())
}
