//! Official system extensions: the schematic's names resolved in the version's extensions
//! catalog (spec §6.5, request side), carried as exact digests in the build spec's inputs, and
//! pulled and extracted by digest (builder side).
//!
//! # Names
//!
//! Each `officialExtensions` entry is looked up in the catalog (whose names are repository paths,
//! `siderolabs/intel-ucode`), trying in order:
//!
//! 1. the name as written (the Go factory's only spelling);
//! 2. its alias ([`extension_alias`]: renamed extensions, `siderolabs/i915-ucode` →
//!    `siderolabs/i915`, …), as the Go factory does;
//! 3. ours: the name without the catalog's registry (`ghcr.io/siderolabs/gvisor`), or with the
//!    `siderolabs/` namespace added when it has none (`gvisor`), then that name's alias
//!    (`i915-ucode` → `siderolabs/i915`).
//!
//! The first name not found is the error, in the Go wording: `official extension "x" is not
//! available for Talos version vX` (answered `400` before anything is enqueued).
//!
//! # Inputs
//!
//! Resolved extensions go into the spec's `inputs` as `extension/<position>/<repository>` →
//! `sha256:…`, `<position>` being the 0-based place in the schematic's list: the cache key then
//! covers every extension digest, and the builder pulls exactly those images, in schematic order.

use std::collections::BTreeMap;
use std::path::Path;

use factory_core::arch::Arch;
use factory_core::catalog::ExtensionEntry;
use factory_core::profile::{extension_alias, EnhanceError};
use factory_core::version::TalosVersion;
use factory_initramfs::ExtensionSource;
use factory_pipeline::AssembleError;
use factory_upstream::Upstream;

use crate::spec::spec_error;
use crate::upstream_error;

/// The namespace of the official extensions, added to names written without one.
const OFFICIAL_NAMESPACE: &str = "siderolabs/";

/// Prefix of the extension input names.
pub const EXTENSION_INPUT_PREFIX: &str = "extension/";

/// One official extension of a schematic, found in the version's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedExtension {
    /// As the schematic lists it.
    pub requested: String,
    /// The catalog's repository path: `siderolabs/intel-ucode`.
    pub repository: String,
    /// The catalog's tag.
    pub tag: String,
    /// `sha256:<hex>` of the image (index).
    pub digest: String,
}

/// The input name of the extension at `position` (see the module documentation).
pub fn extension_input(position: usize, repository: &str) -> String {
    format!("{EXTENSION_INPUT_PREFIX}{position}/{repository}")
}

/// The names tried for `name`, in order, without repeats (see the module documentation).
fn candidates(name: &str, registry: &str) -> Vec<String> {
    let registry_prefix = format!("{}/", registry.trim_end_matches('/'));
    let unqualified = name.strip_prefix(&registry_prefix).unwrap_or(name);
    let normalised = if unqualified.contains('/') {
        unqualified.to_owned()
    } else {
        format!("{OFFICIAL_NAMESPACE}{unqualified}")
    };
    let mut names = Vec::with_capacity(4);
    for n in [name, normalised.as_str()] {
        names.push(n.to_owned());
        names.extend(extension_alias(n).map(str::to_owned));
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Resolves the schematic's official extensions in `catalog` (the version's entries), in the
/// schematic's order; `registry` is the registry the catalog's references name (`ghcr.io`).
pub fn resolve_official_extensions(
    requested: &[String],
    catalog: &[ExtensionEntry],
    version: &TalosVersion,
    registry: &str,
) -> Result<Vec<ResolvedExtension>, EnhanceError> {
    requested
        .iter()
        .map(|name| {
            candidates(name, registry)
                .iter()
                .find_map(|candidate| catalog.iter().find(|e| &e.name == candidate))
                .map(|entry| ResolvedExtension {
                    requested: name.clone(),
                    repository: entry.name.clone(),
                    tag: entry.reference_tag.clone(),
                    digest: entry.digest.clone(),
                })
                .ok_or_else(|| EnhanceError::ExtensionUnavailable {
                    name: name.clone(),
                    version: version.clone(),
                })
        })
        .collect()
}

/// An extension image named by the spec: repository and exact digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtensionInput {
    pub repository: String,
    pub digest: String,
}

/// The extension inputs of a spec in schematic order; exactly `expected` of them, numbered
/// `0..expected`.
pub(crate) fn extension_inputs(
    inputs: &BTreeMap<String, String>,
    expected: usize,
) -> Result<Vec<ExtensionInput>, AssembleError> {
    let mut found: Vec<Option<ExtensionInput>> = vec![None; expected];
    for (name, digest) in inputs {
        let Some(rest) = name.strip_prefix(EXTENSION_INPUT_PREFIX) else {
            continue;
        };
        let parsed = rest
            .split_once('/')
            .and_then(|(position, repository)| Some((position.parse::<usize>().ok()?, repository)));
        let Some((position, repository)) = parsed else {
            return Err(spec_error(format!("malformed extension input {name:?}")));
        };
        let slot = found.get_mut(position).ok_or_else(|| {
            spec_error(format!(
                "extension input {name:?} but the profile lists {expected} extensions"
            ))
        })?;
        if slot.is_some() {
            return Err(spec_error(format!("two extension inputs at position {position}")));
        }
        *slot = Some(ExtensionInput {
            repository: repository.to_owned(),
            digest: digest.clone(),
        });
    }
    found
        .into_iter()
        .enumerate()
        .map(|(position, input)| {
            input.ok_or_else(|| spec_error(format!("no extension input at position {position}")))
        })
        .collect()
}

/// Pulls each extension by its exact digest (signature verified) and extracts its `linux/<arch>`
/// filesystem into `<dir>/<position>`.
pub(crate) async fn extract_extensions(
    upstream: &Upstream,
    extensions: &[ExtensionInput],
    arch: Arch,
    dir: &Path,
) -> Result<Vec<ExtensionSource>, AssembleError> {
    let mut sources = Vec::with_capacity(extensions.len());
    for (position, extension) in extensions.iter().enumerate() {
        let image = upstream
            .resolve(&extension.repository, &extension.digest)
            .await
            .map_err(upstream_error)?;
        let dest = dir.join(position.to_string());
        std::fs::create_dir_all(&dest)
            .map_err(|e| AssembleError::Retryable(format!("creating {}: {e}", dest.display())))?;
        upstream
            .extract(&image, arch, &dest, &|_| true)
            .await
            .map_err(upstream_error)?;
        sources.push(ExtensionSource::new(dest).with_label(image.name()));
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(name: &str) -> ExtensionEntry {
        ExtensionEntry {
            name: name.into(),
            reference_tag: "1".into(),
            digest: format!("sha256:{}", name.len()),
            author: String::new(),
            description: String::new(),
        }
    }

    fn version() -> TalosVersion {
        TalosVersion::parse("v1.12.1").unwrap()
    }

    fn resolve(names: &[&str], catalog: &[ExtensionEntry]) -> Result<Vec<String>, String> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        resolve_official_extensions(&names, catalog, &version(), "ghcr.io")
            .map(|r| r.into_iter().map(|e| e.repository).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn full_short_registry_and_alias_names() {
        let catalog = [
            entry("siderolabs/gvisor"),
            entry("siderolabs/i915"),
            entry("siderolabs/intel-ucode"),
        ];
        assert_eq!(
            resolve(
                &[
                    "siderolabs/gvisor",
                    "gvisor",
                    "ghcr.io/siderolabs/intel-ucode",
                    "siderolabs/i915-ucode",
                    "i915-ucode",
                ],
                &catalog
            )
            .unwrap(),
            [
                "siderolabs/gvisor",
                "siderolabs/gvisor",
                "siderolabs/intel-ucode",
                "siderolabs/i915",
                "siderolabs/i915",
            ]
        );
    }

    #[test]
    fn the_name_itself_wins_over_its_alias() {
        let catalog = [entry("siderolabs/i915"), entry("siderolabs/i915-ucode")];
        assert_eq!(
            resolve(&["siderolabs/i915-ucode"], &catalog).unwrap(),
            ["siderolabs/i915-ucode"]
        );
    }

    #[test]
    fn unknown_names_are_the_go_error() {
        let catalog = [entry("siderolabs/gvisor")];
        assert_eq!(
            resolve(&["siderolabs/gvisor", "siderolabs/nope"], &catalog).unwrap_err(),
            r#"official extension "siderolabs/nope" is not available for Talos version v1.12.1"#
        );
        // Another registry is not the catalog's.
        assert!(resolve(&["docker.io/siderolabs/gvisor"], &catalog).is_err());
        assert!(resolve(&["other/gvisor"], &catalog).is_err());
    }

    #[test]
    fn inputs_round_trip_in_schematic_order() {
        let mut inputs = BTreeMap::from([("imager".to_owned(), "sha256:i".to_owned())]);
        for position in 0..12 {
            inputs.insert(
                extension_input(position, &format!("siderolabs/e{position}")),
                format!("sha256:{position}"),
            );
        }
        let parsed = extension_inputs(&inputs, 12).unwrap();
        assert_eq!(parsed.len(), 12);
        assert_eq!(parsed[10].repository, "siderolabs/e10");
        assert_eq!(parsed[2].digest, "sha256:2");

        assert!(extension_inputs(&inputs, 13).is_err(), "one missing");
        assert!(extension_inputs(&inputs, 11).is_err(), "one too many");
        inputs.insert("extension/x/siderolabs/y".into(), "sha256:0".into());
        assert!(extension_inputs(&inputs, 12).is_err(), "malformed");
    }
}
