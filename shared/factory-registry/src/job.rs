//! The registry build job: the pipeline job that publishes one tag `<identity>:<tag>`.
//!
//! ```text
//! {"registry": {"identity": "<registry host[:port]>/<image>/<schematic>",
//!               "tag": "<version>",
//!               "platforms": [{"arch": "amd64", "cache_key": "<installer asset key>", "spec": {…}},
//!                             {"arch": "arm64", …}]}}
//! ```
//!
//! Each platform's `spec` is the installer tarball asset's build spec, exactly as the image route
//! would enqueue it, so the installer image is built from the same inputs as `<image>.tar`. The
//! registry job's cache key is derived from the installer assets' cache keys (which already cover
//! every input digest) rather than from the specs: one definition of "same installer".

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Salt of the job's cache key; bump it when the published image's bytes change for the same
/// inputs (a fix in the index or signature layout), so every tag is rebuilt.
pub const JOB_FORMAT: &str = "talos-factory-rs registry job v1";

/// The key of the job object in the spec; its presence is what marks a registry job.
pub const SPEC_KEY: &str = "registry";

/// The installer asset of one architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformBuild {
    pub arch: Arch,
    /// The installer asset's pipeline cache key.
    pub cache_key: String,
    /// The installer asset's build spec.
    pub spec: Value,
}

/// The pipeline job that publishes `<identity>:<tag>`: `(cache key, spec)`.
///
/// The cache key is a sha256 hex (a valid pipeline cache key) over [`JOB_FORMAT`], the identity
/// (it is signed, so another host name is another signature), the tag and each platform's arch and
/// installer cache key, in order. They are hashed as one JSON array, which no two different
/// inputs encode the same.
pub fn registry_job(identity: &str, tag: &str, platforms: &[PlatformBuild]) -> (String, Value) {
    let keyed: Vec<Value> = platforms
        .iter()
        .map(|p| json!([p.arch.as_str(), p.cache_key]))
        .collect();
    let material = json!([JOB_FORMAT, identity, tag, keyed]).to_string();
    let cache_key = hex::encode(Sha256::digest(material.as_bytes()));
    let platforms: Vec<Value> = platforms
        .iter()
        .map(|p| json!({"arch": p.arch.as_str(), "cache_key": p.cache_key, "spec": p.spec}))
        .collect();
    let spec = json!({SPEC_KEY: {"identity": identity, "tag": tag, "platforms": platforms}});
    (cache_key, spec)
}

/// Whether a build spec is a registry job (rather than a release asset's spec).
pub fn is_registry_job(spec: &Value) -> bool {
    spec.get(SPEC_KEY).is_some()
}

/// A parsed registry job, as the builder reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryJob {
    pub identity: String,
    pub tag: String,
    pub platforms: Vec<PlatformBuild>,
}

impl RegistryJob {
    /// Parses and checks a registry job spec. A malformed one is a user error: the request side
    /// and the builder disagree, and no retry changes that.
    pub fn parse(spec: &Value) -> Result<Self, AssembleError> {
        let job = spec
            .get(SPEC_KEY)
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("no \"registry\" object"))?;
        let text = |name: &str| {
            job.get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("no string {name:?}")))
        };
        let identity = text("identity")?;
        let tag = text("tag")?;
        if !valid_identity(&identity) {
            return Err(invalid(format!("identity {identity:?}")));
        }
        if !valid_tag(&tag) {
            return Err(invalid(format!("tag {tag:?}")));
        }
        let entries = job
            .get("platforms")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("no \"platforms\" array"))?;
        if entries.is_empty() {
            return Err(invalid("no platforms"));
        }
        let mut platforms: Vec<PlatformBuild> = Vec::with_capacity(entries.len());
        for entry in entries {
            let arch = entry
                .get("arch")
                .and_then(Value::as_str)
                .and_then(|a| Arch::parse(a).filter(|parsed| parsed.as_str() == a))
                .ok_or_else(|| invalid(format!("platform arch in {entry}")))?;
            if platforms.iter().any(|p| p.arch == arch) {
                return Err(invalid(format!("platform {arch} twice")));
            }
            let spec = entry
                .get("spec")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| invalid(format!("no spec object for {arch}")))?;
            let cache_key = entry
                .get("cache_key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            platforms.push(PlatformBuild {
                arch,
                cache_key,
                spec,
            });
        }
        Ok(RegistryJob {
            identity,
            tag,
            platforms,
        })
    }
}

fn invalid(reason: impl std::fmt::Display) -> AssembleError {
    AssembleError::User(format!("invalid registry job: {reason}"))
}

/// `host[:port]/path`: printable ASCII without characters that would need escaping in JSON or
/// that Go's JSON encoder escapes differently (`<`, `>`, `&`), since the identity is embedded in
/// the signed payload, which must read the same to cosign.
fn valid_identity(identity: &str) -> bool {
    !identity.is_empty()
        && identity.len() <= 512
        && identity.contains('/')
        && identity
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&'))
}

/// An OCI tag: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    const IDENTITY: &str = "factory.test/metal-installer/abc";

    fn platforms() -> Vec<PlatformBuild> {
        Arch::ALL
            .iter()
            .map(|&arch| PlatformBuild {
                arch,
                cache_key: format!("key-{arch}"),
                spec: json!({"profile": {"arch": arch.as_str()}, "inputs": {"imager": "sha256:00"}}),
            })
            .collect()
    }

    #[test]
    fn cache_key_is_stable_and_covers_every_field() {
        let base = platforms();
        let (key, spec) = registry_job(IDENTITY, "v1.12.1", &base);
        assert!(factory_pipeline::keys::validate_cache_key(&key).is_ok());
        assert_eq!(key.len(), 64);
        assert_eq!(registry_job(IDENTITY, "v1.12.1", &base).0, key);
        // Pinned: a change of the key derivation rebuilds every tag, so it must be deliberate.
        assert_eq!(
            key,
            "ecfa53a404306f201649c74446da55a879368ba71d34e8289b186edecb025992"
        );

        let mut variants = vec![
            registry_job("factory.test:443/metal-installer/abc", "v1.12.1", &base).0,
            registry_job(IDENTITY, "v1.12.2", &base).0,
            registry_job(IDENTITY, "v1.12.1", &base[..1]).0,
        ];
        let mut swapped = base.clone();
        swapped.reverse();
        variants.push(registry_job(IDENTITY, "v1.12.1", &swapped).0);
        let mut rekeyed = base.clone();
        rekeyed[1].cache_key.push('x');
        variants.push(registry_job(IDENTITY, "v1.12.1", &rekeyed).0);
        let mut rearched = base.clone();
        rearched[0].arch = Arch::Arm64;
        rearched[1].arch = Arch::Amd64;
        variants.push(registry_job(IDENTITY, "v1.12.1", &rearched).0);
        // Field boundaries cannot shift: "a/b" + "c" differs from "a/" + "bc".
        variants.push(registry_job("factory.test/metal-installer/ab", "cv1.12.1", &base).0);
        for v in &variants {
            assert_ne!(v, &key);
        }
        let mut unique = variants.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), variants.len());

        // The specs are not part of the key (the installer cache keys stand for them).
        let mut respecced = base.clone();
        respecced[0].spec["extra"] = json!(1);
        assert_eq!(registry_job(IDENTITY, "v1.12.1", &respecced).0, key);

        assert!(is_registry_job(&spec));
        let job = RegistryJob::parse(&spec).unwrap();
        assert_eq!(
            job,
            RegistryJob {
                identity: IDENTITY.into(),
                tag: "v1.12.1".into(),
                platforms: base
            }
        );
    }

    #[test]
    fn malformed_jobs_are_user_errors() {
        let (_, good) = registry_job(IDENTITY, "v1.12.1", &platforms());
        let mut cases: Vec<Value> = vec![json!({}), json!({"registry": 1})];
        for (pointer, value) in [
            ("/registry/identity", json!(1)),
            ("/registry/identity", json!("")),
            ("/registry/identity", json!("no-slash")),
            ("/registry/identity", json!("a/b\"c")),
            ("/registry/identity", json!("a b/c")),
            ("/registry/tag", json!("")),
            ("/registry/tag", json!(".v1")),
            ("/registry/tag", json!("v1:2")),
            ("/registry/tag", json!("a".repeat(129))),
            ("/registry/platforms", json!([])),
            ("/registry/platforms", json!({})),
            ("/registry/platforms/0/arch", json!("x86_64")),
            ("/registry/platforms/0/arch", json!("riscv64")),
            ("/registry/platforms/1/arch", json!("amd64")),
            ("/registry/platforms/0/spec", json!("x")),
        ] {
            let mut spec = good.clone();
            *spec.pointer_mut(pointer).unwrap() = value;
            cases.push(spec);
        }
        for spec in cases {
            let err = RegistryJob::parse(&spec).unwrap_err();
            assert!(
                matches!(&err, AssembleError::User(m) if m.starts_with("invalid registry job: ")),
                "{spec}: {err:?}"
            );
        }
    }
}
