//! The release being built: one repository per image name, each a content-addressed blob store
//! plus tags, exactly what one OCI image layout (and one registry repository) holds.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::layer::Layer;
use super::spec::{
    to_json, Config, Descriptor, History, Index, Manifest, Platform, RootFs, RuntimeConfig, MEDIA_CONFIG,
    MEDIA_INDEX, MEDIA_MANIFEST,
};
use crate::{Error, CREATED};

/// The two architectures Talos ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    pub fn platform(self) -> Platform {
        Platform {
            architecture: self.name().to_owned(),
            os: "linux".to_owned(),
        }
    }
}

/// Runtime settings and provenance of one image.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// `created_by` of each layer's history entry (what built it), in layer order.
    pub history: Vec<String>,
}

/// One repository: blobs (configs, layers, manifests, indexes) by digest, and tags.
#[derive(Debug, Default)]
pub struct Repo {
    blobs: BTreeMap<String, Bytes>,
    tags: BTreeMap<String, Descriptor>,
}

impl Repo {
    /// Stores `data` under its digest (once, however often it is added).
    pub fn blob(&mut self, media_type: &str, data: impl Into<Bytes>) -> Descriptor {
        let data = data.into();
        let descriptor = Descriptor::new(media_type, &data);
        self.blobs.entry(descriptor.digest.clone()).or_insert(data);
        descriptor
    }

    /// A single-platform image manifest; the returned descriptor carries the platform, ready to
    /// go into an index.
    pub fn image(&mut self, arch: Arch, layers: &[&Layer], config: &ImageConfig) -> Descriptor {
        let history = (0..layers.len())
            .map(|i| History {
                created: CREATED.to_owned(),
                created_by: config
                    .history
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "stand-in-release".to_owned()),
            })
            .collect();
        let config_doc = Config {
            created: CREATED.to_owned(),
            architecture: arch.name().to_owned(),
            os: "linux".to_owned(),
            config: RuntimeConfig {
                env: config.env.clone(),
                entrypoint: config.entrypoint.clone(),
                cmd: Vec::new(),
                labels: config.labels.clone(),
            },
            rootfs: RootFs {
                kind: "layers".to_owned(),
                diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
            },
            history,
        };
        let config_descriptor = self.blob(MEDIA_CONFIG, to_json(&config_doc));
        let layer_descriptors = layers
            .iter()
            .map(|layer| {
                self.blobs
                    .entry(layer.descriptor.digest.clone())
                    .or_insert_with(|| layer.blob.clone());
                layer.descriptor.clone()
            })
            .collect();
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.to_owned(),
            config: config_descriptor,
            layers: layer_descriptors,
            annotations: BTreeMap::new(),
        };
        let mut descriptor = self.blob(MEDIA_MANIFEST, to_json(&manifest));
        descriptor.platform = Some(arch.platform());
        descriptor
    }

    /// An image manifest from explicit parts (for artifacts such as cosign signatures).
    pub fn manifest(&mut self, manifest: &Manifest) -> Descriptor {
        self.blob(MEDIA_MANIFEST, to_json(manifest))
    }

    /// A multi-platform index over platform manifests (descriptors from [`Repo::image`]).
    pub fn index(&mut self, manifests: Vec<Descriptor>) -> Descriptor {
        let index = Index {
            schema_version: 2,
            media_type: MEDIA_INDEX.to_owned(),
            manifests,
            annotations: BTreeMap::new(),
        };
        self.blob(MEDIA_INDEX, to_json(&index))
    }

    /// One image per architecture, built by `per_arch`, under one index.
    pub fn multi_arch(
        &mut self,
        mut per_arch: impl FnMut(Arch) -> Result<(Vec<Layer>, ImageConfig), Error>,
    ) -> Result<Descriptor, Error> {
        let mut manifests = Vec::new();
        for arch in Arch::ALL {
            let (layers, config) = per_arch(arch)?;
            let refs: Vec<&Layer> = layers.iter().collect();
            manifests.push(self.image(arch, &refs, &config));
        }
        Ok(self.index(manifests))
    }

    /// Points `tag` at `descriptor` (without platform or annotations). Re-tagging with the same
    /// digest is a no-op; a different digest is a bug in the release plan.
    pub fn tag(&mut self, repository: &str, tag: &str, descriptor: &Descriptor) -> Result<(), Error> {
        let mut plain = descriptor.clone();
        plain.platform = None;
        plain.annotations.clear();
        if let Some(existing) = self.tags.get(tag) {
            if existing.digest != plain.digest {
                return Err(Error::TagClash {
                    repository: repository.to_owned(),
                    tag: tag.to_owned(),
                    first: existing.digest.clone(),
                    second: plain.digest,
                });
            }
            return Ok(());
        }
        self.tags.insert(tag.to_owned(), plain);
        Ok(())
    }

    pub fn tags(&self) -> &BTreeMap<String, Descriptor> {
        &self.tags
    }

    pub fn blobs(&self) -> &BTreeMap<String, Bytes> {
        &self.blobs
    }

    pub fn get_blob(&self, digest: &str) -> Option<&Bytes> {
        self.blobs.get(digest)
    }
}

/// All repositories of the release, by repository path (`siderolabs/imager`, ...).
#[derive(Debug, Default)]
pub struct Store {
    repos: BTreeMap<String, Repo>,
}

impl Store {
    pub fn repo(&mut self, name: &str) -> &mut Repo {
        self.repos.entry(name.to_owned()).or_default()
    }

    /// `(repository, tag) → descriptor` of an already tagged image, to reuse it (extension
    /// images shared by several Talos versions are built once).
    pub fn tagged(&self, repository: &str, tag: &str) -> Option<&Descriptor> {
        self.repos.get(repository)?.tags.get(tag)
    }

    pub fn repos(&self) -> &BTreeMap<String, Repo> {
        &self.repos
    }

    pub fn repos_mut(&mut self) -> impl Iterator<Item = (&String, &mut Repo)> {
        self.repos.iter_mut()
    }
}
