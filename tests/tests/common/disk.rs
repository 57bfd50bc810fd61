//! Reading what the factory serves with independent tools: a tool run that fails the test with
//! its output (and names the Debian package when the tool is missing), and the partition table
//! as `sgdisk` prints it.

use std::path::Path;
use std::process::Command;

/// Runs `program` with `args`; its stdout. Fails the test with stdout and stderr when it exits
/// non-zero, and names `package` when it cannot be started.
pub fn tool(program: &str, args: &[&str], package: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (package {package}): {e}; run scripts/install-test-deps"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `sgdisk -v` finds no problem in the image's GPT; the rows of `sgdisk -p` (number, start,
/// end, size, unit, code, name), split on whitespace.
pub fn gpt_partitions(raw: &Path) -> Vec<Vec<String>> {
    let raw = raw.to_str().expect("UTF-8 path");
    let verify = tool("sgdisk", &["-v", raw], "gdisk");
    assert!(verify.contains("No problems found"), "{verify}");
    let print = tool("sgdisk", &["-p", raw], "gdisk");
    print
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The partition names of [`gpt_partitions`], in table order.
pub fn gpt_names(raw: &Path) -> Vec<String> {
    gpt_partitions(raw)
        .iter()
        .filter_map(|p| p.last().cloned())
        .collect()
}

/// `zstd -t`, then `zstd -d --sparse` next to it (the `.zst` suffix dropped): the raw image as a
/// sparse file, whatever its size.
pub fn unzstd(zst: &Path) -> std::path::PathBuf {
    let name = zst.to_str().expect("UTF-8 path");
    let raw = name.strip_suffix(".zst").expect("a .zst file").to_owned();
    tool("zstd", &["-q", "-t", name], "zstd");
    tool("zstd", &["-q", "-d", "--sparse", name, "-o", &raw], "zstd");
    raw.into()
}
