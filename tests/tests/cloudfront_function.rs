//! The CloudFront viewer-response function of `/assets/*` (`AssetHeadersFunction` in
//! `template.yaml`), run for real: its code is extracted from the template's `FunctionCode: |`
//! literal block, written to a temporary file with a small harness appended, and run with Node.js
//! (`node`) on CloudFront viewer-response events. Node is not CloudFront's `cloudfront-js-2.0`
//! runtime, but the function is plain ES5 (no modules), which both run alike.
//!
//! Needs `node` on `PATH` (`scripts/install-test-deps` installs Debian's `nodejs`); without it
//! these tests fail, saying so.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const SHA256: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn template() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The text of the one `FunctionCode: |` literal block in `template`, dedented.
fn function_code(template: &str) -> String {
    let lines: Vec<&str> = template.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with("FunctionCode: |"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "template.yaml must have exactly one `FunctionCode: |` literal block"
    );
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let key_indent = indent_of(lines[starts[0]]);
    let body: Vec<&str> = lines[starts[0] + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || indent_of(l) > key_indent)
        .copied()
        .collect();
    let block_indent = body
        .iter()
        .find(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .expect("FunctionCode block is empty");
    let mut code = String::new();
    for line in body {
        if !line.trim().is_empty() {
            assert!(
                indent_of(line) >= block_indent,
                "line less indented than the block's first line: {line:?}"
            );
            code.push_str(&line[block_indent..]);
        }
        code.push('\n');
    }
    code
}

/// Runs the function on each event (one `node` process) and returns what it returned.
fn run(events: &[Value]) -> Vec<Value> {
    let template = template();
    let code = function_code(&template);
    assert!(code.contains("function handler(event)"), "no handler in:\n{code}");
    let harness = "\n;(function () {\n  \
        var events = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n  \
        process.stdout.write(JSON.stringify(events.map(function (e) { return handler(e); })));\n\
        })();\n";
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("asset-headers.js");
    std::fs::write(&script, format!("{code}{harness}")).unwrap();

    let mut child = match Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`node` (Node.js) is not on PATH: run scripts/install-test-deps (it installs the nodejs package)"
        ),
        Err(e) => panic!("starting node: {e}"),
    };
    let input = serde_json::to_vec(events).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "node failed ({}):\n{}\nscript:\n{code}{harness}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "node printed no JSON array ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(results.len(), events.len());
    results
}

/// A viewer-response event as CloudFront passes it (see the CloudFront Functions event
/// structure), for `GET <uri>` with this `querystring` object.
fn event(uri: &str, querystring: Value) -> Value {
    json!({
        "version": "1.0",
        "context": {
            "distributionDomainName": "d111111abcdef8.cloudfront.net",
            "distributionId": "EDFDVBD6EXAMPLE",
            "eventType": "viewer-response",
            "requestId": "EXAMPLEntjQpEXAMPLE_SG5Z-EXAMPLEPmPfEXAMPLEu3EqEXAMPLE=="
        },
        "viewer": { "ip": "198.51.100.11" },
        "request": {
            "method": "GET",
            "uri": uri,
            "querystring": querystring,
            "headers": { "host": { "value": "d111111abcdef8.cloudfront.net" } },
            "cookies": {}
        },
        "response": {
            "statusCode": 200,
            "statusDescription": "OK",
            "headers": {
                "content-type": { "value": "application/octet-stream" },
                "content-length": { "value": "3" },
                "etag": { "value": "\"abc\"" }
            },
            "cookies": {}
        }
    })
}

fn asset_uri(name: &str) -> String {
    format!("/assets/k0123/{SHA256}/{name}")
}

/// The event for the kernel object with `?filename=<value>` as CloudFront hands it over.
fn with_filename(value: &str) -> Value {
    event(
        &asset_uri("kernel-amd64"),
        json!({ "filename": { "value": value } }),
    )
}

fn disposition(result: &Value) -> &str {
    result["headers"]["content-disposition"]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no content-disposition in {result}"))
}

fn attachment(name: &str) -> String {
    format!("attachment; filename=\"{name}\"")
}

#[test]
fn a_safe_filename_query_names_the_download() {
    let long = "a".repeat(200);
    let cases = [
        ("talos-metal-amd64.iso", "talos-metal-amd64.iso"),
        (
            "metal_amd64+secureboot-1.2.raw.xz",
            "metal_amd64+secureboot-1.2.raw.xz",
        ),
        (".hidden", ".hidden"),
        ("...", "..."),
        (long.as_str(), long.as_str()),
        // Percent-encoded (as the image function's redirect writes it): decoded once.
        ("metal%2Bamd64.raw.xz", "metal+amd64.raw.xz"),
        ("talos%2Dmetal.iso", "talos-metal.iso"),
    ];
    let events: Vec<Value> = cases.iter().map(|(value, _)| with_filename(value)).collect();
    for ((value, expected), result) in cases.iter().zip(run(&events)) {
        assert_eq!(disposition(&result), attachment(expected), "filename={value:?}");
    }
}

#[test]
fn unsafe_filename_queries_fall_back_to_the_last_path_segment() {
    let too_long = "a".repeat(201);
    let cases = [
        "",
        "a/b",
        "a%2Fb",
        "../etc/passwd",
        "..",
        ".",
        "%2E%2E",
        "%2e",
        "a\\b",
        "x\".iso",
        "x%22.iso",
        "x'.iso",
        "a\r\nSet-Cookie: x=y",
        "a\nb",
        "a%0d%0aSet-Cookie:%20x=y",
        "a%0D%0ASet-Cookie:%20x=y",
        "a%00b",
        "a b.iso",
        "a%20b.iso",
        "a;b.iso",
        "ä.iso",
        "%C3%A4.iso",
        "%E0%A4%A",
        "%",
        "100%25.iso",
        too_long.as_str(),
    ];
    let events: Vec<Value> = cases.iter().map(|value| with_filename(value)).collect();
    for (value, result) in cases.iter().zip(run(&events)) {
        assert_eq!(
            disposition(&result),
            attachment("kernel-amd64"),
            "filename={value:?}"
        );
    }
}

#[test]
fn without_a_filename_query_the_last_path_segment_names_the_download() {
    let events = [
        event(&asset_uri("kernel-amd64"), json!({})),
        event(&asset_uri("cmdline-metal-amd64-secureboot"), json!({})),
        // Other parameters are ignored.
        event(
            &asset_uri("kernel-arm64"),
            json!({ "name": { "value": "other.iso" }, "x": { "value": "" } }),
        ),
        // A repeated parameter: CloudFront puts the first in `value`, all in `multiValue`.
        event(
            &asset_uri("kernel-amd64"),
            json!({ "filename": {
                "value": "first.iso",
                "multiValue": [{ "value": "first.iso" }, { "value": "a/b" }]
            } }),
        ),
        // No safe name at all: a bare attachment.
        event("/assets/k0123/", json!({})),
        event("/assets/k0123/..", json!({})),
        event("/assets/k0123/a%22b", json!({ "filename": { "value": "a/b" } })),
    ];
    let expected = [
        attachment("kernel-amd64"),
        attachment("cmdline-metal-amd64-secureboot"),
        attachment("kernel-arm64"),
        attachment("first.iso"),
        "attachment".to_owned(),
        "attachment".to_owned(),
        "attachment".to_owned(),
    ];
    for ((event, expected), result) in events.iter().zip(&expected).zip(run(&events)) {
        assert_eq!(disposition(&result), expected, "event {event}");
    }
}

#[test]
fn every_response_is_immutable_and_keeps_the_rest_of_the_response() {
    let mut not_modified = event(&asset_uri("kernel-amd64"), json!({}));
    not_modified["response"]["statusCode"] = json!(304);
    not_modified["response"]["statusDescription"] = json!("Not Modified");
    let mut cached = with_filename("talos.iso");
    cached["response"]["headers"]["cache-control"] = json!({ "value": "max-age=60" });
    cached["response"]["cookies"] = json!({ "c": { "value": "v", "attributes": "Secure" } });
    let events = [with_filename("talos.iso"), not_modified, cached];
    for (event, result) in events.iter().zip(run(&events)) {
        assert_eq!(result["headers"]["cache-control"]["value"], IMMUTABLE, "{result}");
        let original = &event["response"];
        assert_eq!(result["statusCode"], original["statusCode"]);
        assert_eq!(result["statusDescription"], original["statusDescription"]);
        assert_eq!(result["cookies"], original["cookies"]);
        for name in ["content-type", "content-length", "etag"] {
            assert_eq!(result["headers"][name], original["headers"][name], "{name}");
        }
        let names: Vec<&String> = result["headers"].as_object().unwrap().keys().collect();
        assert!(
            names.iter().all(|n| n.chars().all(|c| !c.is_ascii_uppercase())),
            "CloudFront Functions header names must be lowercase: {names:?}"
        );
    }
}

#[test]
fn the_template_wires_the_function_as_the_assets_viewer_response() {
    let template = template();
    for needle in [
        "Runtime: cloudfront-js-2.0",
        "PathPattern: /assets/*",
        "EventType: viewer-response",
        "FunctionARN: !GetAtt AssetHeadersFunction.FunctionMetadata.FunctionARN",
    ] {
        assert!(template.contains(needle), "template.yaml lacks {needle:?}");
    }
    // CloudFront Functions are limited to 10 KB of code.
    assert!(function_code(&template).len() < 10 * 1024);
}
