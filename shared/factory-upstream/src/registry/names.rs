//! Repository names and references as the distribution spec allows them. Checked before they are
//! put into URLs or file paths, so that neither adapter can be steered elsewhere (`..`, `%2F`,
//! query strings).

/// Whether `name` is a valid repository path (`siderolabs/imager`): `/`-separated components of
/// lowercase alphanumerics joined by `.`, `_` or `-`.
pub fn is_valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(is_valid_component)
}

fn is_valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if alnum(first) && alnum(last) => {
            bytes.iter().all(|b| alnum(b) || matches!(b, b'.' | b'_' | b'-'))
        }
        _ => false,
    }
}

/// Whether `tag` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_';
    match bytes.first() {
        Some(first) if word(first) && bytes.len() <= 128 => {
            bytes.iter().all(|b| word(b) || matches!(b, b'.' | b'-'))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for ok in [
            "siderolabs/imager",
            "proxy/siderolabs/installer-base",
            "a",
            "a.b_c-d/e__f",
        ] {
            assert!(is_valid_repository(ok), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "../a", "a/..", "A/b", "a/b?x", "a/%2e", "-a", "a b",
        ] {
            assert!(!is_valid_repository(bad), "{bad}");
        }
    }

    #[test]
    fn tags() {
        for ok in ["v1.10.0", "latest", "sha256-abc.sig", "_x", "V1-rc.0"] {
            assert!(is_valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", "a?b", &"x".repeat(129)] {
            assert!(!is_valid_tag(bad), "{bad}");
        }
    }
}
