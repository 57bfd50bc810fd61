//! The few fields of OCI and Docker v2 manifests, indexes and configs the factory reads. The two
//! formats share their JSON structure, so one tolerant model serves both.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::source::{RawManifest, UpstreamError};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// The `Accept` header for manifest requests: every format the factory can read.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor (index entry, config or layer).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: Option<String>,
    pub digest: String,
    pub size: Option<u64>,
    pub platform: Option<Platform>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) if !v.is_empty() => write!(f, "/{v}"),
            _ => Ok(()),
        }
    }
}

/// A manifest or an index, whichever fields it has.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    pub schema_version: Option<u32>,
    pub media_type: Option<String>,
    pub manifests: Option<Vec<Descriptor>>,
    pub config: Option<Descriptor>,
    pub layers: Option<Vec<Descriptor>>,
}

/// The platform fields of an image config.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    pub architecture: Option<String>,
    pub os: Option<String>,
    pub variant: Option<String>,
}

/// What a manifest turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

fn is_index_type(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

fn is_manifest_type(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// The media type of manifest bytes: the document's own `mediaType`, else a specific
/// `Content-Type`, else guessed from its structure (OCI layouts may omit both).
pub fn detect_media_type(bytes: &[u8], content_type: Option<&str>) -> String {
    let doc: Option<ManifestDoc> = serde_json::from_slice(bytes).ok();
    if let Some(media_type) = doc
        .as_ref()
        .and_then(|d| d.media_type.clone())
        .filter(|m| !m.is_empty())
    {
        return media_type;
    }
    let content_type = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_string());
    if let Some(ct) = content_type
        .as_deref()
        .filter(|c| is_index_type(c) || is_manifest_type(c))
    {
        return ct.to_string();
    }
    match doc {
        Some(d) if d.manifests.is_some() => OCI_INDEX.to_string(),
        Some(d) if d.layers.is_some() || d.config.is_some() => OCI_MANIFEST.to_string(),
        _ => content_type.unwrap_or_else(|| "application/octet-stream".to_string()),
    }
}

/// Parses a raw manifest into an index or an image manifest.
pub fn parse(raw: &RawManifest, image: &str) -> Result<Parsed, UpstreamError> {
    let invalid = |reason: String| UpstreamError::Invalid {
        image: image.to_string(),
        reason,
    };
    let doc: ManifestDoc = serde_json::from_slice(&raw.bytes)
        .map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if doc.schema_version != Some(2) {
        return Err(invalid(format!(
            "unsupported manifest schema version {:?} ({})",
            doc.schema_version, raw.media_type
        )));
    }
    let as_index =
        is_index_type(&raw.media_type) || (!is_manifest_type(&raw.media_type) && doc.manifests.is_some());
    if as_index {
        return Ok(Parsed::Index(doc.manifests.unwrap_or_default()));
    }
    match (doc.config, doc.layers) {
        (Some(config), Some(layers)) => Ok(Parsed::Image { config, layers }),
        _ => Err(invalid(format!(
            "{} manifest without config or layers",
            raw.media_type
        ))),
    }
}

/// Whether an index entry is the `linux/<arch>` image (any variant: arm64 is `v8` or absent).
pub fn is_linux(platform: &Platform, arch: &str) -> bool {
    platform.os == "linux" && platform.architecture == arch
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn raw(json: &str, media_type: &str) -> RawManifest {
        RawManifest {
            digest: String::new(),
            media_type: media_type.to_string(),
            bytes: Bytes::from(json.to_string()),
        }
    }

    #[test]
    fn media_type_detection() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(detect_media_type(index, None), OCI_INDEX);
        assert_eq!(
            detect_media_type(index, Some(&format!("{DOCKER_LIST}; charset=utf-8"))),
            DOCKER_LIST
        );
        let with_field =
            br#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(
            detect_media_type(with_field, Some("application/json")),
            DOCKER_MANIFEST
        );
        assert_eq!(
            detect_media_type(
                br#"{"schemaVersion":2,"config":{"digest":"x"},"layers":[]}"#,
                None
            ),
            OCI_MANIFEST
        );
    }

    #[test]
    fn parses_both_kinds() {
        let index = raw(
            r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:a","platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#,
            OCI_INDEX,
        );
        let Ok(Parsed::Index(entries)) = parse(&index, "x") else {
            panic!("index expected")
        };
        let platform = entries[0].platform.clone().unwrap_or_default();
        assert!(is_linux(&platform, "arm64"));
        assert_eq!(platform.to_string(), "linux/arm64/v8");

        let manifest = raw(
            r#"{"schemaVersion":2,"config":{"digest":"sha256:c"},"layers":[{"digest":"sha256:l","size":3}]}"#,
            DOCKER_MANIFEST,
        );
        assert!(matches!(parse(&manifest, "x"), Ok(Parsed::Image { layers, .. }) if layers.len() == 1));
        assert!(parse(&raw(r#"{"schemaVersion":1}"#, "x"), "x").is_err());
        assert!(parse(&raw("nope", OCI_MANIFEST), "x").is_err());
    }
}
