//! The asset cache key (spec §9.1): a sha256 over a canonical encoding of everything that
//! determines an asset's bytes.
//!
//! Encoding (documented because stored keys depend on it): one canonical JSON document
//!
//! ```text
//! {"assetFormatVersion":<ASSET_FORMAT_VERSION>,"inputs":{<name>:<digest>,...},"profile":{...},"salt":<salt>}
//! ```
//!
//! where canonical JSON means: object keys sorted by their UTF-8 bytes at every level, no
//! insignificant whitespace, strings escaped as `serde_json` does, integers in decimal, `null`
//! for absent options. Keys are sorted by our writer rather than relying on `serde_json::Map`
//! ordering, which flips to insertion order if any crate in the build enables `preserve_order`.
//! The key is the lowercase hex of the digest.
//!
//! Unlike the Go factory, which hashes go-yaml of Talos' struct plus "errata" strings, we bump
//! [`ASSET_FORMAT_VERSION`] whenever a builder fix must invalidate stored assets.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Profile;

/// Bumped whenever stored assets must be rebuilt (builder bug fixed, encoding changed).
pub const ASSET_FORMAT_VERSION: &str = "talos-factory-rs/asset/v1";

impl Profile {
    /// The cache key of the asset this profile describes, given the exact upstream inputs
    /// (`input_digests`: e.g. `"kernel" → "sha256:…"`, one entry per extension image, overlay
    /// image, base installer, and the SecureBoot signer identity) and a deployment salt.
    pub fn cache_key(&self, input_digests: &BTreeMap<String, String>, salt: &str) -> String {
        hex::encode(Sha256::digest(
            self.cache_key_document(input_digests, salt).as_bytes(),
        ))
    }

    /// The exact bytes [`Profile::cache_key`] hashes, for debugging and audits.
    pub fn cache_key_document(&self, input_digests: &BTreeMap<String, String>, salt: &str) -> String {
        let profile = serde_json::to_value(self).expect("a profile has only string keys and finite numbers");
        let inputs = input_digests
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut doc = serde_json::Map::new();
        doc.insert("assetFormatVersion".into(), ASSET_FORMAT_VERSION.into());
        doc.insert("inputs".into(), Value::Object(inputs));
        doc.insert("profile".into(), profile);
        doc.insert("salt".into(), salt.into());
        canonical_json(&Value::Object(doc))
    }
}

/// Canonical JSON text of a value (see the module documentation).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's own compact text.
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::profile::{enhance, parse_path, ProfileMeta};
    use crate::schematic::Schematic;
    use crate::version::TalosVersion;

    fn profile(path: &str) -> Profile {
        enhance(
            parse_path(path).unwrap(),
            &Schematic::default(),
            &TalosVersion::parse("1.12.1").unwrap(),
        )
        .unwrap()
    }

    fn digests() -> BTreeMap<String, String> {
        [("kernel", "sha256:aa"), ("initramfs", "sha256:bb")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn same_profile_same_key() {
        let a = profile("metal-amd64.raw.zst");
        let b = profile("metal-amd64.raw.zst");
        assert_eq!(a.cache_key(&digests(), "s"), b.cache_key(&digests(), "s"));
        assert_eq!(a.cache_key(&digests(), "s").len(), 64);
    }

    #[test]
    fn any_change_changes_the_key() {
        let base = profile("metal-amd64.raw.zst");
        let key = base.cache_key(&digests(), "s");
        let mut variants: Vec<Profile> = Vec::new();
        for path in [
            "metal-arm64.raw.zst",
            "metal-amd64.raw.xz",
            "metal-amd64.qcow2.zst",
            "metal-amd64-secureboot.raw.zst",
            "aws-amd64.raw.zst",
            "metal-amd64.iso",
        ] {
            variants.push(profile(path));
        }
        let mut p = base.clone();
        p.version = TalosVersion::parse("1.12.1-alpha.0").unwrap();
        variants.push(p);
        let mut p = base.clone();
        p.customization.extra_kernel_args.push("nolapic".into());
        variants.push(p);
        let mut p = base.clone();
        p.customization.meta.push(ProfileMeta {
            key: 10,
            value: "x".into(),
        });
        variants.push(p);
        let mut p = base.clone();
        p.inputs.system_extensions.push("siderolabs/gvisor".into());
        variants.push(p);
        let mut p = base.clone();
        p.output.image_options.as_mut().unwrap().disk_sector_size = 4096;
        variants.push(p);
        let mut p = base.clone();
        p.inputs.schematic_extension.as_mut().unwrap().schematic_id = "other".into();
        variants.push(p);
        let mut p = base.clone();
        p.customization.embedded_machine_configuration = "x".into();
        variants.push(p);

        let mut keys = std::collections::BTreeSet::new();
        keys.insert(key.clone());
        for v in &variants {
            assert!(keys.insert(v.cache_key(&digests(), "s")), "{v:?}");
        }
        // Inputs and salt count too.
        let mut d = digests();
        d.insert("kernel".into(), "sha256:ab".into());
        assert_ne!(base.cache_key(&d, "s"), key);
        d = digests();
        d.insert("extension/siderolabs/gvisor".into(), "sha256:cc".into());
        assert_ne!(base.cache_key(&d, "s"), key);
        assert_ne!(base.cache_key(&digests(), "t"), key);
    }

    #[test]
    fn independent_of_map_ordering() {
        let p = profile("metal-amd64.iso");
        let pairs: Vec<(String, String)> = (0..50)
            .map(|i| (format!("extension/{i}"), format!("sha256:{i:02x}")))
            .collect();
        let forward: HashMap<String, String> = pairs.iter().cloned().collect();
        let backward: HashMap<String, String> = pairs.iter().rev().cloned().collect();
        let a: BTreeMap<_, _> = forward.into_iter().collect();
        let b: BTreeMap<_, _> = backward.into_iter().collect();
        assert_eq!(p.cache_key(&a, ""), p.cache_key(&b, ""));
    }

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        let v: Value = serde_json::from_str(r#"{"b":{"z":1,"a":[{"y":null,"x":"\n"}]},"a":true}"#).unwrap();
        assert_eq!(
            canonical_json(&v),
            r#"{"a":true,"b":{"a":[{"x":"\n","y":null}],"z":1}}"#
        );
        let doc = profile("kernel-amd64").cache_key_document(&BTreeMap::new(), "s");
        assert!(
            doc.starts_with(
                r#"{"assetFormatVersion":"talos-factory-rs/asset/v1","inputs":{},"profile":{"arch":"amd64","#
            ),
            "{doc}"
        );
    }
}
