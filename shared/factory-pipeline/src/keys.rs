//! The object-key scheme (see the crate documentation for the reasons behind each prefix).

use crate::PipelineError;

pub const ASSETS_PREFIX: &str = "assets/";
pub const STAGING_PREFIX: &str = "staging/";
pub const INDEX_PREFIX: &str = "index/";
pub const CLAIMS_PREFIX: &str = "claims/";
pub const FAILURES_PREFIX: &str = "failures/";

/// Longest accepted cache key. A sha256 hex key is 64; the limit leaves room for a suffix in SQS
/// deduplication ids (128 characters at most) without hashing.
pub const MAX_CACHE_KEY_LEN: usize = 80;

/// A cache key is one key segment of `[A-Za-z0-9_-]`: it is embedded in object keys, in SQS
/// group/dedup ids and in file names, and must mean the same thing in all of them.
pub fn validate_cache_key(cache_key: &str) -> Result<(), PipelineError> {
    let ok = !cache_key.is_empty()
        && cache_key.len() <= MAX_CACHE_KEY_LEN
        && cache_key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PipelineError::Invalid {
            what: "cache key",
            value: cache_key.to_owned(),
        })
    }
}

/// A file name is one key segment of `[A-Za-z0-9._+-]` (not `.`/`..`, at most 200 bytes): it
/// ends up in a URL path and a `Content-Disposition` header, so nothing needing escaping.
pub fn validate_file_name(name: &str) -> Result<(), PipelineError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PipelineError::Invalid {
            what: "file name",
            value: name.to_owned(),
        })
    }
}

/// `assets/<cache_key>/<sha256>/<file name>`: immutable, content-addressed.
pub fn asset_key(cache_key: &str, sha256_hex: &str, file_name: &str) -> String {
    format!("{ASSETS_PREFIX}{cache_key}/{sha256_hex}/{file_name}")
}

/// `staging/<cache_key>/<build id>`: where a build streams before its digest is known.
pub fn staging_key(cache_key: &str, build_id: &str) -> String {
    format!("{STAGING_PREFIX}{cache_key}/{build_id}")
}

/// `index/<cache_key>.json`: the signed index record.
pub fn index_key(cache_key: &str) -> String {
    format!("{INDEX_PREFIX}{cache_key}.json")
}

/// `claims/<cache_key>.json`: the build claim.
pub fn claim_key(cache_key: &str) -> String {
    format!("{CLAIMS_PREFIX}{cache_key}.json")
}

/// `failures/<cache_key>.json`: the negative cache record.
pub fn failure_key(cache_key: &str) -> String {
    format!("{FAILURES_PREFIX}{cache_key}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_documented_shape() {
        assert_eq!(asset_key("k", "ab", "kernel-amd64"), "assets/k/ab/kernel-amd64");
        assert_eq!(index_key("k"), "index/k.json");
        assert_eq!(claim_key("k"), "claims/k.json");
        assert_eq!(failure_key("k"), "failures/k.json");
        assert_eq!(staging_key("k", "b"), "staging/k/b");
    }

    #[test]
    fn cache_keys_and_file_names_are_single_safe_segments() {
        assert!(validate_cache_key(&"a".repeat(64)).is_ok());
        for bad in ["", "a/b", "..", "a b", "a.b", &"a".repeat(81)] {
            assert!(validate_cache_key(bad).is_err(), "{bad:?}");
        }
        assert!(validate_file_name("metal-amd64.raw.zst").is_ok());
        for bad in ["", ".", "..", "a/b", "a\"b", "a\r\nb", "a b", &"a".repeat(201)] {
            assert!(validate_file_name(bad).is_err(), "{bad:?}");
        }
    }
}
