//! Extension compatibility constraints (`metadata.compatibility.talos.version`), read the way the
//! imager reads them (talos-imager §4.2): every `v` in front of a digit is dropped, the rest is a
//! blang/semver v4 range (`>=1.0.0`, `>=1.5.0 <1.8.0`, `<2.0.0 || >=3.0.0`, `1.2.x`), tested
//! against the core Talos version (major.minor.patch, pre-release dropped).
//!
//! Written from blang/semver's documented grammar, including its quirks: terms are split on
//! spaces except right after `>`, `<` or `=` (so `>= 1.0.0` is one term), a trailing term of a
//! single character is dropped, and wildcards (`1.2.x`, `1.x`) expand to ranges.

use semver::Version;

/// A parsed range: OR of ANDs of comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    any_of: Vec<Vec<(Op, Version)>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Range {
    /// Parses a constraint as the imager does (the `v` trimming included).
    pub fn parse(constraint: &str) -> Result<Range, String> {
        let trimmed = trim_v(constraint);
        let parts = split_and_trim(&trimmed);
        let or_parts = split_or_parts(&parts)?;
        let expanded = expand_wildcards(or_parts)?;
        let mut any_of = Vec::with_capacity(expanded.len());
        for and_part in expanded {
            let mut all_of = Vec::with_capacity(and_part.len());
            for term in and_part {
                let (op, version) = split_comparator_version(&term)?;
                let op = parse_op(op).ok_or_else(|| {
                    format!("Could not parse Range {term:?}: Could not parse comparator {op:?} in {term:?}")
                })?;
                let version = Version::parse(version).map_err(|e| {
                    format!("Could not parse Range {term:?}: Could not parse version {version:?} in {term:?}: {e}")
                })?;
                all_of.push((op, version));
            }
            any_of.push(all_of);
        }
        Ok(Range { any_of })
    }

    /// Whether `version` (compared by semver precedence) is in the range.
    pub fn matches(&self, version: &Version) -> bool {
        self.any_of.iter().any(|all_of| {
            all_of.iter().all(|(op, bound)| {
                let ord = version.cmp_precedence(bound);
                match op {
                    Op::Eq => ord.is_eq(),
                    Op::Ne => ord.is_ne(),
                    Op::Gt => ord.is_gt(),
                    Op::Ge => ord.is_ge(),
                    Op::Lt => ord.is_lt(),
                    Op::Le => ord.is_le(),
                }
            })
        })
    }
}

/// Drops each `v` that stands before a digit, with the imager's loop (which, after a removal,
/// does not look again at the character that moved into place).
fn trim_v(constraint: &str) -> String {
    let mut s: Vec<u8> = constraint.as_bytes().to_vec();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'v' && s.get(i + 1).is_some_and(u8::is_ascii_digit) {
            s.remove(i);
        }
        i += 1;
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn split_and_trim(s: &str) -> Vec<String> {
    let bytes = s.as_bytes();
    let mut result = Vec::new();
    let mut last = 0usize;
    let mut last_char = 0u8;
    for (i, &c) in bytes.iter().enumerate() {
        if c == b' ' && !matches!(last_char, b'>' | b'<' | b'=') {
            if last + 1 < i {
                result.push(&s[last..i]);
            }
            last = i + 1;
        } else if c != b' ' {
            last_char = c;
        }
    }
    if last + 1 < s.len() {
        result.push(&s[last..]);
    }
    result.into_iter().map(|p| p.replace(' ', "")).collect()
}

fn split_or_parts(parts: &[String]) -> Result<Vec<Vec<String>>, String> {
    let mut or_parts = Vec::new();
    let mut last = 0;
    for (i, p) in parts.iter().enumerate() {
        if p == "||" {
            if i == 0 {
                return Err("First element in range is '||'".into());
            }
            or_parts.push(parts[last..i].to_vec());
            last = i + 1;
        }
    }
    if last == parts.len() {
        return Err("Last element in range is '||'".into());
    }
    or_parts.push(parts[last..].to_vec());
    Ok(or_parts)
}

fn split_comparator_version(s: &str) -> Result<(&str, &str), String> {
    let i = s
        .find(|c: char| c.is_ascii_digit())
        .ok_or_else(|| format!("Could not get version from string: {s:?}"))?;
    Ok((s[..i].trim(), &s[i..]))
}

fn parse_op(s: &str) -> Option<Op> {
    Some(match s {
        "" | "=" | "==" => Op::Eq,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "<" => Op::Lt,
        "<=" => Op::Le,
        "!" | "!=" => Op::Ne,
        _ => return None,
    })
}

/// `>= 1.2.x` → `>=1.2.0`, `<= 1.2.x` → `<1.3.0`, `1.x` → `>=1.0.0 <2.0.0`, … (blang's table).
fn expand_wildcards(parts: Vec<Vec<String>>) -> Result<Vec<Vec<String>>, String> {
    let mut expanded = Vec::with_capacity(parts.len());
    for and_part in parts {
        let mut terms = Vec::with_capacity(and_part.len());
        for term in and_part {
            let (op, version) = split_comparator_version(&term)?;
            if !term.contains(".x") {
                terms.push(term.clone());
                continue;
            }
            let components: Vec<&str> = version.split('.').collect();
            let wildcard_at = if components.last() == Some(&"x") {
                components.len()
            } else {
                0
            };
            let flat = {
                let once = version.replacen(".x.x", ".x", 1).replacen(".x", ".0", 1);
                if once.split('.').count() == 2 {
                    format!("{once}.0")
                } else {
                    once
                }
            };
            let (result_op, increment) = match op {
                ">" => (">=", true),
                ">=" => (">=", false),
                "<" => ("<", false),
                "<=" => ("<", true),
                "" | "=" | "==" => {
                    terms.push(format!(">={flat}"));
                    ("<", true)
                }
                "!=" | "!" => {
                    terms.push(format!("<{flat}"));
                    (">=", true)
                }
                _ => ("", false),
            };
            let result_version = if increment {
                match wildcard_at {
                    3 => increment_at(&flat, 1),
                    2 => increment_at(&flat, 0),
                    _ => String::new(),
                }
            } else {
                flat
            };
            terms.push(format!("{result_op}{result_version}"));
        }
        expanded.push(terms);
    }
    Ok(expanded)
}

/// `flat` with its `index`-th dot-separated number incremented (blang leaves the other parts).
fn increment_at(flat: &str, index: usize) -> String {
    let mut parts: Vec<String> = flat.split('.').map(str::to_owned).collect();
    match parts.get(index).and_then(|p| p.parse::<u64>().ok()) {
        Some(n) => {
            parts[index] = (n + 1).to_string();
            parts.join(".")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(constraint: &str, version: &str) -> bool {
        Range::parse(constraint)
            .unwrap_or_else(|e| panic!("{constraint:?}: {e}"))
            .matches(&Version::parse(version).expect("version"))
    }

    #[test]
    fn imager_constraints() {
        assert!(ok(">= v1.0.0", "1.12.1"));
        assert!(ok(">= 1.0.0", "1.0.0"));
        assert!(ok(">=v1.10.0", "1.10.0"));
        assert!(!ok(">= v1.10.0", "1.9.5"));
        assert!(ok("< v1.10.0", "1.9.5"));
        assert!(!ok("< v1.10.0", "1.10.7"));
        assert!(ok(">= v1.5.0 < v1.8.0", "1.7.6"));
        assert!(!ok(">= v1.5.0 < v1.8.0", "1.8.0"));
        assert!(ok("<v1.2.0 || >=v1.9.0", "1.9.5"));
        assert!(ok("<v1.2.0 || >=v1.9.0", "1.1.0"));
        assert!(!ok("<v1.2.0 || >=v1.9.0", "1.5.0"));
        assert!(ok("v1.7.6", "1.7.6"));
        assert!(ok("!=1.7.6", "1.7.5"));
    }

    #[test]
    fn wildcards() {
        assert!(ok("1.2.x", "1.2.9"));
        assert!(!ok("1.2.x", "1.3.0"));
        assert!(ok(">1.2.x", "1.3.0"));
        assert!(!ok(">1.2.x", "1.2.5"));
        assert!(ok("<=1.x", "1.99.0"));
        assert!(!ok("<=1.x", "2.0.0"));
        // blang ANDs the two halves of a negated wildcard (`<1.2.0 >=1.3.0`): nothing matches.
        assert!(!ok("!=1.2.x", "1.1.0") && !ok("!=1.2.x", "1.2.3") && !ok("!=1.2.x", "1.4.0"));
    }

    #[test]
    fn errors() {
        assert!(Range::parse("|| >=1.0.0").is_err());
        assert!(Range::parse(">=1.0.0 ||").is_err());
        assert!(Range::parse(">=1.0").is_err());
        assert!(Range::parse("~1.0.0").is_err());
        assert!(Range::parse("latest").is_err());
    }

    #[test]
    fn v_trimming_quirk() {
        assert_eq!(trim_v(">= v1.0.0"), ">= 1.0.0");
        assert_eq!(trim_v("vv1"), "v1");
        assert_eq!(trim_v("dev1"), "de1");
    }
}
