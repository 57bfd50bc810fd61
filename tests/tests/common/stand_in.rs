//! The stand-in Talos release (`tools/stand-in-release`) as the upstream of the image tests:
//! generated into a temp dir (placeholder boot parts, the generator's TEST signing key), read as
//! OCI layouts and verified with its own `cosign.pub`, exactly as `image-factory-local
//! --upstream oci-layout:DIR --upstream-cosign-key DIR/cosign.pub` reads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use factory_core::arch::Arch;
use factory_local::{Options, UpstreamChoice};
use factory_store::ContentStore;
use factory_upstream::{CatalogConfig, ReleaseCatalog, Upstream, COSIGN_KEY_FILE};

/// The Talos version the image tests build for (one of the stand-in release's versions).
pub const VERSION: &str = "v1.12.1";

/// Where the imager image keeps the kernel of `amd64`.
const KERNEL_AMD64: &str = "usr/install/amd64/vmlinuz";

/// A generated stand-in release, removed on drop.
#[derive(Debug)]
pub struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    /// Generates the release (blocking, a few seconds of CPU): call it outside async code.
    pub fn generate() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = stand_in_release::GenerateOptions {
            out: dir.path().to_owned(),
            boot_parts: stand_in_release::BootPartsSource::Placeholders,
            key_pem: None,
        };
        stand_in_release::generate(&options).expect("generate the stand-in release");
        Self { dir }
    }

    /// The OCI layouts, one per repository (`<path>/siderolabs/imager/`...).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The public key the release is signed with.
    pub fn cosign_key(&self) -> PathBuf {
        self.dir.path().join(COSIGN_KEY_FILE)
    }

    /// Local server options over `data_dir` reading this release (built-in defaults otherwise,
    /// not the developer's environment).
    pub fn options(&self, data_dir: &Path) -> Options {
        let mut options = Options::with_data_dir(data_dir);
        options.upstream = UpstreamChoice::Layout(self.path().to_owned());
        options.upstream_cosign_key = Some(self.cosign_key());
        options
    }

    /// The upstream adapter over the layouts, verifying signatures with [`Self::cosign_key`].
    pub fn upstream(&self) -> Arc<Upstream> {
        Arc::new(Upstream::from_layout_dir(self.path()).expect("the stand-in release's upstream"))
    }

    /// The release catalog over [`Self::upstream`], caching in `store`, as the local server and
    /// the Lambda functions build it (default configuration).
    pub fn catalog(&self, store: Arc<dyn ContentStore>) -> Arc<ReleaseCatalog> {
        Arc::new(ReleaseCatalog::new(
            self.upstream(),
            store,
            CatalogConfig::default(),
        ))
    }

    /// The release's `amd64` kernel at [`VERSION`], read with the upstream adapter: what
    /// `kernel-amd64` must serve, byte for byte.
    pub async fn kernel(&self) -> Vec<u8> {
        self.imager_file(VERSION, KERNEL_AMD64).await
    }

    /// A file of the release's imager image at `version` (`usr/install/<arch>/...`), read with
    /// the upstream adapter from its `linux/amd64` image (which carries both architectures).
    pub async fn imager_file(&self, version: &str, path: &str) -> Vec<u8> {
        let upstream = self.upstream();
        let image = upstream
            .resolve("siderolabs/imager", version)
            .await
            .expect("the stand-in release has an imager");
        let mut files = upstream
            .read_files(&image, Arch::Amd64, &[path])
            .await
            .expect("read the imager");
        files
            .remove(path)
            .unwrap_or_else(|| panic!("the imager {version} has no {path}"))
    }
}
