//! Tar entry paths: normalised to relative `a/b/c`, with OCI whiteouts recognised. Anything that
//! could point outside the image root (`..`, absolute paths) is refused outright rather than
//! cleaned up, since no legitimate image layer contains it.

/// OCI whiteout prefix: `dir/.wh.name` deletes `dir/name` from lower layers.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Opaque whiteout: `dir/.wh..wh..opq` hides everything lower layers put in `dir`.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// What a layer entry's path means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryPath {
    /// The root itself (`./`), or aufs bookkeeping (`.wh..wh.plnk`): nothing to apply.
    Ignore,
    /// A regular path.
    Normal(String),
    /// Deletes this path (and below) from lower layers.
    Whiteout(String),
    /// Hides the lower layers' contents of this directory (`""` is the root).
    Opaque(String),
}

/// Normalises a relative path: drops empty and `.` components, refuses `..` and absolute
/// paths. The root is `""`.
pub fn normalize(raw: &str) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err(format!("absolute path {raw:?}"));
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(format!("path {raw:?} leaves the image root")),
            p if p.contains('\0') => return Err(format!("path {raw:?} contains NUL")),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Classifies a tar entry path (bytes as stored, PAX/GNU long names already applied).
pub fn classify(raw: &[u8]) -> Result<EntryPath, String> {
    let raw =
        std::str::from_utf8(raw).map_err(|_| format!("non-UTF-8 path {:?}", String::from_utf8_lossy(raw)))?;
    let path = normalize(raw)?;
    if path.is_empty() {
        return Ok(EntryPath::Ignore);
    }
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path.as_str()),
    };
    if name == OPAQUE_MARKER {
        return Ok(EntryPath::Opaque(dir.to_string()));
    }
    if let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) {
        // `.wh..wh.*` other than the opaque marker is aufs metadata, not a deletion.
        if target.starts_with(WHITEOUT_PREFIX) || target.is_empty() {
            return Ok(EntryPath::Ignore);
        }
        return Ok(EntryPath::Whiteout(join(dir, target)));
    }
    Ok(EntryPath::Normal(path))
}

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` is `prefix` or below it (`""` contains everything).
pub fn is_within(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises() {
        assert_eq!(normalize("./usr//bin/./x"), Ok("usr/bin/x".to_string()));
        assert_eq!(normalize("./"), Ok(String::new()));
        assert!(normalize("../x").is_err());
        assert!(normalize("a/../../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
    }

    #[test]
    fn classifies_whiteouts() {
        assert_eq!(
            classify(b"etc/.wh.b.txt"),
            Ok(EntryPath::Whiteout("etc/b.txt".into()))
        );
        assert_eq!(classify(b".wh.top"), Ok(EntryPath::Whiteout("top".into())));
        assert_eq!(classify(b"opt/.wh..wh..opq"), Ok(EntryPath::Opaque("opt".into())));
        assert_eq!(classify(b".wh..wh..opq"), Ok(EntryPath::Opaque(String::new())));
        assert_eq!(classify(b"x/.wh..wh.plnk"), Ok(EntryPath::Ignore));
        assert_eq!(classify(b"./"), Ok(EntryPath::Ignore));
        assert_eq!(classify(b"./usr/bin/"), Ok(EntryPath::Normal("usr/bin".into())));
        assert!(classify(b"../escape").is_err());
        assert!(classify(b"\xff").is_err());
    }

    #[test]
    fn within() {
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(!is_within("ab", "a"));
        assert!(is_within("x", ""));
    }
}
