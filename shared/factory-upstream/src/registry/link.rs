//! Tag-list pagination: the `Link: <…>; rel="next"` header of the distribution spec (RFC 8288).

/// The `rel="next"` target of a `Link` header value, as written (usually a path with a query).
pub fn next_link(header: &str) -> Option<&str> {
    // Several links may be comma-separated; URLs in angle brackets do not contain `>`.
    header.split(',').find_map(|link| {
        let link = link.trim();
        let rest = link.strip_prefix('<')?;
        let (target, params) = rest.split_once('>')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| {
                    v.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
                })
                .unwrap_or(false)
        });
        is_next.then_some(target)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_next() {
        assert_eq!(
            next_link(r#"</v2/siderolabs/imager/tags/list?last=v1.2.0&n=2>; rel="next""#),
            Some("/v2/siderolabs/imager/tags/list?last=v1.2.0&n=2")
        );
        assert_eq!(
            next_link(r#"<https://x/a>; rel="prev", <https://x/b>; rel=next"#),
            Some("https://x/b")
        );
        assert_eq!(next_link(r#"<https://x/a>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }
}
