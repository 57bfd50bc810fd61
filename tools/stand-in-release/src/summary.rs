//! What a generation produced, for the command line and for callers (tests, the local server).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::boot::BootParts;
use crate::cosign;
use crate::oci::Store;
use crate::versions::RELEASES;

/// The result of [`generate`](crate::generate).
#[derive(Debug, Clone)]
pub struct Summary {
    pub out: PathBuf,
    /// Every version tag of `siderolabs/imager`.
    pub versions: Vec<&'static str>,
    /// Repository → tag → top-level digest (signature tags included).
    pub tags: BTreeMap<String, BTreeMap<String, String>>,
    /// Bytes of all blobs on disk (per repository; blobs shared inside a repository count once).
    pub bytes: u64,
    /// How the boot payload was made (real parts or placeholders).
    pub payload: String,
    /// Whether the amd64 payload boots.
    pub bootable: bool,
    pub kernel_release: String,
    pub elapsed: Duration,
}

impl Summary {
    pub(crate) fn new(store: &Store, boot: &BootParts, out: PathBuf, bytes: u64, elapsed: Duration) -> Self {
        let tags = store
            .repos()
            .iter()
            .map(|(name, repo)| {
                let tags = repo
                    .tags()
                    .iter()
                    .map(|(tag, d)| (tag.clone(), d.digest.clone()))
                    .collect();
                (name.clone(), tags)
            })
            .collect();
        Self {
            out,
            versions: RELEASES.iter().map(|r| r.tag).collect(),
            tags,
            bytes,
            payload: boot.describe(),
            bootable: boot.amd64.bootable,
            kernel_release: boot.kernel_release.clone(),
            elapsed,
        }
    }

    /// Number of tags, signature tags included.
    pub fn tag_count(&self) -> usize {
        self.tags.values().map(BTreeMap::len).sum()
    }

    /// Number of signature tags.
    pub fn signature_count(&self) -> usize {
        self.tags
            .values()
            .flat_map(BTreeMap::keys)
            .filter(|t| cosign::is_signature_tag(t))
            .count()
    }

    /// The digest `repository:tag` points at.
    pub fn digest(&self, repository: &str, tag: &str) -> Option<&str> {
        self.tags.get(repository)?.get(tag).map(String::as_str)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "stand-in Talos release in {}", self.out.display())?;
        writeln!(f, "  versions:     {}", self.versions.join(" "))?;
        writeln!(f, "  repositories: {}", self.tags.len())?;
        for (repo, tags) in &self.tags {
            let plain: Vec<&str> = tags
                .keys()
                .map(String::as_str)
                .filter(|t| !cosign::is_signature_tag(t))
                .collect();
            writeln!(f, "    {repo}: {}", plain.join(" "))?;
        }
        writeln!(
            f,
            "  tags:         {} ({} of them signatures)",
            self.tag_count(),
            self.signature_count()
        )?;
        writeln!(f, "  payload:      {}", self.payload)?;
        writeln!(
            f,
            "  total bytes:  {} ({:.1} MiB)",
            self.bytes,
            self.bytes as f64 / (1024.0 * 1024.0)
        )?;
        write!(f, "  time:         {:.2} s", self.elapsed.as_secs_f64())
    }
}
