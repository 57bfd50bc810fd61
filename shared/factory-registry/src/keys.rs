//! The registry's object keys (see the crate documentation for why each lives where it does).

use factory_upstream::digest::sha256_hex;

/// Where blobs and manifests live, by digest.
pub const BLOB_PREFIX: &str = "assets/oci/sha256/";
/// Where referrer records live, per subject.
pub const REFERRERS_PREFIX: &str = "oci/referrers/sha256/";

/// `assets/oci/sha256/<hex>`: the blob or manifest with this digest. `None` unless `digest` is
/// `sha256:<64 lowercase hex>`, so a request path can never name another key.
pub fn blob_key(digest: &str) -> Option<String> {
    sha256_hex(digest).map(|hex| format!("{BLOB_PREFIX}{hex}"))
}

/// `oci/referrers/sha256/<subject hex>/`: the prefix listing the referrers of `subject_digest`.
/// `None` unless the digest is well formed.
pub fn referrers_prefix(subject_digest: &str) -> Option<String> {
    sha256_hex(subject_digest).map(|hex| format!("{REFERRERS_PREFIX}{hex}/"))
}

/// `<referrers prefix>sha256-<referrer hex>`: the record of one referrer (its descriptor JSON).
/// One object per referrer, so writers never read-modify-write a shared list.
pub fn referrer_record_key(subject_digest: &str, referrer_digest: &str) -> Option<String> {
    let prefix = referrers_prefix(subject_digest)?;
    let hex = sha256_hex(referrer_digest)?;
    Some(format!("{prefix}sha256-{hex}"))
}

/// The referrer digest a record key names (`sha256:<hex>`), `None` for a foreign key.
pub fn referrer_of_record_key(key: &str) -> Option<String> {
    let (_, last) = key.rsplit_once('/')?;
    let digest = format!("sha256:{}", last.strip_prefix("sha256-")?);
    sha256_hex(&digest).is_some().then_some(digest)
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn keys_have_the_documented_shape() {
        let digest = format!("sha256:{HEX}");
        assert_eq!(blob_key(&digest).unwrap(), format!("assets/oci/sha256/{HEX}"));
        assert_eq!(
            referrers_prefix(&digest).unwrap(),
            format!("oci/referrers/sha256/{HEX}/")
        );
        let record = referrer_record_key(&digest, &digest).unwrap();
        assert_eq!(record, format!("oci/referrers/sha256/{HEX}/sha256-{HEX}"));
        assert_eq!(referrer_of_record_key(&record).unwrap(), digest);
        for key in [&blob_key(&digest).unwrap(), &record] {
            assert!(factory_store::validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn only_well_formed_sha256_digests_make_keys() {
        for bad in [
            String::new(),
            HEX.to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha256:{}", &HEX[1..]),
            format!("sha256:{HEX}0"),
            format!("sha512:{HEX}"),
            "sha256:../../index/x.json".to_owned(),
            format!("sha256:{HEX}/"),
        ] {
            assert!(blob_key(&bad).is_none(), "{bad:?}");
            assert!(referrers_prefix(&bad).is_none(), "{bad:?}");
        }
        assert!(referrer_of_record_key("oci/referrers/sha256/x/other").is_none());
        assert!(referrer_of_record_key("oci/referrers/sha256/x/sha256-zz").is_none());
    }
}
