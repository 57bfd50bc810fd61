//! The real `curl` CLI as the HTTP client of the integration tests.

use std::collections::HashMap;
use std::process::Command;

/// What curl received: the final response (after interim `100 Continue`s and, with `-L`,
/// redirects).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Lower-cased names; the last value wins.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs `curl <args> <base_url><path>` and returns the response; panics if curl itself fails.
pub fn curl(base_url: &str, args: &[&str], path: &str) -> Reply {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let headers_file = scratch.path().join("headers");
    let body_file = scratch.path().join("body");
    let output = Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "120",
            "--write-out",
            "%{http_code}",
        ])
        .arg("--dump-header")
        .arg(&headers_file)
        .arg("--output")
        .arg(&body_file)
        .args(args)
        .arg(format!("{}{path}", base_url.trim_end_matches('/')))
        .output()
        .expect("the curl CLI is needed by this test (apt-get install curl)");
    assert!(
        output.status.success(),
        "curl {args:?} {path} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("curl prints the status");
    let dump = std::fs::read_to_string(&headers_file).unwrap_or_default();
    // Several header blocks (100 Continue, redirects with -L): the final response's is last.
    let last = dump
        .rsplit("\r\n\r\n")
        .find(|block| !block.trim().is_empty())
        .unwrap_or_default();
    let headers = last
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&body_file).unwrap_or_default(),
    }
}
