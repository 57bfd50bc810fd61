//! The asset assemblers of the build-on-miss pipeline (`factory_pipeline::Assembler`): the
//! request side computes a [`Profile`] and the exact digests of its upstream inputs, sends them
//! as a build spec ([`build_spec`]), and the builder turns the spec into bytes here.
//!
//! # The build spec
//!
//! `{"profile": <the enhanced Profile as serde JSON>, "inputs": {"imager": "sha256:..."}}`.
//! The input digests travel with the spec (rather than the builder resolving the tag again)
//! because the cache key was computed from them: if the tag moved between the request and the
//! build, the builder must still build exactly what the key names.
//!
//! # Assets built so far
//!
//! | kind | bytes |
//! |---|---|
//! | `kernel` | `usr/install/<arch>/vmlinuz` of the verified imager image, streamed |
//! | `cmdline` | [`kernel_cmdline`] of the profile (no trailing newline) |
//!
//! Other kinds are refused by the request side before anything is enqueued ([`is_built`]); a
//! spec for one that reaches the builder anyway is a user error.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use factory_core::arch::Arch;
use factory_core::cmdline::{kernel_cmdline, CmdlineInput};
use factory_core::profile::{content_type, OutputKind, Profile};
use factory_core::schematic::MetaValue;
use factory_core::version::TalosVersion;
use factory_pipeline::{AssembleError, AssembledMeta, Assembler};
use factory_upstream::{ResolvedImage, Upstream, UpstreamError};
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The input-digest name of the imager image.
pub const IMAGER_INPUT: &str = "imager";

/// Whether this factory builds assets of this kind yet.
pub fn is_built(kind: OutputKind) -> bool {
    matches!(kind, OutputKind::Kernel | OutputKind::Cmdline)
}

/// The upstream inputs (name → reference) a profile of a built kind needs, before resolution:
/// for now always the imager at the profile's version.
pub fn imager_reference(profile: &Profile) -> String {
    profile.version.to_string()
}

/// The spec the builder receives (see the crate documentation).
pub fn build_spec(profile: &Profile, inputs: &BTreeMap<String, String>) -> serde_json::Value {
    serde_json::json!({ "profile": profile, "inputs": inputs })
}

/// The canonical file name of a profile's object (the path that names it, before `?filename=`):
/// `kernel-<arch>`, `cmdline-<platform>-<arch>[-secureboot]`.
pub fn object_file_name(kind: OutputKind, platform: &str, arch: Arch, secureboot: bool) -> String {
    let suffix = if secureboot { "-secureboot" } else { "" };
    match kind {
        OutputKind::Kernel => format!("kernel-{arch}"),
        _ => format!("{}-{platform}-{arch}{suffix}", kind.as_str()),
    }
}

/// The fields of the profile JSON the assemblers read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecProfile {
    version: TalosVersion,
    platform: String,
    arch: String,
    secureboot: bool,
    output: SpecOutput,
    customization: SpecCustomization,
}

#[derive(Debug, Deserialize)]
struct SpecOutput {
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecCustomization {
    extra_kernel_args: Vec<String>,
    overlay_kernel_args: Vec<String>,
    meta: Vec<SpecMeta>,
}

#[derive(Debug, Deserialize)]
struct SpecMeta {
    key: u8,
    value: String,
}

#[derive(Debug, Deserialize)]
struct Spec {
    profile: SpecProfile,
    inputs: BTreeMap<String, String>,
}

/// Assembles kernel and cmdline assets from the Talos release (the imager image).
#[derive(Debug, Clone)]
pub struct ReleaseAssembler {
    upstream: Arc<Upstream>,
}

impl ReleaseAssembler {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self { upstream }
    }

    async fn imager(&self, inputs: &BTreeMap<String, String>) -> Result<ResolvedImage, AssembleError> {
        let digest = inputs
            .get(IMAGER_INPUT)
            .ok_or_else(|| AssembleError::User("build spec names no imager digest".into()))?;
        let repository = &self.upstream.config().components.imager;
        self.upstream
            .resolve(repository, digest)
            .await
            .map_err(upstream_error)
    }

    async fn kernel(
        &self,
        arch: Arch,
        inputs: &BTreeMap<String, String>,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<(), AssembleError> {
        let image = self.imager(inputs).await?;
        let wanted = format!("usr/install/{arch}/vmlinuz");
        let dir =
            tempfile::tempdir().map_err(|e| AssembleError::Retryable(format!("temporary directory: {e}")))?;
        let filter = {
            let wanted = wanted.clone();
            move |path: &str| path.trim_start_matches('/') == wanted
        };
        self.upstream
            .extract(&image, arch, dir.path(), &filter)
            .await
            .map_err(upstream_error)?;
        let path = dir.path().join(&wanted);
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AssembleError::User(format!(
                    "{} has no {wanted} for {arch}",
                    image.name()
                )))
            }
            Err(e) => return Err(AssembleError::Retryable(format!("opening the kernel: {e}"))),
        };
        tokio::io::copy(&mut file, out)
            .await
            .map_err(|e| AssembleError::Retryable(format!("streaming the kernel: {e}")))?;
        Ok(())
    }
}

/// A refused image (signature, content) or a missing one is not going to change on retry; an
/// unreachable upstream or a cache failure may.
fn upstream_error(error: UpstreamError) -> AssembleError {
    match error {
        UpstreamError::Unavailable { .. } | UpstreamError::Store(_) => {
            AssembleError::Retryable(error.to_string())
        }
        UpstreamError::Signature { .. } | UpstreamError::Invalid { .. } | UpstreamError::NotFound(_) => {
            AssembleError::User(error.to_string())
        }
    }
}

/// The command line of a cmdline profile.
fn cmdline(profile: &SpecProfile, arch: Arch) -> String {
    let meta: Vec<MetaValue> = profile
        .customization
        .meta
        .iter()
        .map(|m| MetaValue {
            key: m.key,
            value: m.value.clone(),
        })
        .collect();
    kernel_cmdline(&CmdlineInput {
        platform: &profile.platform,
        arch,
        version: &profile.version,
        secureboot: profile.secureboot,
        iso: false,
        extra_kernel_args: &profile.customization.extra_kernel_args,
        overlay_kernel_args: &profile.customization.overlay_kernel_args,
        meta: &meta,
    })
}

#[async_trait]
impl Assembler for ReleaseAssembler {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        let spec =
            Spec::deserialize(spec).map_err(|e| AssembleError::User(format!("invalid build spec: {e}")))?;
        let profile = &spec.profile;
        let arch = Arch::parse(&profile.arch).ok_or_else(|| {
            AssembleError::User(format!("invalid build spec: architecture {:?}", profile.arch))
        })?;
        let kind = match profile.output.kind.as_str() {
            "kernel" => OutputKind::Kernel,
            "cmdline" => OutputKind::Cmdline,
            other => {
                return Err(AssembleError::User(format!(
                    "{other} assets are not built by this factory yet"
                )))
            }
        };
        let file_name = object_file_name(kind, &profile.platform, arch, profile.secureboot);
        let mut inputs = BTreeMap::new();
        match kind {
            OutputKind::Kernel => {
                self.kernel(arch, &spec.inputs, out).await?;
                if let Some(digest) = spec.inputs.get(IMAGER_INPUT) {
                    inputs.insert(IMAGER_INPUT.to_owned(), digest.clone());
                }
            }
            _ => {
                out.write_all(cmdline(profile, arch).as_bytes())
                    .await
                    .map_err(|e| AssembleError::Retryable(format!("writing the cmdline: {e}")))?;
                inputs = spec.inputs.clone();
            }
        }
        out.flush()
            .await
            .map_err(|e| AssembleError::Retryable(format!("flushing the output: {e}")))?;
        Ok(AssembledMeta {
            content_type: content_type(&file_name).to_owned(),
            file_name,
            input_digests: inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use factory_core::profile::{enhance, parse_path};
    use factory_core::schematic::Schematic;

    fn profile(path: &str, schematic: &Schematic) -> Profile {
        let version = TalosVersion::parse("v1.12.1").expect("version");
        enhance(parse_path(path).expect("path"), schematic, &version).expect("enhance")
    }

    #[test]
    fn only_kernel_and_cmdline_are_built() {
        assert!(is_built(OutputKind::Kernel));
        assert!(is_built(OutputKind::Cmdline));
        assert!(!is_built(OutputKind::Iso));
        assert!(!is_built(OutputKind::Image));
    }

    #[test]
    fn file_names_are_the_canonical_paths() {
        assert_eq!(
            object_file_name(OutputKind::Kernel, "metal", Arch::Amd64, false),
            "kernel-amd64"
        );
        assert_eq!(
            object_file_name(OutputKind::Cmdline, "aws", Arch::Arm64, true),
            "cmdline-aws-arm64-secureboot"
        );
    }

    #[tokio::test]
    async fn cmdline_spec_is_assembled_as_kernel_cmdline() {
        let schematic = Schematic::default();
        let p = profile("cmdline-metal-amd64", &schematic);
        let inputs = BTreeMap::from([(IMAGER_INPUT.to_owned(), "sha256:00".to_owned())]);
        let spec = build_spec(&p, &inputs);
        let parsed = Spec::deserialize(&spec).expect("spec");
        let expected = kernel_cmdline(&CmdlineInput {
            platform: "metal",
            arch: Arch::Amd64,
            version: &p.version,
            secureboot: false,
            iso: false,
            extra_kernel_args: &[],
            overlay_kernel_args: &[],
            meta: &[],
        });
        assert_eq!(cmdline(&parsed.profile, Arch::Amd64), expected);
        assert!(expected.contains("talos.platform=metal"), "{expected}");
    }
}
