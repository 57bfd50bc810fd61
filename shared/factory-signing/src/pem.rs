//! Just enough PEM inspection to pick a decoder and to give a precise error for the wrong kind of
//! key; the decoding itself is done by the RustCrypto crates.

/// The label of the first PEM block in `text` (`PRIVATE KEY`, `EC PRIVATE KEY`, ...).
pub(crate) fn first_label(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
}

#[cfg(test)]
mod tests {
    use super::first_label;

    #[test]
    fn finds_the_first_block_label() {
        let text = "junk\n-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(first_label(text), Some("EC PRIVATE KEY"));
        assert_eq!(first_label("no pem here"), None);
    }
}
