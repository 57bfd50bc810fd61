//! Response headers of downloads: `Content-Type` by the path's last extension (spec §4.3) and
//! the `Content-Disposition` file name.

/// The content type of `:path`, keyed on its last extension (never on `?filename=`).
///
/// Where the Go factory defers to the host's MIME tables (`mime.TypeByExtension`), we fix the
/// answer so it does not depend on the machine: `.tar` → `application/x-tar`, `.zst` →
/// `application/zstd` (RFC 8878), and `.raw`, `.vhd`, `.ova`, no extension or anything else →
/// `application/octet-stream`.
pub fn content_type(path: &str) -> &'static str {
    match extension(path) {
        ".efi" => "application/efi",
        ".iso" => "application/x-iso9660-image",
        ".xz" => "application/x-xz",
        ".gz" => "application/gzip",
        ".qcow2" => "application/x-qemu-disk",
        ".tar" => "application/x-tar",
        ".zst" => "application/zstd",
        _ => "application/octet-stream",
    }
}

/// Go's `filepath.Ext`: from the last dot of the last path element, empty when none.
fn extension(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rfind('.').map_or("", |i| &name[i..])
}

/// Longest file name accepted (common file-system limit).
const MAX_FILE_NAME_LEN: usize = 255;

/// Why a download file name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    #[error("invalid filename: empty")]
    Empty,
    #[error("invalid filename: longer than {MAX_FILE_NAME_LEN} bytes")]
    TooLong,
    #[error("invalid filename: must not contain path separators")]
    PathSeparator,
    #[error("invalid filename: must not contain \"..\"")]
    DotDot,
    #[error("invalid filename: must not be \".\"")]
    Dot,
    #[error("invalid filename: must not contain quotes")]
    Quote,
    #[error("invalid filename: must not contain control characters")]
    ControlCharacter,
    #[error("invalid filename: must be printable ASCII")]
    NonAscii,
}

/// The name for `Content-Disposition: attachment; filename="<name>"`: the `filename` query
/// parameter when non-empty (as in Go), else the path.
///
/// Unlike the Go factory, which interpolates the query verbatim, the result is validated so it
/// can neither break out of the quoted header value (quotes, CR/LF) nor name another directory
/// (`/`, `\`, `..`). It must also be printable ASCII: a header value cannot carry raw UTF-8
/// portably, and we do not emit RFC 6266 `filename*`. The path is checked too, since the path
/// grammar does not restrict platform names.
pub fn download_file_name(path: &str, filename_query: Option<&str>) -> Result<String, FileNameError> {
    let name = match filename_query {
        Some(q) if !q.is_empty() => q,
        _ => path,
    };
    validate_file_name(name)?;
    Ok(name.to_owned())
}

fn validate_file_name(name: &str) -> Result<(), FileNameError> {
    if name.is_empty() {
        return Err(FileNameError::Empty);
    }
    if name.len() > MAX_FILE_NAME_LEN {
        return Err(FileNameError::TooLong);
    }
    for c in name.chars() {
        match c {
            '/' | '\\' => return Err(FileNameError::PathSeparator),
            '"' | '\'' | '`' => return Err(FileNameError::Quote),
            c if c.is_control() => return Err(FileNameError::ControlCharacter),
            c if !c.is_ascii() => return Err(FileNameError::NonAscii),
            _ => {}
        }
    }
    if name.contains("..") {
        return Err(FileNameError::DotDot);
    }
    // "." names the directory, not a file: browsers and curl -J would save nothing useful.
    if name == "." {
        return Err(FileNameError::Dot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn content_types() {
        for (path, want) in [
            ("metal-amd64-secureboot-uki.efi", "application/efi"),
            ("metal-amd64.iso", "application/x-iso9660-image"),
            ("metal-amd64.raw.xz", "application/x-xz"),
            ("initramfs-arm64.xz", "application/x-xz"),
            ("digital-ocean-amd64.raw.gz", "application/gzip"),
            ("gcp-amd64.raw.tar.gz", "application/gzip"),
            ("metal-amd64.qcow2", "application/x-qemu-disk"),
            ("kernel-amd64", "application/octet-stream"),
            ("cmdline-metal-amd64", "application/octet-stream"),
            ("installer-amd64.tar", "application/x-tar"),
            ("metal-amd64.raw.zst", "application/zstd"),
            ("metal-amd64.raw", "application/octet-stream"),
            ("azure-amd64.vhd", "application/octet-stream"),
            ("vmware-amd64.ova", "application/octet-stream"),
        ] {
            assert_eq!(content_type(path), want, "{path}");
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(
            download_file_name("metal-amd64.iso", None).unwrap(),
            "metal-amd64.iso"
        );
        assert_eq!(
            download_file_name("metal-amd64.iso", Some("")).unwrap(),
            "metal-amd64.iso"
        );
        assert_eq!(
            download_file_name("metal-amd64.iso", Some("custom-filename.iso")).unwrap(),
            "custom-filename.iso"
        );
        assert_eq!(
            download_file_name("x", Some("my image (1).iso")).unwrap(),
            "my image (1).iso"
        );
        for (bad, want) in [
            ("a/b.iso", FileNameError::PathSeparator),
            ("a\\b.iso", FileNameError::PathSeparator),
            ("..", FileNameError::DotDot),
            (".", FileNameError::Dot),
            ("a..iso", FileNameError::DotDot),
            ("a\".iso", FileNameError::Quote),
            ("a'.iso", FileNameError::Quote),
            ("a.iso\r\nSet-Cookie: x=y", FileNameError::ControlCharacter),
            ("a\n", FileNameError::ControlCharacter),
            ("a\u{7f}", FileNameError::ControlCharacter),
            ("a\0", FileNameError::ControlCharacter),
            ("é.iso", FileNameError::NonAscii),
        ] {
            assert_eq!(
                download_file_name("metal-amd64.iso", Some(bad)),
                Err(want),
                "{bad:?}"
            );
        }
        assert_eq!(
            download_file_name(&"a".repeat(256), None),
            Err(FileNameError::TooLong)
        );
        assert_eq!(
            download_file_name("me\"tal-amd64.iso", None),
            Err(FileNameError::Quote)
        );
    }
}
