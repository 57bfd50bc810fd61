use std::path::PathBuf;

/// Why generating, writing or pushing the stand-in release failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--boot-parts DIR` was given but the directory lacks parts (see `scripts/fetch-boot-parts`).
    #[error("boot parts in {}: missing {missing} (run scripts/fetch-boot-parts)", dir.display())]
    BootParts { dir: PathBuf, missing: String },
    /// The cosign signing key could not be loaded.
    #[error("signing key: {0}")]
    Key(#[from] factory_signing::SigningError),
    /// Building an archive, a compressed stream or a squashfs failed in memory.
    #[error("building {what}: {detail}")]
    Build { what: String, detail: String },
    /// The generator produced two different images under one tag: a bug in the release plan.
    #[error("tag {repository}:{tag} would point at both {first} and {second}")]
    TagClash {
        repository: String,
        tag: String,
        first: String,
        second: String,
    },
    /// An OCI image layout on disk is not what this crate writes.
    #[error("OCI layout {}: {detail}", path.display())]
    Layout { path: PathBuf, detail: String },
    /// The registry refused a request or could not be reached.
    #[error("registry {registry}: {detail}")]
    Registry { registry: String, detail: String },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }

    pub(crate) fn build(what: impl Into<String>, detail: impl ToString) -> Self {
        Self::Build {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
