//! Differential vectors: schematic bodies (hand-written edge cases, randomly generated documents
//! and realistic ones) with the canonical YAML, ID or error that the Go library the image factory
//! uses (go.yaml.in/yaml/v4 with the factory's `Schematic` struct) produced for them.
//!
//! The property checked for every vector: where Go accepts a body we produce the same bytes and
//! ID, or refuse it with a 400 for one of the documented reasons (never a different ID); where Go
//! refuses a body we refuse it too (tabs that Go's scanner rejects excepted).

use factory_core::schematic::Schematic;
use serde_json::Value;

/// Bodies we knowingly refuse although Go accepts them (see docs/schematics.md).
fn documented_refusal(input: &str, error: &str) -> bool {
    (error.contains("U+2028/U+2029") && input.contains(['\u{2028}', '\u{2029}']))
        || (error.contains("in quoted scalar") && input.contains(['\r', '\u{85}']))
        || error.contains("timestamp `")
        || error.contains("comments must be separated")
}

#[test]
fn canonical_form_matches_go_yaml() {
    let data = include_str!("data/go-yaml-vectors.jsonl");
    let (mut same, mut refused, mut total) = (0, 0, 0);
    let mut failures = Vec::new();
    for line in data.split('\n').filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("vector is JSON");
        let input = v["input"].as_str().expect("input");
        total += 1;
        let ours = Schematic::parse(input.as_bytes());
        if v["ok"].as_bool() == Some(true) {
            match ours {
                Ok(s) => {
                    if s.canonical_yaml() == v["canonical"].as_str().unwrap_or_default()
                        && s.id().as_str() == v["id"].as_str().unwrap_or_default()
                    {
                        same += 1;
                    } else {
                        failures.push(format!(
                            "{input:?}\n  go: {}\n  us: {:?}",
                            v["canonical"],
                            s.canonical_yaml()
                        ));
                    }
                }
                Err(e) if documented_refusal(input, &e.to_string()) => refused += 1,
                Err(e) => failures.push(format!(
                    "{input:?}\n  go accepts: {}\n  we refuse: {e}",
                    v["canonical"]
                )),
            }
        } else if let Ok(s) = ours {
            if !input.contains('\t') {
                failures.push(format!(
                    "{input:?}\n  go refuses: {}\n  we accept: {:?}",
                    v["error"],
                    s.canonical_yaml()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} vectors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Keep the documented refusals a small minority, so the test keeps its teeth.
    assert!(refused * 10 < same, "{refused} refusals vs {same} identical");
    assert!(same > 1000, "only {same} identical vectors");
}

#[test]
fn go_error_wording_is_kept_for_field_errors() {
    let data = include_str!("data/go-yaml-vectors.jsonl");
    for line in data.split('\n').filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("vector is JSON");
        let go = v["error"].as_str().unwrap_or_default();
        // Field and type errors (not syntax errors, whose wording comes from another parser, and
        // not bootloader errors, where ours also lists the valid values).
        if !go.starts_with("yaml: construct errors:") || go.contains("BootloaderKind") {
            continue;
        }
        let input = v["input"].as_str().expect("input");
        if input.contains(['\r', '\u{85}', '\u{2028}', '\u{2029}', '&', '*']) {
            continue;
        }
        let ours = Schematic::parse(input.as_bytes()).expect_err("go refuses it");
        assert_eq!(ours.to_string(), go, "for {input:?}");
    }
}
