//! A stand-in Talos release, written as OCI image layouts in the exact layouts of the real
//! `ghcr.io/siderolabs/*` images, signed cosign-style with a test key, deterministic, and bootable
//! in QEMU where the host has the parts. Tests and the local server's `demo` mode use it because
//! our machines cannot reach ghcr.io.
//!
//! # What is generated
//!
//! Under `--out DIR`, one OCI image layout per repository `R` in `DIR/R/` (tags in
//! `index.json` as `org.opencontainers.image.ref.name` annotations), plus `DIR/cosign.pub`:
//!
//! | repository | tags | content |
//! | --- | --- | --- |
//! | `siderolabs/imager` | every version | `usr/install/{amd64,arm64}/{vmlinuz,initramfs.xz,systemd-boot.efi,systemd-stub.efi}` |
//! | `siderolabs/installer-base` | ≥ 1.10 | `usr/bin/installer`, `usr/bin/imager -> installer`, Entrypoint `/bin/installer` |
//! | `siderolabs/installer` | < 1.10 | two layers, the second with `usr/install/<arch>/…` |
//! | `siderolabs/extensions` | every full version | `image-digests`, `descriptions.yaml` |
//! | `siderolabs/{stand-in-firmware,intel-ucode,amd-ucode,stand-in-module,stand-in-tools,legacy-only,gvisor}` | see [`images::extensions`] | `manifest.yaml` + `rootfs/` |
//! | `siderolabs/overlays` | ≥ 1.7 | `overlays.yaml` |
//! | `siderolabs/sbc-stand-in` | `v0.1.0` | `artifacts/arm64/…`, `installers/stand-in-board`, `profiles/stand-in-board.yaml` |
//! | `siderolabs/talosctl-all` | ≥ 1.11 | `talosctl-<os>-<arch>[.exe]` |
//!
//! Every image is a multi-arch index (`linux/amd64`, `linux/arm64`); every tag's top-level
//! digest is signed (tag `sha256-<hex>.sig` in the same repository, [`cosign`]).
//!
//! # Versions and why
//!
//! Each version sits just on one side of a gate the factory or the imager branches on:
//!
//! | tag | why |
//! | --- | --- |
//! | `v1.1.2` | below the factory's minimum 1.2.0: never listed |
//! | `v1.6.4` | before overlays (< 1.7): the overlays route answers `[]` |
//! | `v1.7.6` | overlays exist; last xz era (initramfs and squashfs xz before 1.8) |
//! | `v1.9.5` | zstd era (≥ 1.8), still `installer` and `/lib/{modules,firmware}` (< 1.10) |
//! | `v1.10.7` | `installer-base`, usr-merge, sd-boot era (≥ 1.10) |
//! | `v1.11.3` | `talosctl-all` (≥ 1.11), 2000 MiB boot partition |
//! | `v1.12.1` | embedded machine configuration (≥ 1.12) |
//! | `v1.13.0-alpha.1` | pre-release of the newest line: kept by the pre-release rule (spec §10.1) |
//! | `v1.12.0-alpha.0-12-gabc` | imager tag only: a CI build tag the factory must drop |
//!
//! The factory's version list is therefore [`versions::factory_versions`]: v1.6.4 … v1.13.0-alpha.1.
//!
//! # Real and placeholder parts
//!
//! With the parts of `scripts/fetch-boot-parts` (`.test-run/boot-parts`: Debian's kernel,
//! `busybox-static`, `systemd-boot-efi`), the **amd64** payload is real: the Debian `vmlinuz`,
//! the real `systemd-bootx64.efi` and `linuxx64.efi.stub`, and an initramfs whose `/init` is a
//! busybox script ([`init_script`]) that prints a marked report and powers off — it boots in QEMU.
//! That initramfs also holds the kernel's virtio block modules ([`boot::VIRTIO_BLOCK_MODULES`]),
//! so that the report can include the META partition of a virtio boot disk.
//! The **arm64** payload is always placeholders, and so is amd64 without the parts: a 4 KiB
//! "bzImage" with a real setup header and version string, a minimal valid PE32+ for sd-boot and
//! sd-stub (with `.sbat`), and a shell-script busybox — the same layout, not bootable. Always
//! real: the cpio/zstd/xz/squashfs formats (`rootfs.sqsh` is a real squashfs written with the
//! pure-Rust `backhand` crate, no `mksquashfs` needed), the OCI layouts and the signatures.
//! Always stand-ins: extension payloads (firmware, microcode, `.ko` bytes), installers, talosctl.
//!
//! # Determinism
//!
//! Same inputs (boot parts, key), same bytes: fixed timestamps (Talos' `SOURCE_DATE_EPOCH`
//! 1559424892), entries in path order, owners 0:0, gzip without mtime, JSON field order fixed by
//! structs, RFC 6979 ECDSA signatures.

pub mod boot;
pub mod compress;
pub mod cosign;
pub mod cpio;
mod error;
pub mod images;
pub mod init_script;
pub mod initramfs;
pub mod oci;
mod parallel;
pub mod placeholder;
pub mod push;
pub mod squashfs;
mod summary;
pub mod tree;
pub mod versions;
mod yaml;

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use factory_signing::SigningKey;

pub use boot::BootPartsSource;
pub use error::Error;
pub use init_script::REPORT_MARKER;
pub use push::{push, PushSummary};
pub use summary::Summary;

use crate::boot::BootParts;
use crate::images::{extensions, imager, installer, overlays, talosctl};
use crate::oci::{Arch, Store};
use crate::versions::{Release, RELEASES};

/// Timestamp of every file, archive and image: Talos' own `SOURCE_DATE_EPOCH`.
pub const SOURCE_DATE_EPOCH: u32 = 1_559_424_892;
/// [`SOURCE_DATE_EPOCH`] as the RFC 3339 `created` of image configs.
pub const CREATED: &str = "2019-06-01T21:34:52Z";

/// What to generate, and where (`Default`: set `out` yourself; Auto boot parts, TEST key).
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    /// Output directory: repository `R` goes to `out/R/`.
    pub out: PathBuf,
    pub boot_parts: BootPartsSource,
    /// PEM private key (ECDSA P-256) to sign with; the checked-in TEST key when `None`.
    pub key_pem: Option<String>,
}

impl GenerateOptions {
    /// Into `out`, with the default boot parts ([`BootPartsSource::Auto`]) and the TEST key.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            out: out.into(),
            boot_parts: BootPartsSource::Auto,
            key_pem: None,
        }
    }
}

/// Generates the release into `out` with placeholder boot parts and the TEST key: what library
/// tests that need an upstream, but no bootable kernel, use.
pub fn generate_with_placeholders(out: impl Into<PathBuf>) -> Result<Summary, Error> {
    generate(&GenerateOptions {
        boot_parts: BootPartsSource::Placeholders,
        ..GenerateOptions::new(out)
    })
}

/// Generates the whole release into `opts.out` (see the crate docs).
///
/// Re-running into the same directory rewrites only what changed and removes stale blobs.
/// Blocking and CPU-bound for a few seconds (it uses all cores): from async code, call it via
/// `tokio::task::spawn_blocking`.
pub fn generate(opts: &GenerateOptions) -> Result<Summary, Error> {
    let start = Instant::now();
    let key = SigningKey::from_pem(opts.key_pem.as_deref().unwrap_or(cosign::TEST_KEY_PEM))?;
    let boot = BootParts::load(&opts.boot_parts)?;
    let store = build(&boot, &key)?;

    fs::create_dir_all(&opts.out).map_err(Error::io("creating", &opts.out))?;
    let bytes = oci::layout::write(&store, &opts.out)?;
    let pub_path = opts.out.join("cosign.pub");
    oci::layout::write_atomic(&pub_path, key.public_key_pem().as_bytes())?;
    Ok(Summary::new(
        &store,
        &boot,
        opts.out.clone(),
        bytes,
        start.elapsed(),
    ))
}

/// Builds every image of the release in memory, signed.
fn build(boot: &BootParts, key: &SigningKey) -> Result<Store, Error> {
    let initramfs = initramfs_all(boot)?;
    let mut store = Store::default();
    let boot_assets = imager::boot_assets_layer(boot)?;
    for (release, [amd64, arm64]) in RELEASES.iter().zip(initramfs) {
        let initramfs = move |arch: Arch| match arch {
            Arch::Amd64 => amd64.clone(),
            Arch::Arm64 => arm64.clone(),
        };
        imager::build(&mut store, release, &boot_assets, &initramfs)?;
        if release.imager_only {
            continue;
        }
        installer::build(&mut store, release, boot, &initramfs)?;
        extensions::build_catalog(&mut store, release, boot)?;
        if release.has_overlays() {
            overlays::build_catalog(&mut store, release)?;
        }
        if release.has_talosctl_all() {
            talosctl::build(&mut store, release)?;
        }
    }
    sign_all(&mut store, key)?;
    Ok(store)
}

/// The initramfs of every release and arch (`[amd64, arm64]` in release order). The only costly
/// step (compressing busybox into a cpio per version, xz is slow), so it runs on all cores.
fn initramfs_all(boot: &BootParts) -> Result<Vec<[Bytes; 2]>, Error> {
    let jobs: Vec<(&Release, Arch)> = RELEASES
        .iter()
        .flat_map(|r| Arch::ALL.into_iter().map(move |arch| (r, arch)))
        .collect();
    let mut built = parallel::map(&jobs, parallel::cores(), |(release, arch)| {
        initramfs::build(release, *arch, boot).map(Bytes::from)
    })
    .into_iter();
    let mut out = Vec::with_capacity(RELEASES.len());
    while let (Some(amd64), Some(arm64)) = (built.next(), built.next()) {
        out.push([amd64?, arm64?]);
    }
    Ok(out)
}

/// Signs every tag's top-level digest (signature tags themselves excepted).
fn sign_all(store: &mut Store, key: &SigningKey) -> Result<(), Error> {
    for (repository, repo) in store.repos_mut() {
        let targets: Vec<_> = repo
            .tags()
            .iter()
            .filter(|(tag, _)| !cosign::is_signature_tag(tag))
            .map(|(_, descriptor)| descriptor.clone())
            .collect();
        for target in targets {
            let (tag, signature) = cosign::sign(repo, repository, &target, key);
            repo.tag(repository, &tag, &signature)?;
        }
    }
    Ok(())
}
