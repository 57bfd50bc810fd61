//! The customised initramfs built from the stand-in Talos release (`tools/stand-in-release`, read
//! through `factory-upstream` from its OCI layouts, signatures verified), checked with the
//! independent tools the imager itself uses: `cpio`, `unsquashfs`, `zstd`, `xz`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use factory_core::arch::Arch;
use factory_core::schematic::Schematic;
use factory_core::version::TalosVersion;
use factory_initramfs::{
    build, Base, Error, ErrorKind, ExtensionSource, Options, Request, SchematicLayer, Summary,
};
use factory_upstream::Upstream;

const FACTORY_URL: &str = "http://factory.test";

/// The stand-in release, generated per test (nextest runs every test in a process of its own)
/// and removed with it.
struct Release {
    _dir: tempfile::TempDir,
    upstream: Upstream,
    runtime: tokio::runtime::Runtime,
}

fn release() -> Release {
    let dir = tempfile::tempdir().unwrap();
    stand_in_release::generate_with_placeholders(dir.path()).unwrap();
    let upstream = Upstream::from_layout_dir(dir.path()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    Release {
        _dir: dir,
        upstream,
        runtime,
    }
}

impl Release {
    /// The release's amd64 initramfs.
    fn base(&self, version: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let image = self.upstream.resolve("siderolabs/imager", version).await.unwrap();
            let path = "usr/install/amd64/initramfs.xz";
            let mut files = self
                .upstream
                .read_files(&image, Arch::Amd64, &[path])
                .await
                .unwrap();
            files.remove(path).unwrap()
        })
    }

    /// The version's extensions catalog: repository → `repository@digest`.
    fn catalog(&self, version: &str) -> BTreeMap<String, (String, String)> {
        self.runtime.block_on(async {
            let image = self
                .upstream
                .resolve("siderolabs/extensions", version)
                .await
                .unwrap();
            let files = self
                .upstream
                .read_files(&image, Arch::Amd64, &["image-digests"])
                .await
                .unwrap();
            let text = String::from_utf8(files["image-digests"].clone()).unwrap();
            text.lines()
                .map(|line| {
                    let (reference, digest) = line.split_once('@').unwrap();
                    let repo = reference
                        .trim_start_matches("ghcr.io/")
                        .rsplit_once(':')
                        .unwrap()
                        .0;
                    (repo.to_owned(), (repo.to_owned(), digest.to_owned()))
                })
                .collect()
        })
    }

    /// Extracts the amd64 image of extension `repo` from `version`'s catalog into `dest`.
    fn extension(&self, version: &str, repo: &str, dest: &Path) -> ExtensionSource {
        let catalog = self.catalog(version);
        let (repository, digest) = catalog
            .get(repo)
            .unwrap_or_else(|| panic!("{repo} not in {version}"));
        self.runtime.block_on(async {
            let image = self.upstream.resolve(repository, digest).await.unwrap();
            self.upstream
                .extract(&image, Arch::Amd64, dest, &|_| true)
                .await
                .unwrap();
        });
        ExtensionSource::new(dest).with_label(format!("{repository}@{digest}"))
    }
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `cpio -t` of an archive (GNU cpio stops at the first trailer).
fn cpio_list(archive: &[u8]) -> Vec<String> {
    lines(&run(Command::new("cpio").args(["-t", "--quiet"]), archive))
}

/// Unpacks an archive into `dir` with `cpio -i`.
fn cpio_extract(archive: &[u8], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    run(
        Command::new("cpio")
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir),
        archive,
    );
}

/// `unsquashfs -l` of an image: paths without the `squashfs-root` prefix.
fn unsquashfs_list(image: &Path) -> Vec<String> {
    lines(&run(Command::new("unsquashfs").arg("-l").arg(image), b""))
        .into_iter()
        .filter_map(|l| {
            l.strip_prefix("squashfs-root")
                .map(|p| p.trim_start_matches('/').to_owned())
        })
        .collect()
}

fn unsquashfs_stat(image: &Path) -> String {
    String::from_utf8(run(Command::new("unsquashfs").arg("-s").arg(image), b"")).unwrap()
}

/// Splits an output into (leading raw cpio, rest), the first found by its trailer.
fn split_raw_cpio(bytes: &[u8]) -> (&[u8], &[u8]) {
    let at = bytes
        .windows(11)
        .position(|w| w == b"TRAILER!!!\0")
        .expect("a raw cpio trailer");
    let end = (at + 11).div_ceil(4) * 4;
    bytes.split_at(end)
}

fn schematic(yaml: &str) -> Schematic {
    Schematic::parse(yaml.as_bytes()).unwrap()
}

fn options(scratch: &Path) -> Options {
    Options {
        scratch_dir: scratch.to_owned(),
        threads: 2,
        ..Options::default()
    }
}

fn build_to_vec(base: &[u8], request: &Request, scratch: &Path) -> Result<(Vec<u8>, Summary), Error> {
    build_with_threads(base, request, scratch, 2)
}

fn build_with_threads(
    base: &[u8],
    request: &Request,
    scratch: &Path,
    threads: usize,
) -> Result<(Vec<u8>, Summary), Error> {
    let mut out = Vec::new();
    let options = Options {
        threads,
        ..options(scratch)
    };
    let summary = build(&Base::Bytes(base.into()), request, &options, &mut out)?;
    assert_eq!(summary.size, out.len() as u64);
    Ok((out, summary))
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    std::fs::read(path.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn zstd_era_with_firmware_microcode_and_embedded_config() {
    let version = "v1.12.1";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let firmware = rel.extension(version, "siderolabs/stand-in-firmware", &work.path().join("fw"));
    let intel = rel.extension(version, "siderolabs/intel-ucode", &work.path().join("intel"));
    let config = "apiVersion: v1alpha1\nkind: HostnameConfig\nhostname: stand-in\n";
    let schematic = schematic(&format!(
        "customization:\n  embeddedMachineConfiguration: |\n    {}\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/stand-in-firmware\n      - siderolabs/intel-ucode\n",
        config.trim_end().replace('\n', "\n    ")
    ));
    assert_eq!(schematic.customization.embedded_machine_configuration, config);
    let layer = SchematicLayer::new(&schematic, FACTORY_URL);
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: vec![firmware.clone(), intel.clone()],
        schematic: Some(layer.clone()),
    };
    let base = rel.base(version);
    let (out, summary) = build_to_vec(&base, &request, work.path()).unwrap();

    // Segment 1: the raw early-microcode archive, found by its trailer.
    let (raw, rest) = split_raw_cpio(&out);
    assert_eq!(summary.microcode, Some(0..raw.len() as u64));
    assert_eq!(
        cpio_list(raw),
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/GenuineIntel.bin"
        ]
    );
    let ucode_dir = work.path().join("ucode");
    cpio_extract(raw, &ucode_dir);
    let fw = intel.dir.join("rootfs/usr/lib/firmware/intel-ucode");
    let expected: Vec<u8> = [read(fw.join("06-55-04")), read(fw.join("06-8f-08"))].concat();
    assert_eq!(
        read(ucode_dir.join("kernel/x86/microcode/GenuineIntel.bin")),
        expected
    );

    // Segment 2: the release initramfs, untouched.
    assert!(rest.starts_with(&base));
    assert_eq!(summary.base, raw.len() as u64..(raw.len() + base.len()) as u64);

    // Segment 3: one zstd stream of a newc archive.
    let appended = &rest[base.len()..];
    assert_eq!(
        summary.appended.end - summary.appended.start,
        appended.len() as u64
    );
    assert_eq!(&appended[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    run(Command::new("zstd").args(["-t", "-q"]), appended);
    let archive = run(Command::new("zstd").args(["-d", "-c", "-q"]), appended);
    assert_eq!(
        cpio_list(&archive),
        [
            "0.sqsh",
            "1.sqsh",
            "2.sqsh",
            "3.sqsh",
            "extensions.yaml",
            "usr",
            "usr/lib",
            "usr/lib/firmware",
            "usr/lib/firmware/intel-ucode",
            "usr/lib/firmware/stand-in",
            "usr/lib/firmware/stand-in/LICENSE.stand-in",
            "usr/lib/firmware/stand-in/stand-in-fw.bin",
        ]
    );
    // Owners 0:0, the fixed timestamp (2019-06-01), modes as the imager stages them.
    let verbose = lines(&run(
        Command::new("cpio").args(["-t", "-v", "--quiet", "--numeric-uid-gid"]),
        &archive,
    ));
    for line in &verbose {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((fields[2], fields[3]), ("0", "0"), "{line}");
        assert!(line.contains("Jun  1  2019"), "{line}");
    }
    assert!(verbose[0].starts_with("-rw-r--r--"), "{}", verbose[0]);
    assert!(verbose[5].starts_with("drwxr-xr-x"), "{}", verbose[5]);
    let unpacked = work.path().join("appended");
    cpio_extract(&archive, &unpacked);
    assert_eq!(
        read(unpacked.join("usr/lib/firmware/stand-in/stand-in-fw.bin")),
        read(
            firmware
                .dir
                .join("rootfs/usr/lib/firmware/stand-in/stand-in-fw.bin")
        )
    );
    assert_eq!(summary.firmware_files, 2);

    // The layers: firmware and microcode moved out, the virtual extensions in.
    assert_eq!(unsquashfs_list(&unpacked.join("0.sqsh")), ["", "usr", "usr/lib"]);
    assert_eq!(unsquashfs_list(&unpacked.join("1.sqsh")), ["", "usr", "usr/lib"]);
    let schematic_files = unsquashfs_list(&unpacked.join("2.sqsh"));
    assert_eq!(
        schematic_files.last().unwrap(),
        &format!("usr/local/share/schematic/{}", layer.id)
    );
    assert_eq!(
        unsquashfs_list(&unpacked.join("3.sqsh")),
        [
            "",
            "usr",
            "usr/local",
            "usr/local/etc",
            "usr/local/etc/talos",
            "usr/local/etc/talos/config.yaml"
        ]
    );
    for image in ["0.sqsh", "1.sqsh", "2.sqsh", "3.sqsh"] {
        let stat = unsquashfs_stat(&unpacked.join(image));
        assert!(stat.contains("Compression zstd"), "{image}: {stat}");
        assert!(stat.contains("Block size 131072"), "{image}: {stat}");
    }
    let config_stat = unsquashfs_stat(&unpacked.join("3.sqsh"));
    assert!(config_stat.contains("Xattrs are compressed"), "{config_stat}");
    let config_dir = work.path().join("config");
    run(
        Command::new("unsquashfs")
            .args(["-no-xattrs", "-q", "-d"])
            .arg(&config_dir)
            .arg(unpacked.join("3.sqsh")),
        b"",
    );
    assert_eq!(
        read(config_dir.join("usr/local/etc/talos/config.yaml")),
        config.as_bytes()
    );
    let listing = String::from_utf8(run(
        Command::new("unsquashfs")
            .arg("-lln")
            .arg(unpacked.join("3.sqsh")),
        b"",
    ))
    .unwrap();
    assert!(
        listing.contains("---------- 0/0"),
        "1.12 writes the config with mode 0: {listing}"
    );

    // extensions.yaml: in the archive as reported, layers in directory order.
    let yaml = String::from_utf8(read(unpacked.join("extensions.yaml"))).unwrap();
    assert_eq!(yaml, summary.extensions_yaml);
    let images: Vec<&str> = summary.layers.iter().map(|l| l.image.as_str()).collect();
    assert_eq!(images, ["0.sqsh", "1.sqsh", "2.sqsh", "3.sqsh"]);
    let names: Vec<&str> = summary.layers.iter().map(|l| l.metadata.name.as_str()).collect();
    assert_eq!(
        names,
        ["stand-in-firmware", "intel-ucode", "schematic", "embedded-config"]
    );
    assert!(
        yaml.starts_with("layers:\n    - image: 0.sqsh\n      metadata:\n        name: stand-in-firmware\n")
    );
    assert!(yaml.contains(&format!(
        "        name: schematic\n        version: {}\n        author: Image Factory ({FACTORY_URL})\n",
        layer.id
    )));
    assert!(
        yaml.contains("        extraInfo: |\n            customization:\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains("        name: embedded-config\n        version: "),
        "{yaml}"
    );

    // Deterministic, whatever the number of compression threads.
    for threads in [1, 3] {
        let (again, _) = build_with_threads(&base, &request, work.path(), threads).unwrap();
        assert!(again == out, "a build with {threads} threads differs");
    }
}

#[test]
fn xz_era_with_firmware_and_amd_microcode() {
    let version = "v1.7.6";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let firmware = rel.extension(version, "siderolabs/stand-in-firmware", &work.path().join("fw"));
    let amd = rel.extension(version, "siderolabs/amd-ucode", &work.path().join("amd"));
    let schematic = schematic(
        "customization:\n  systemExtensions:\n    officialExtensions:\n      - siderolabs/stand-in-firmware\n      - siderolabs/amd-ucode\n",
    );
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: vec![firmware, amd.clone()],
        schematic: Some(SchematicLayer::new(&schematic, FACTORY_URL)),
    };
    let base = rel.base(version);
    let (out, summary) = build_to_vec(&base, &request, work.path()).unwrap();

    let (raw, rest) = split_raw_cpio(&out);
    assert_eq!(
        cpio_list(raw),
        [
            "kernel",
            "kernel/x86",
            "kernel/x86/microcode",
            "kernel/x86/microcode/AuthenticAMD.bin"
        ]
    );
    let ucode_dir = work.path().join("ucode");
    cpio_extract(raw, &ucode_dir);
    let fw = amd.dir.join("rootfs/lib/firmware/amd-ucode");
    let expected: Vec<u8> = [
        read(fw.join("microcode_amd_fam17h.bin")),
        read(fw.join("microcode_amd_fam19h.bin")),
    ]
    .concat();
    assert_eq!(
        read(ucode_dir.join("kernel/x86/microcode/AuthenticAMD.bin")),
        expected
    );

    assert!(rest.starts_with(&base));
    assert_eq!(
        &base[..6],
        &[0xfd, b'7', b'z', b'X', b'Z', 0],
        "the < 1.8 base is xz"
    );
    let appended = &rest[base.len()..];
    assert_eq!(&appended[..6], &[0xfd, b'7', b'z', b'X', b'Z', 0]);
    run(Command::new("xz").args(["-t", "-q"]), appended);
    // `xz --list` needs a seekable file.
    let file = work.path().join("appended.xz");
    std::fs::write(&file, appended).unwrap();
    let info = String::from_utf8(run(
        Command::new("xz").args(["--robot", "--list"]).arg(&file),
        b"",
    ))
    .unwrap();
    assert!(
        info.lines()
            .any(|l| l.starts_with("file\t") && l.split('\t').nth(6) == Some("CRC32")),
        "{info}"
    );
    let archive = run(Command::new("xz").args(["-d", "-c", "-q"]), appended);
    assert_eq!(
        cpio_list(&archive),
        [
            "0.sqsh",
            "1.sqsh",
            "2.sqsh",
            "extensions.yaml",
            "lib",
            "lib/firmware",
            "lib/firmware/amd-ucode",
            "lib/firmware/stand-in",
            "lib/firmware/stand-in/LICENSE.stand-in",
            "lib/firmware/stand-in/stand-in-fw.bin",
        ]
    );
    let unpacked = work.path().join("appended");
    cpio_extract(&archive, &unpacked);
    for image in ["0.sqsh", "1.sqsh", "2.sqsh"] {
        let stat = unsquashfs_stat(&unpacked.join(image));
        assert!(stat.contains("Compression xz"), "{image}: {stat}");
    }
    assert_eq!(unsquashfs_list(&unpacked.join("0.sqsh")), ["", "lib"]);
    assert!(unsquashfs_list(&unpacked.join("2.sqsh"))
        .iter()
        .any(|p| p.starts_with("usr/local/share/schematic/")));
    // 1.7: the schematic YAML is in extraInfo.
    assert!(
        summary.extensions_yaml.contains("extraInfo: |"),
        "{}",
        summary.extensions_yaml
    );

    // Deterministic, whatever the number of compression threads.
    for threads in [1, 3] {
        let (again, _) = build_with_threads(&base, &request, work.path(), threads).unwrap();
        assert!(again == out, "a build with {threads} threads differs");
    }
}

#[test]
fn before_1_7_the_schematic_yaml_is_not_embedded() {
    let version = "v1.6.4";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: Vec::new(),
        schematic: Some(SchematicLayer::new(
            &schematic("customization: {}\n"),
            FACTORY_URL,
        )),
    };
    let (out, summary) = build_to_vec(&rel.base(version), &request, work.path()).unwrap();
    assert_eq!(summary.microcode, None);
    assert!(out.starts_with(&rel.base(version)));
    assert!(!summary.extensions_yaml.contains("extraInfo"));
    assert_eq!(summary.layers.len(), 1);
}

#[test]
fn an_incompatible_extension_is_a_user_error() {
    // legacy-only supports Talos < 1.10 and is still listed for 1.11.
    let version = "v1.11.3";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let legacy = rel.extension(version, "siderolabs/legacy-only", &work.path().join("legacy"));
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: vec![legacy],
        schematic: None,
    };
    let err = build_to_vec(&rel.base(version), &request, work.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::User, "{err:?}");
    assert!(matches!(&err, Error::Incompatible { name, .. } if name == "legacy-only"));
    assert_eq!(
        err.to_string(),
        "error validating extension \"legacy-only\" (version 0.9.0): version constraint < v1.10.0 \
         can't be satisfied with Talos version 1.11.3"
    );
    // Nothing is left behind in the scratch directory.
    let left: Vec<PathBuf> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("initramfs-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn embedded_config_before_1_12_is_a_user_error() {
    let version = "v1.11.3";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: Vec::new(),
        schematic: Some(SchematicLayer::new(
            &schematic("customization:\n  embeddedMachineConfiguration: 'x: y'\n"),
            FACTORY_URL,
        )),
    };
    let err = build_to_vec(&rel.base(version), &request, work.path()).unwrap_err();
    assert!(err.is_user_error());
    assert_eq!(
        err.to_string(),
        "embedding configuration is not supported for Talos version v1.11.3"
    );
}

#[test]
fn a_malformed_extension_is_a_user_error() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("bad");
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    std::fs::write(
        dir.join("manifest.yaml"),
        "version: v1alpha1\nmetadata:\n  name: bad\n",
    )
    .unwrap();
    std::fs::write(dir.join("README"), "stray").unwrap();
    let request = Request {
        version: TalosVersion::parse("v1.12.1").unwrap(),
        extensions: vec![ExtensionSource::new(&dir).with_label("example/bad:1")],
        schematic: None,
    };
    let err = build_to_vec(b"unused", &request, work.path()).unwrap_err();
    assert!(err.is_user_error());
    assert_eq!(
        err.to_string(),
        "error loading extension example/bad:1: unexpected file \"README\""
    );
}

fn have_depmod() -> bool {
    Command::new("depmod").arg("--version").output().is_ok()
}

#[test]
fn kernel_modules_get_a_modules_dep_layer() {
    if !have_depmod() {
        eprintln!("skipped: kmod's depmod is not installed");
        return;
    }
    let version = "v1.12.1";
    let rel = release();
    let work = tempfile::tempdir().unwrap();
    let module = rel.extension(version, "siderolabs/stand-in-module", &work.path().join("module"));
    let tools = rel.extension(version, "siderolabs/stand-in-tools", &work.path().join("tools"));
    let request = Request {
        version: TalosVersion::parse(version).unwrap(),
        extensions: vec![module, tools],
        schematic: None,
    };
    let base = rel.base(version);
    let (out, summary) = build_to_vec(&base, &request, work.path()).unwrap();
    let kver = summary.kernel_release.clone().unwrap();
    let images: Vec<&str> = summary.layers.iter().map(|l| l.image.as_str()).collect();
    assert_eq!(images, ["0.sqsh", "1.sqsh", "modules.dep.sqsh"]);
    let last = summary.layers.last().unwrap();
    assert_eq!(last.metadata.name, "modules.dep");
    assert_eq!(last.metadata.version, kver);
    assert_eq!(last.metadata.author, "Talos Machinery");
    assert!(summary
        .extensions_yaml
        .contains("        compatibility:\n            talos:\n                version: \"\"\n"));

    assert_eq!(summary.microcode, None);
    let appended = &out[base.len()..];
    let archive = run(Command::new("zstd").args(["-d", "-c", "-q"]), appended);
    assert_eq!(
        cpio_list(&archive),
        ["0.sqsh", "1.sqsh", "extensions.yaml", "modules.dep.sqsh"]
    );
    let unpacked = work.path().join("appended");
    cpio_extract(&archive, &unpacked);
    let files = unsquashfs_list(&unpacked.join("modules.dep.sqsh"));
    let dir = format!("usr/lib/modules/{kver}");
    for name in [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias",
        "modules.order",
        "modules.builtin",
    ] {
        assert!(
            files.contains(&format!("{dir}/{name}")),
            "{name} missing: {files:?}"
        );
    }
    let deps = work.path().join("deps");
    run(
        Command::new("unsquashfs")
            .args(["-q", "-d"])
            .arg(&deps)
            .arg(unpacked.join("modules.dep.sqsh")),
        b"",
    );
    let modules_dep = String::from_utf8(read(deps.join(&dir).join("modules.dep"))).unwrap();
    assert_eq!(modules_dep, "extras/stand-in.ko:\n");
    assert!(unsquashfs_list(&unpacked.join("0.sqsh")).contains(&format!("{dir}/extras/stand-in.ko")));

    // Without depmod: a clear, non-user error.
    let mut opts = options(work.path());
    opts.depmod = PathBuf::from("/nonexistent/depmod");
    let err = build(&Base::Bytes(base.into()), &request, &opts, &mut Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal);
    assert!(err.to_string().contains("depmod is required"), "{err}");
}
