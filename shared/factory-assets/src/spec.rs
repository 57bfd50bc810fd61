//! The build spec: what the request side sends ([`BuildInputs::spec`]) and what the builder reads
//! back (`Spec`).
//!
//! ```text
//! {"profile": <the enhanced Profile as serde JSON>,
//!  "inputs": {"imager": "sha256:…",
//!             "base-installer": "sha256:…",                                  installer
//!             "overlay/<repository>": "sha256:…",                           installer with overlay
//!             "extension/<position>/<repository>": "sha256:…",              initramfs, UKI, …
//!             "schematic-extension-author": "Image Factory (<external URL>)"},  initramfs, UKI, …
//!  "schematic": "<canonical schematic YAML>"}                                   initramfs, UKI, …
//! ```
//!
//! `inputs` is exactly what the cache key covers besides the profile: the digest of every
//! upstream image the asset is made of, and the one deployment fact that changes its bytes (the
//! schematic extension's `metadata.author` names the factory's external URL). The digests travel
//! with the spec (rather than the builder resolving tags again) because the cache key was computed
//! from them: if a tag moved between the request and the build, the builder must still build
//! exactly what the key names. The schematic's canonical YAML (the schematic extension's
//! `extraInfo`) is a function of the schematic ID in the profile, so it is carried outside
//! `inputs`; the builder checks that it hashes to that ID.

use std::collections::BTreeMap;

use factory_core::arch::Arch;
use factory_core::profile::Profile;
use factory_core::schematic::{MetaValue, Schematic, SchematicId};
use factory_core::version::TalosVersion;
use factory_initramfs::SchematicLayer;
use factory_pipeline::AssembleError;
use serde::Deserialize;

use crate::extensions::{extension_input, ResolvedExtension};
use crate::overlay::overlay_input;

/// The input name of the imager image.
pub const IMAGER_INPUT: &str = "imager";

/// The input name of the base installer image digest (`installer` profiles only; the
/// repository is the profile's `inputs.baseInstaller`, see [`crate::base_installer_repository`]).
pub const BASE_INSTALLER_INPUT: &str = "base-installer";

/// The input name of the schematic extension's `metadata.author`.
pub const SCHEMATIC_AUTHOR_INPUT: &str = "schematic-extension-author";

/// A malformed spec: the request side and the builder disagree, which no retry fixes.
pub(crate) fn spec_error(reason: impl std::fmt::Display) -> AssembleError {
    AssembleError::User(format!("invalid build spec: {reason}"))
}

/// Everything the request side resolved for one asset: the cache key's inputs and the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    digests: BTreeMap<String, String>,
    schematic_yaml: Option<String>,
}

impl BuildInputs {
    /// The inputs of `profile`: the imager's digest, the resolved official extensions (in schematic
    /// order) and, for kinds that carry the schematic extension, its author and the schematic's
    /// canonical YAML.
    pub fn new(
        profile: &Profile,
        schematic: &Schematic,
        imager_digest: String,
        extensions: &[ResolvedExtension],
        external_url: &str,
    ) -> Self {
        let mut digests = BTreeMap::from([(IMAGER_INPUT.to_owned(), imager_digest)]);
        for (position, extension) in extensions.iter().enumerate() {
            digests.insert(
                extension_input(position, &extension.repository),
                extension.digest.clone(),
            );
        }
        let schematic_yaml = profile.inputs.schematic_extension.as_ref().map(|_| {
            let layer = SchematicLayer::new(schematic, external_url);
            digests.insert(SCHEMATIC_AUTHOR_INPUT.to_owned(), layer.author);
            layer.canonical_yaml
        });
        BuildInputs {
            digests,
            schematic_yaml,
        }
    }

    /// Adds the base installer's exact digest (installer profiles only): the `linux/<arch>`
    /// image of that index or manifest is what the installer is layered on.
    pub fn with_base_installer(mut self, digest: String) -> Self {
        self.digests.insert(BASE_INSTALLER_INPUT.to_owned(), digest);
        self
    }

    /// Adds the overlay image's exact digest (installers with an overlay), under
    /// `overlay/<repository>` ([`crate::overlay::overlay_input`]): the builder pulls exactly that
    /// image, and the cache key covers it.
    pub fn with_overlay(mut self, repository: &str, digest: String) -> Self {
        self.digests.insert(overlay_input(repository), digest);
        self
    }

    /// What the cache key covers besides the profile (name → digest).
    pub fn digests(&self) -> &BTreeMap<String, String> {
        &self.digests
    }

    /// The spec the builder receives (see the module documentation).
    pub fn spec(&self, profile: &Profile) -> serde_json::Value {
        let mut spec = serde_json::json!({ "profile": profile, "inputs": self.digests });
        // The bootloader the version and schematic select (talos-imager §9.1, §10.1), decided once
        // on the request side so that the builder does not repeat the rules.
        if let (Some(bootloader), Some(map)) = (profile.effective_bootloader(), spec.as_object_mut()) {
            map.insert("bootloader".to_owned(), bootloader.as_str().into());
        }
        if let (Some(yaml), Some(map)) = (&self.schematic_yaml, spec.as_object_mut()) {
            map.insert("schematic".to_owned(), yaml.clone().into());
        }
        spec
    }
}

/// The spec as the builder reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct Spec {
    pub profile: SpecProfile,
    pub inputs: BTreeMap<String, String>,
    /// The canonical schematic YAML, for kinds with the schematic extension.
    #[serde(default)]
    pub schematic: Option<String>,
    /// `dual-boot`, `sd-boot` or `grub` for ISOs and disk images.
    #[serde(default)]
    pub bootloader: Option<String>,
}

/// The fields of the profile JSON the assemblers read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecProfile {
    pub name: String,
    pub version: TalosVersion,
    pub platform: String,
    pub arch: String,
    pub secureboot: bool,
    pub output: SpecOutput,
    pub customization: SpecCustomization,
    pub inputs: SpecInputs,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecOutput {
    pub kind: String,
    #[serde(default)]
    pub out_format: Option<String>,
    #[serde(default)]
    pub image_options: Option<SpecImageOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecImageOptions {
    pub disk_size: u64,
    pub disk_format: String,
    #[serde(default)]
    pub disk_sector_size: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecCustomization {
    pub extra_kernel_args: Vec<String>,
    pub overlay_kernel_args: Vec<String>,
    pub meta: Vec<SpecMeta>,
    #[serde(default)]
    pub embedded_machine_configuration: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SpecMeta {
    pub key: u8,
    pub value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecInputs {
    /// `installer-base` or `installer`, for installers.
    #[serde(default)]
    pub base_installer: Option<String>,
    #[serde(default)]
    pub system_extensions: Vec<String>,
    #[serde(default)]
    pub schematic_extension: Option<SpecSchematicExtension>,
    #[serde(default)]
    pub overlay: Option<SpecOverlay>,
}

/// The profile's overlay (`ProfileOverlay`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecOverlay {
    /// The overlay's name: its installer is `installers/<name>`.
    pub name: String,
    /// The schematic's overlay options as YAML (empty when none).
    #[serde(default)]
    pub options_yaml: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpecSchematicExtension {
    pub schematic_id: String,
}

impl Spec {
    pub fn parse(value: &serde_json::Value) -> Result<Spec, AssembleError> {
        Spec::deserialize(value).map_err(spec_error)
    }

    pub fn arch(&self) -> Result<Arch, AssembleError> {
        Arch::parse(&self.profile.arch)
            .ok_or_else(|| spec_error(format!("architecture {:?}", self.profile.arch)))
    }

    pub fn meta(&self) -> Vec<MetaValue> {
        self.profile
            .customization
            .meta
            .iter()
            .map(|m| MetaValue {
                key: m.key,
                value: m.value.clone(),
            })
            .collect()
    }

    /// The schematic virtual extension (and embedded configuration) of this spec, checked
    /// against the schematic ID of the profile.
    pub fn schematic_layer(&self) -> Result<Option<SchematicLayer>, AssembleError> {
        let Some(extension) = &self.profile.inputs.schematic_extension else {
            return Ok(None);
        };
        let yaml = self
            .schematic
            .as_ref()
            .ok_or_else(|| spec_error("no schematic for the schematic extension"))?;
        let id = SchematicId::of_canonical(yaml);
        if id.as_str() != extension.schematic_id {
            return Err(spec_error(format!(
                "the schematic hashes to {}, not {}",
                id.as_str(),
                extension.schematic_id
            )));
        }
        let author = self
            .inputs
            .get(SCHEMATIC_AUTHOR_INPUT)
            .ok_or_else(|| spec_error(format!("no {SCHEMATIC_AUTHOR_INPUT} input")))?;
        Ok(Some(SchematicLayer {
            id: extension.schematic_id.clone(),
            canonical_yaml: yaml.clone(),
            embedded_config: self.profile.customization.embedded_machine_configuration.clone(),
            author: author.clone(),
        }))
    }
}
