//! The official extensions and overlays catalogs of a Talos release (spec §10.2, §10.3), parsed
//! from the files the release publishes, and their JSON answers (spec §4.5, §4.6).
//!
//! * `image-digests` (in `siderolabs/extensions:<v>`): one reference per line,
//!   `ghcr.io/siderolabs/<name>:<tag>@sha256:<hex>`.
//! * `descriptions.yaml` (same image, absent in old releases): a map keyed by those full lines
//!   to `{author, description}`.
//! * `overlays.yaml` (in `siderolabs/overlays:<v>`): `overlays: [{name, image, digest}]`, `image`
//!   being a tagged reference.

use serde::{Deserialize, Serialize};
use yaml_rust2::{Yaml, YamlLoader};

/// Why a catalog file could not be read. Always the upstream's fault: the release is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("{file} line {line}: {reason}")]
    Line {
        file: &'static str,
        line: usize,
        reason: String,
    },
    #[error("{file}: {reason}")]
    File { file: &'static str, reason: String },
}

/// One official extension, as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionEntry {
    /// The repository path without registry: `siderolabs/amd-ucode`.
    pub name: String,
    /// The tag of the catalog's reference: `20240115`.
    pub reference_tag: String,
    /// `sha256:<hex>`.
    pub digest: String,
    /// From `descriptions.yaml`, empty when absent.
    pub author: String,
    /// From `descriptions.yaml`, empty when absent.
    pub description: String,
}

/// One official overlay, as `overlays.yaml` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayEntry {
    /// The overlay's name in schematics: `rpi_generic`.
    pub name: String,
    /// The image's repository path without registry: `siderolabs/sbc-raspberrypi`.
    pub image: String,
    /// The image's tag: `v0.1.0`.
    pub tag: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// An element of `GET /version/{v}/extensions/official`; field order as the Go factory's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtensionJson {
    pub name: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
    pub author: String,
    pub description: String,
}

/// An element of `GET /version/{v}/overlays/official`; field order as the Go factory's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverlayJson {
    pub name: String,
    pub image: String,
    #[serde(rename = "ref")]
    pub reference: String,
    pub digest: String,
}

/// A reference split the way go-containerregistry reads `registry/repo:tag[@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    repository: String,
    tag: String,
    digest: Option<String>,
}

/// Parses `registry/path:tag[@sha256:hex]`. The first path segment is a registry when it looks
/// like a host (contains `.` or `:`, or is `localhost`), as Docker decides; a missing tag means
/// `latest`, as go-containerregistry's `name.NewTag` does.
fn parse_reference(text: &str) -> Result<Reference, String> {
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (text, None),
    };
    if let Some(digest) = digest {
        check_digest(digest)?;
    }
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&name_and_tag[..colon], &name_and_tag[colon + 1..])
        }
        None => (name_and_tag, "latest"),
    };
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err(format!("invalid tag {tag:?} in reference {text:?}"));
    }
    let repository = match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => name,
    };
    let valid_repository = !repository.is_empty()
        && repository.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !valid_repository {
        return Err(format!("invalid repository in reference {text:?}"));
    }
    Ok(Reference {
        repository: repository.to_owned(),
        tag: tag.to_owned(),
        digest: digest.map(str::to_owned),
    })
}

/// `sha256:` and 64 lower-case hex digits: the only digest Talos catalogs use.
fn check_digest(digest: &str) -> Result<(), String> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid digest {digest:?}"))
    }
}

/// The extensions catalog: `image-digests` (required) and `descriptions.yaml` (optional; old
/// releases have none), in `image-digests` order.
pub fn parse_extensions(
    image_digests: &str,
    descriptions_yaml: Option<&str>,
) -> Result<Vec<ExtensionEntry>, CatalogError> {
    const FILE: &str = "image-digests";
    let descriptions = match descriptions_yaml {
        Some(text) => parse_descriptions(text)?,
        None => Vec::new(),
    };
    let mut entries = Vec::new();
    for (index, raw) in image_digests.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let reference = parse_reference(line).map_err(|reason| CatalogError::Line {
            file: FILE,
            line: index + 1,
            reason,
        })?;
        let Some(digest) = reference.digest else {
            return Err(CatalogError::Line {
                file: FILE,
                line: index + 1,
                reason: format!("reference {line:?} has no digest"),
            });
        };
        let (author, description) = descriptions
            .iter()
            .find(|(key, _, _)| key == line)
            .map(|(_, a, d)| (a.clone(), d.clone()))
            .unwrap_or_default();
        entries.push(ExtensionEntry {
            name: reference.repository,
            reference_tag: reference.tag,
            digest,
            author,
            description,
        });
    }
    Ok(entries)
}

/// `descriptions.yaml` as `(line, author, description)` triples.
fn parse_descriptions(text: &str) -> Result<Vec<(String, String, String)>, CatalogError> {
    const FILE: &str = "descriptions.yaml";
    let error = |reason: String| CatalogError::File { file: FILE, reason };
    let docs = YamlLoader::load_from_str(text).map_err(|e| error(e.to_string()))?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    let map = match doc {
        Yaml::Hash(map) => map,
        Yaml::Null => return Ok(Vec::new()),
        _ => return Err(error("not a map of references".to_owned())),
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let key = scalar(key).ok_or_else(|| error("a key is not a reference string".to_owned()))?;
        let field = |name: &str| -> Result<String, CatalogError> {
            match &value[name] {
                Yaml::BadValue | Yaml::Null => Ok(String::new()),
                other => scalar(other).ok_or_else(|| error(format!("{key}: {name} is not a string"))),
            }
        };
        if !matches!(value, Yaml::Hash(_) | Yaml::Null) {
            return Err(error(format!("{key}: not a map")));
        }
        out.push((key.trim().to_owned(), field("author")?, field("description")?));
    }
    Ok(out)
}

/// `overlays.yaml`, in file order.
pub fn parse_overlays(overlays_yaml: &str) -> Result<Vec<OverlayEntry>, CatalogError> {
    const FILE: &str = "overlays.yaml";
    let error = |reason: String| CatalogError::File { file: FILE, reason };
    let docs = YamlLoader::load_from_str(overlays_yaml).map_err(|e| error(e.to_string()))?;
    let Some(doc) = docs.first() else {
        return Ok(Vec::new());
    };
    let list = match &doc["overlays"] {
        Yaml::Array(list) => list.as_slice(),
        Yaml::Null | Yaml::BadValue if matches!(doc, Yaml::Hash(_) | Yaml::Null) => &[],
        _ => return Err(error("`overlays` is not a list".to_owned())),
    };
    let mut entries = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let field = |name: &str| {
            scalar(&item[name]).filter(|s| !s.is_empty()).ok_or_else(|| {
                error(format!(
                    "overlay #{}: `{name}` is missing or not a string",
                    index + 1
                ))
            })
        };
        let name = field("name")?;
        let image = field("image")?;
        let digest = field("digest")?;
        let reference =
            parse_reference(&image).map_err(|reason| error(format!("overlay {name}: {reason}")))?;
        check_digest(&digest).map_err(|reason| error(format!("overlay {name}: {reason}")))?;
        entries.push(OverlayEntry {
            name,
            image: reference.repository,
            tag: reference.tag,
            digest,
        });
    }
    Ok(entries)
}

/// A YAML scalar as the text a Go string field would receive.
fn scalar(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The JSON answer for extensions; `registry` is the configured upstream registry shown in `ref`
/// (`ghcr.io`), whatever registry the catalog file names.
pub fn extensions_json(entries: &[ExtensionEntry], registry: &str) -> Vec<ExtensionJson> {
    entries
        .iter()
        .map(|e| ExtensionJson {
            name: e.name.clone(),
            reference: format!("{registry}/{}:{}", e.name, e.reference_tag),
            digest: e.digest.clone(),
            author: e.author.clone(),
            description: e.description.clone(),
        })
        .collect()
}

/// The JSON answer for overlays; see [`extensions_json`] for `registry`.
pub fn overlays_json(entries: &[OverlayEntry], registry: &str) -> Vec<OverlayJson> {
    entries
        .iter()
        .map(|o| OverlayJson {
            name: o.name.clone(),
            image: o.image.clone(),
            reference: format!("{registry}/{}:{}", o.image, o.tag),
            digest: o.digest.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:761a1b4f9ff4c5c8a0a6ef1b5b8d9d1b3c8c1b2e3f4a5b6c7d8e9f0a1b2c3d4e";
    const D2: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    fn digests() -> String {
        format!(
            "ghcr.io/siderolabs/amd-ucode:20230804@{D1}\n\n  ghcr.io/siderolabs/gvisor:20231214.0-v1.6.0@{D2}  \n"
        )
    }

    #[test]
    fn extensions_with_descriptions() {
        let descriptions = format!(
            "ghcr.io/siderolabs/amd-ucode:20230804@{D1}:\n  author: Sidero Labs\n  description: |\n    AMD microcode <binaries> & more.\n"
        );
        let entries = parse_extensions(&digests(), Some(&descriptions)).expect("parse");
        assert_eq!(
            entries,
            vec![
                ExtensionEntry {
                    name: "siderolabs/amd-ucode".into(),
                    reference_tag: "20230804".into(),
                    digest: D1.into(),
                    author: "Sidero Labs".into(),
                    description: "AMD microcode <binaries> & more.\n".into(),
                },
                ExtensionEntry {
                    name: "siderolabs/gvisor".into(),
                    reference_tag: "20231214.0-v1.6.0".into(),
                    digest: D2.into(),
                    author: String::new(),
                    description: String::new(),
                },
            ]
        );
        let json = serde_json::to_string(&extensions_json(&entries[..1], "ghcr.io")).expect("json");
        assert_eq!(
            json,
            format!(
                "[{{\"name\":\"siderolabs/amd-ucode\",\"ref\":\"ghcr.io/siderolabs/amd-ucode:20230804\",\"digest\":\"{D1}\",\"author\":\"Sidero Labs\",\"description\":\"AMD microcode <binaries> & more.\\n\"}}]"
            )
        );
    }

    #[test]
    fn extensions_without_descriptions_and_another_registry_shown() {
        let entries = parse_extensions(&digests(), None).expect("parse");
        assert!(entries
            .iter()
            .all(|e| e.author.is_empty() && e.description.is_empty()));
        let json = extensions_json(&entries, "mirror.example:5000");
        assert_eq!(
            json[1].reference,
            "mirror.example:5000/siderolabs/gvisor:20231214.0-v1.6.0"
        );
        assert!(parse_extensions("", None).expect("empty").is_empty());
    }

    #[test]
    fn malformed_catalog_lines_are_errors_with_the_line() {
        let error = parse_extensions(&format!("\nghcr.io/siderolabs/x:1@{D1}\nnot a reference\n"), None)
            .expect_err("bad");
        assert!(matches!(&error, CatalogError::Line { line: 3, .. }), "{error:?}");
        assert!(
            parse_extensions("ghcr.io/siderolabs/x:1\n", None).is_err(),
            "no digest"
        );
        assert!(parse_extensions("ghcr.io/siderolabs/x:1@sha256:abc\n", None).is_err());
        assert!(parse_extensions(&format!("ghcr.io/siderolabs/x:1@{D1}"), Some("[1, 2]")).is_err());
    }

    #[test]
    fn references_split_like_go_containerregistry() {
        let r = parse_reference("ghcr.io/siderolabs/amd-ucode:20230804").expect("ref");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("siderolabs/amd-ucode", "20230804")
        );
        let r = parse_reference("127.0.0.1:5001/siderolabs/sbc-rockchip").expect("ref");
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("siderolabs/sbc-rockchip", "latest")
        );
        let r = parse_reference("siderolabs/sbc-raspberrypi:v0.1.0").expect("ref");
        assert_eq!(r.repository, "siderolabs/sbc-raspberrypi");
        let r = parse_reference("localhost/a/b:c").expect("ref");
        assert_eq!(r.repository, "a/b");
        assert!(parse_reference("ghcr.io/Upper/case:1").is_err());
        assert!(parse_reference("ghcr.io/a:").is_err());
    }

    #[test]
    fn overlays_in_file_order() {
        let yaml = format!(
            "overlays:\n  - name: rpi_generic\n    image: ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\n    digest: {D1}\n  - name: rock64\n    image: siderolabs/sbc-rockchip:v0.1.1\n    digest: {D2}\n"
        );
        let entries = parse_overlays(&yaml).expect("parse");
        assert_eq!(
            entries[0],
            OverlayEntry {
                name: "rpi_generic".into(),
                image: "siderolabs/sbc-raspberrypi".into(),
                tag: "v0.1.0".into(),
                digest: D1.into(),
            }
        );
        assert_eq!(entries[1].name, "rock64");
        let json = serde_json::to_string(&overlays_json(&entries[..1], "ghcr.io")).expect("json");
        assert_eq!(
            json,
            format!(
                "[{{\"name\":\"rpi_generic\",\"image\":\"siderolabs/sbc-raspberrypi\",\"ref\":\"ghcr.io/siderolabs/sbc-raspberrypi:v0.1.0\",\"digest\":\"{D1}\"}}]"
            )
        );
    }

    #[test]
    fn empty_and_malformed_overlays() {
        assert!(parse_overlays("").expect("empty").is_empty());
        assert!(parse_overlays("overlays: []\n").expect("empty").is_empty());
        assert!(parse_overlays("overlays: 3\n").is_err());
        assert!(
            parse_overlays("overlays:\n  - name: x\n    image: a/b:c\n").is_err(),
            "no digest"
        );
        assert!(parse_overlays(&format!(
            "overlays:\n  - name: x\n    image: 'a b'\n    digest: {D1}\n"
        ))
        .is_err());
    }
}
