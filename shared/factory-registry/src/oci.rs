//! The OCI documents the registry writes and reads: descriptors, image indexes, image manifests.
//! Serialised field by field in a fixed order (serde declaration order) with absent optional
//! fields left out, so the same inputs always give the same bytes and so the same digests.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Descriptor {
    /// A plain descriptor of `bytes`.
    pub fn of(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: factory_upstream::digest::sha256_digest(bytes),
            size: bytes.len() as u64,
            platform: None,
            artifact_type: None,
            annotations: None,
        }
    }
}

/// The platform of an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
}

/// An image index (also the body of a referrers response).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    pub schema_version: u32,
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
}

impl ImageIndex {
    /// An OCI image index of `manifests`, in that order.
    pub fn new(manifests: Vec<Descriptor>) -> Self {
        ImageIndex {
            schema_version: 2,
            media_type: media::OCI_INDEX.to_owned(),
            manifests,
        }
    }

    /// The exact bytes (compact JSON) that are stored and digested.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }
}

/// An image manifest. `config` and `layers` are required; `subject` makes it an OCI 1.1
/// referrer of another manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ImageManifest {
    /// The exact bytes (compact JSON) that are stored and digested.
    pub fn to_bytes(&self) -> Vec<u8> {
        to_json(self)
    }

    /// The artifact type a referrers listing reports for this manifest (OCI distribution spec
    /// 1.1): its `artifactType`, else its config's media type.
    pub fn referrer_artifact_type(&self) -> String {
        self.artifact_type
            .clone()
            .unwrap_or_else(|| self.config.media_type.clone())
    }
}

/// Just the `mediaType` of a manifest or index, to tell which one a stored object is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MediaTypeProbe {
    #[serde(default)]
    pub media_type: Option<String>,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // These types hold strings, integers and string maps only: serde_json cannot fail on them.
    serde_json::to_vec(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn index_bytes_have_the_oci_shape() {
        let mut d = Descriptor::of(media::OCI_MANIFEST, b"{}");
        d.platform = Some(Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
        });
        let bytes = ImageIndex::new(vec![d]).to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            concat!(
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"#,
                r#""mediaType":"application/vnd.oci.image.manifest.v1+json","#,
                r#""digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"#,
                r#""platform":{"architecture":"amd64","os":"linux"}}]}"#
            )
        );
    }
}
