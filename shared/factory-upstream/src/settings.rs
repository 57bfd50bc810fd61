//! The upstream and catalog configuration from the environment, shared by every Lambda function
//! that reads the release (so that they all accept the same variables with the same rules).
//!
//! * `FACTORY_UPSTREAM_REGISTRY` (default `https://ghcr.io`): the registry, `http://` or
//!   `https://` (plain HTTP is used as given, for loopback mirrors). Its `host[:port]` is the
//!   registry shown in catalog `ref`s, as the Go factory shows `artifacts.core.registry`.
//! * `FACTORY_UPSTREAM_NAMESPACE` (default empty): a pull-through prefix (e.g. a Harbor project).
//! * `FACTORY_UPSTREAM_COSIGN_KEY_PEM`: the PEM public key release images must be signed with;
//!   required unless `FACTORY_UPSTREAM_VERIFY=false` (then signatures are not checked, and a
//!   warning says so). Line breaks may be written as `\n` (one-line settings).
//! * `FACTORY_MIN_TALOS_VERSION` (default `1.2.0`), `FACTORY_BROKEN_TALOS_VERSIONS` (comma
//!   list, default empty): see [`CatalogConfig`].

use std::sync::Arc;

use factory_core::version::{TalosVersion, DEFAULT_MIN_VERSION};

use crate::catalog::{CatalogConfig, DEFAULT_DISPLAY_REGISTRY};
use crate::registry::RegistrySource;
use crate::verify::Verification;
use crate::{Upstream, UpstreamConfig, UpstreamError};

pub const ENV_UPSTREAM_REGISTRY: &str = "FACTORY_UPSTREAM_REGISTRY";
pub const ENV_UPSTREAM_NAMESPACE: &str = "FACTORY_UPSTREAM_NAMESPACE";
pub const ENV_UPSTREAM_COSIGN_KEY_PEM: &str = "FACTORY_UPSTREAM_COSIGN_KEY_PEM";
pub const ENV_UPSTREAM_VERIFY: &str = "FACTORY_UPSTREAM_VERIFY";
pub const ENV_MIN_TALOS_VERSION: &str = "FACTORY_MIN_TALOS_VERSION";
pub const ENV_BROKEN_TALOS_VERSIONS: &str = "FACTORY_BROKEN_TALOS_VERSIONS";

/// The production upstream.
pub const DEFAULT_UPSTREAM_REGISTRY: &str = "https://ghcr.io";

/// A setting that cannot be used; the process should stop at start.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "{ENV_UPSTREAM_COSIGN_KEY_PEM} is required: release images are verified with a cosign public key \
         (keyless verification is not supported); set {ENV_UPSTREAM_VERIFY}=false to skip verification"
    )]
    MissingKey,
}

/// Where release images come from and how they are checked.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `scheme://host[:port]`.
    pub registry: String,
    pub namespace: String,
    pub verification: Verification,
}

impl UpstreamSettings {
    /// Reads the `FACTORY_UPSTREAM_*` variables; see the module documentation.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`UpstreamSettings::from_env`], with the variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let set = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let registry = set(ENV_UPSTREAM_REGISTRY).unwrap_or_else(|| DEFAULT_UPSTREAM_REGISTRY.to_owned());
        if display_registry(&registry).is_none() {
            return Err(SettingsError::Invalid {
                name: ENV_UPSTREAM_REGISTRY.to_owned(),
                reason: format!("{registry:?} is not an http:// or https:// URL with a host"),
            });
        }
        let namespace = set(ENV_UPSTREAM_NAMESPACE).unwrap_or_default();
        let verify = match set(ENV_UPSTREAM_VERIFY).as_deref() {
            None | Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(other) => {
                return Err(SettingsError::Invalid {
                    name: ENV_UPSTREAM_VERIFY.to_owned(),
                    reason: format!("{other:?} is neither true nor false"),
                })
            }
        };
        let verification = match (set(ENV_UPSTREAM_COSIGN_KEY_PEM), verify) {
            (Some(pem), true) => {
                let pem = if pem.contains('\n') {
                    pem
                } else {
                    pem.replace("\\n", "\n")
                };
                Verification::from_public_key_pem(&pem).map_err(|e| SettingsError::Invalid {
                    name: ENV_UPSTREAM_COSIGN_KEY_PEM.to_owned(),
                    reason: e.to_string(),
                })?
            }
            (None, true) => return Err(SettingsError::MissingKey),
            (_, false) => {
                tracing::warn!(
                    "{ENV_UPSTREAM_VERIFY}=false: signatures of upstream release images are NOT verified"
                );
                Verification::Disabled
            }
        };
        Ok(Self {
            registry,
            namespace,
            verification,
        })
    }

    /// The upstream these settings describe.
    pub fn upstream(&self) -> Result<Arc<Upstream>, UpstreamError> {
        let source = RegistrySource::new(&self.registry, &self.namespace)?;
        Ok(Arc::new(Upstream::new(
            Arc::new(source),
            UpstreamConfig::new(self.verification.clone()),
        )))
    }

    /// The registry shown in catalog `ref`s: this registry's `host[:port]`.
    pub fn display_registry(&self) -> String {
        display_registry(&self.registry).unwrap_or_else(|| DEFAULT_DISPLAY_REGISTRY.to_owned())
    }
}

impl CatalogConfig {
    /// The defaults with `FACTORY_MIN_TALOS_VERSION` and `FACTORY_BROKEN_TALOS_VERSIONS` applied.
    pub fn from_env(display_registry: impl Into<String>) -> Result<Self, SettingsError> {
        Self::from_lookup(|name| std::env::var(name).ok(), display_registry)
    }

    /// As [`CatalogConfig::from_env`], with the variables looked up by `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        display_registry: impl Into<String>,
    ) -> Result<Self, SettingsError> {
        let invalid = |name: &str, reason: String| SettingsError::Invalid {
            name: name.to_owned(),
            reason,
        };
        let min_version = match lookup(ENV_MIN_TALOS_VERSION).filter(|v| !v.trim().is_empty()) {
            Some(text) => TalosVersion::parse_tolerant(&text)
                .map_err(|e| invalid(ENV_MIN_TALOS_VERSION, e.to_string()))?,
            None => DEFAULT_MIN_VERSION,
        };
        let broken = parse_version_list(&lookup(ENV_BROKEN_TALOS_VERSIONS).unwrap_or_default())
            .map_err(|e| invalid(ENV_BROKEN_TALOS_VERSIONS, e))?;
        Ok(Self {
            min_version,
            broken,
            display_registry: display_registry.into(),
            ..Self::default()
        })
    }
}

/// A comma-separated list of versions (`1.13.1, v1.12.0`), blanks skipped, in the given order.
pub fn parse_version_list(text: &str) -> Result<Vec<TalosVersion>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| TalosVersion::parse_tolerant(item).map_err(|e| e.to_string()))
        .collect()
}

/// `host[:port]` of an `http(s)://host[:port][/]` URL.
fn display_registry(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.trim_end_matches('/');
    let valid = !authority.is_empty()
        && !authority.contains(['/', '?', '#', '@'])
        && !authority.contains(char::is_whitespace);
    valid.then(|| authority.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const PEM: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjWJAJi6d5sAQf2wkEi//Yy/i2sXv\nok7Vyc94lRh1oenjN1MOOj6f8z9aWaudkFAemvvB9qXgpv95n9smcnCEKg==\n-----END PUBLIC KEY-----\n";

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn a_key_is_required_unless_verification_is_off() {
        assert!(matches!(
            UpstreamSettings::from_lookup(lookup(&[])),
            Err(SettingsError::MissingKey)
        ));
        let off = UpstreamSettings::from_lookup(lookup(&[(ENV_UPSTREAM_VERIFY, "false")])).expect("off");
        assert!(off.verification.is_disabled());
        assert_eq!(off.registry, "https://ghcr.io");
        assert_eq!(off.display_registry(), "ghcr.io");
        assert!(matches!(
            UpstreamSettings::from_lookup(lookup(&[(ENV_UPSTREAM_VERIFY, "maybe")])),
            Err(SettingsError::Invalid { .. })
        ));
    }

    #[test]
    fn reads_registry_namespace_and_a_one_line_key() {
        let one_line = PEM.trim_end().replace('\n', "\\n");
        let s = UpstreamSettings::from_lookup(lookup(&[
            (ENV_UPSTREAM_REGISTRY, "http://127.0.0.1:5001/"),
            (ENV_UPSTREAM_NAMESPACE, "proxy"),
            (ENV_UPSTREAM_COSIGN_KEY_PEM, &one_line),
        ]))
        .expect("settings");
        assert!(!s.verification.is_disabled());
        assert_eq!(
            (s.namespace.as_str(), s.display_registry()),
            ("proxy", "127.0.0.1:5001".to_owned())
        );
        assert!(UpstreamSettings::from_lookup(lookup(&[(ENV_UPSTREAM_COSIGN_KEY_PEM, "junk")])).is_err());
        assert!(UpstreamSettings::from_lookup(lookup(&[
            (ENV_UPSTREAM_REGISTRY, "ghcr.io"),
            (ENV_UPSTREAM_VERIFY, "false")
        ]))
        .is_err());
    }

    #[test]
    fn catalog_settings() {
        let c = CatalogConfig::from_lookup(lookup(&[]), "ghcr.io").expect("defaults");
        assert_eq!(c, CatalogConfig::default());
        let c = CatalogConfig::from_lookup(
            lookup(&[
                (ENV_MIN_TALOS_VERSION, "v1.5"),
                (ENV_BROKEN_TALOS_VERSIONS, " 1.13.1, ,v1.12.0"),
            ]),
            "mirror:5000",
        )
        .expect("set");
        assert_eq!(c.min_version, TalosVersion::new(1, 5, 0));
        assert_eq!(
            c.broken,
            vec![TalosVersion::new(1, 13, 1), TalosVersion::new(1, 12, 0)]
        );
        assert_eq!(c.display_registry, "mirror:5000");
        assert!(CatalogConfig::from_lookup(lookup(&[(ENV_BROKEN_TALOS_VERSIONS, "x")]), "r").is_err());
    }
}
