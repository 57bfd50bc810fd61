use std::fmt;

use sha2::{Digest, Sha256};

/// A schematic ID: 64 lowercase hex digits, the sha256 of the canonical YAML.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchematicId(String);

impl SchematicId {
    /// The ID of canonical schematic bytes.
    pub fn of_canonical(canonical: &str) -> Self {
        Self(hex::encode(Sha256::digest(canonical.as_bytes())))
    }

    /// Accepts only what an ID can be: 64 lowercase hex digits. Anything else is "not found"
    /// without touching storage (as the Go factory does).
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SchematicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_only_lowercase_sha256_hex() {
        let id = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";
        assert_eq!(SchematicId::parse(id).map(|i| i.to_string()), Some(id.to_owned()));
        assert!(SchematicId::parse(&id.to_uppercase()).is_none());
        assert!(SchematicId::parse(&id[1..]).is_none());
        assert!(SchematicId::parse("aaaaaaaaaaaa").is_none());
        assert!(SchematicId::parse(&format!("{}g", &id[1..])).is_none());
    }

    #[test]
    fn id_of_empty_schematic_matches_go() {
        assert_eq!(
            SchematicId::of_canonical("customization: {}\n").as_str(),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
    }
}
