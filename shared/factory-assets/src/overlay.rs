//! Board overlays of installers (talos-imager §11.2 step 4, §12): the overlay image named by the
//! schematic, found in the version's overlays catalog on the request side and carried in the
//! build spec as the input `overlay/<repository>` → `sha256:…` (so the cache key covers the exact
//! image), pulled here by that digest (signature verified) and turned into
//!
//! * the overlay's **kernel args**: its installer executable is run with `get-options` and the
//!   schematic's overlay options on stdin (talos-imager §12.2); the `kernelArgs` it prints become
//!   the profile's `overlay_kernel_args`, which the UKI command line applies after the platform's
//!   (`crate::cmdline`);
//! * the installer's **third layer** (built by `installer`): `overlay/artifacts/**` (the image's
//!   `artifacts/` tree for the target arch), `overlay/installers/default` (the target arch's
//!   `installers/<name>`, renamed: the installer detects an overlay by its presence) and
//!   `overlay/extra-options` (the options YAML the installer passes on at install time).
//!
//! # Which installer runs
//!
//! `get-options` runs on the builder, so it is the executable of the builder's own architecture
//! (`installers/<name>` of the image's `linux/<host arch>` variant), whatever the target: overlay
//! images ship one static executable per platform, and the amd64 builders cannot run arm64 ones.
//! The layer carries the target arch's executable, which the installer runs on the node.
//!
//! The executable is third-party code (an official, signature-verified image, as in the Go
//! factory), so it runs with an empty environment apart from `PATH` (the builder's environment
//! may hold credentials), in a scratch directory, with a timeout ([`GET_OPTIONS_TIMEOUT`]) and
//! bounded output ([`OUTPUT_LIMIT`]). A failure, a timeout or output that is not the expected YAML
//! is a user error carrying its stderr: the overlay's fault, which no retry fixes.
//!
//! # `overlay/extra-options`
//!
//! The schematic's `overlay.options` as the profile carries them (the go-yaml YAML the request
//! side emitted, which is also what `get-options` receives on stdin), or `{}` when the schematic
//! has none — the same bytes the Go imager writes for an empty options map, so that the
//! installer always finds a YAML map there.
//!
//! The overlay's `profiles/<name>.yaml` is not read: what merging it into the profile changes
//! (disk image options, the bootloader of disk images) does not reach an installer's bytes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_upstream::Upstream;
use yaml_rust2::{Yaml, YamlLoader};

use crate::installer::{EntryData, LayerEntry};
use crate::spec::{spec_error, Spec};
use crate::upstream_error;

/// Prefix of the overlay input's name: `overlay/<repository>`.
pub const OVERLAY_INPUT_PREFIX: &str = "overlay/";

/// How long `get-options` may run: the real ones answer at once; a hung one must not hold a
/// builder.
pub const GET_OPTIONS_TIMEOUT: Duration = Duration::from_secs(60);

/// The most stdout or stderr kept from the overlay installer (the answer is a few lines).
pub const OUTPUT_LIMIT: usize = 1 << 20;

/// `PATH` of the overlay installer (shell-script overlays need the usual tools).
const INSTALLER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The modes of the layer's files.
const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;

/// The overlay image's directories and files (talos-imager §12.1).
const ARTIFACTS: &str = "artifacts";
const INSTALLERS: &str = "installers";

/// The paths of the third layer.
pub const LAYER_ARTIFACTS: &str = "overlay/artifacts";
pub const LAYER_INSTALLER: &str = "overlay/installers/default";
pub const LAYER_EXTRA_OPTIONS: &str = "overlay/extra-options";

/// The input name of an overlay image (see the module documentation).
pub fn overlay_input(repository: &str) -> String {
    format!("{OVERLAY_INPUT_PREFIX}{repository}")
}

/// The overlay image a spec names: repository and exact digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OverlayInput {
    pub repository: String,
    pub digest: String,
}

/// The one overlay input of a spec whose profile has an overlay.
pub(crate) fn overlay_input_of(inputs: &BTreeMap<String, String>) -> Result<OverlayInput, AssembleError> {
    let mut found = inputs.iter().filter_map(|(name, digest)| {
        Some(OverlayInput {
            repository: name.strip_prefix(OVERLAY_INPUT_PREFIX)?.to_owned(),
            digest: digest.clone(),
        })
    });
    let first = found
        .next()
        .ok_or_else(|| spec_error("the profile has an overlay but no overlay input"))?;
    if first.repository.is_empty() {
        return Err(spec_error("an overlay input without a repository"));
    }
    if found.next().is_some() {
        return Err(spec_error("more than one overlay input"));
    }
    Ok(first)
}

/// What `get-options` answers (talos-imager §12.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OverlayOptions {
    pub name: String,
    pub kernel_args: Vec<String>,
    /// `partitionOptions.offset` in sectors (disk images only; read for completeness).
    pub partition_offset: Option<u64>,
}

/// Why the output of `get-options` is not an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OptionsError {
    #[error("output is not YAML: {0}")]
    Yaml(String),
    #[error("output is not a YAML map")]
    NotAMap,
    #[error("`{0}` is not {1}")]
    Field(&'static str, &'static str),
}

/// Parses the stdout of `get-options`: a map with `name` (string), `kernelArgs` (list of
/// strings) and `partitionOptions.offset` (integer), each optional; other keys are ignored, as a
/// newer overlay may add some.
pub(crate) fn parse_options(stdout: &str) -> Result<OverlayOptions, OptionsError> {
    let docs = YamlLoader::load_from_str(stdout).map_err(|e| OptionsError::Yaml(e.to_string()))?;
    let doc = match docs.first() {
        Some(doc @ Yaml::Hash(_)) => doc,
        // An empty answer means no options.
        None | Some(Yaml::Null) => return Ok(OverlayOptions::default()),
        Some(_) => return Err(OptionsError::NotAMap),
    };
    let name = match &doc["name"] {
        Yaml::String(s) => s.clone(),
        Yaml::BadValue | Yaml::Null => String::new(),
        _ => return Err(OptionsError::Field("name", "a string")),
    };
    let kernel_args = match &doc["kernelArgs"] {
        Yaml::Array(items) => items
            .iter()
            .map(|item| match item {
                Yaml::String(s) => Ok(s.clone()),
                // A go-yaml string that looks like a number is still a string to Go.
                Yaml::Integer(i) => Ok(i.to_string()),
                Yaml::Real(r) => Ok(r.clone()),
                _ => Err(OptionsError::Field("kernelArgs", "a list of strings")),
            })
            .collect::<Result<_, _>>()?,
        Yaml::BadValue | Yaml::Null => Vec::new(),
        _ => return Err(OptionsError::Field("kernelArgs", "a list of strings")),
    };
    let partition_offset = match &doc["partitionOptions"] {
        Yaml::Hash(_) => match &doc["partitionOptions"]["offset"] {
            Yaml::Integer(i) => Some(
                u64::try_from(*i)
                    .map_err(|_| OptionsError::Field("partitionOptions.offset", "a sector count"))?,
            ),
            Yaml::BadValue | Yaml::Null => None,
            _ => return Err(OptionsError::Field("partitionOptions.offset", "a sector count")),
        },
        Yaml::BadValue | Yaml::Null => None,
        _ => return Err(OptionsError::Field("partitionOptions", "a map")),
    };
    Ok(OverlayOptions {
        name,
        kernel_args,
        partition_offset,
    })
}

/// The overlay options YAML of the spec's profile: as the schematic has them, `{}` when none
/// (see the module documentation).
pub(crate) fn extra_options(options_yaml: &str) -> Vec<u8> {
    if options_yaml.trim().is_empty() {
        b"{}\n".to_vec()
    } else {
        options_yaml.as_bytes().to_vec()
    }
}

/// The builder's architecture, whose overlay executable `get-options` runs.
pub(crate) fn host_arch() -> Result<Arch, AssembleError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(Arch::Amd64),
        "aarch64" => Ok(Arch::Arm64),
        // Another builder may be able to; this one never will.
        other => Err(AssembleError::Retryable(format!(
            "this builder runs on {other}, for which overlay installers are not published"
        ))),
    }
}

/// An overlay pulled for one installer image.
#[derive(Debug)]
pub(crate) struct PreparedOverlay {
    /// The target arch's `artifacts/` directory (may be absent from the image: then empty).
    pub artifacts: PathBuf,
    /// The target arch's `installers/<name>`.
    pub installer: PathBuf,
    /// The bytes of `overlay/extra-options`.
    pub extra_options: Vec<u8>,
    /// What the host arch's installer answered to `get-options`.
    pub options: OverlayOptions,
}

/// Pulls the spec's overlay image by digest (signature verified), extracts the target arch's
/// `artifacts/**` and `installers/<name>` under `dir`, and runs `get-options` with the host
/// arch's installer.
pub(crate) async fn prepare(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    dir: &Path,
) -> Result<PreparedOverlay, AssembleError> {
    let overlay = spec
        .profile
        .inputs
        .overlay
        .as_ref()
        .ok_or_else(|| spec_error("the profile has no overlay"))?;
    let input = overlay_input_of(&spec.inputs)?;
    let name = overlay.name.as_str();
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(spec_error(format!("overlay name {name:?}")));
    }
    let image = upstream
        .resolve(&input.repository, &input.digest)
        .await
        .map_err(upstream_error)?;
    let installer_path = format!("{INSTALLERS}/{name}");

    let target_dir = dir.join(format!("overlay-{arch}"));
    create_dir(&target_dir)?;
    let wanted = |path: &str| {
        let path = path.trim_start_matches('/').trim_end_matches('/');
        path == ARTIFACTS || path.starts_with("artifacts/") || path == INSTALLERS || path == installer_path
    };
    upstream
        .extract(&image, arch, &target_dir, &wanted)
        .await
        .map_err(upstream_error)?;
    let installer = regular_file(
        &target_dir.join(&installer_path),
        &image.name(),
        &installer_path,
        arch,
    )?;
    let artifacts = target_dir.join(ARTIFACTS);

    let host = host_arch()?;
    let host_installer = if host == arch {
        installer.clone()
    } else {
        let host_dir = dir.join(format!("overlay-{host}"));
        create_dir(&host_dir)?;
        let only_installer = |path: &str| {
            let path = path.trim_start_matches('/').trim_end_matches('/');
            path == INSTALLERS || path == installer_path
        };
        upstream
            .extract(&image, host, &host_dir, &only_installer)
            .await
            .map_err(upstream_error)?;
        regular_file(
            &host_dir.join(&installer_path),
            &image.name(),
            &installer_path,
            host,
        )?
    };

    let extra_options = extra_options(&overlay.options_yaml);
    let stdin = extra_options.clone();
    let work_dir = dir.to_path_buf();
    let label = format!("{}: {installer_path} get-options", image.name());
    let options = crate::installer::run_blocking(move || {
        let stdout = run_get_options(&host_installer, &stdin, &work_dir, GET_OPTIONS_TIMEOUT, &label)?;
        let text = String::from_utf8(stdout)
            .map_err(|_| AssembleError::User(format!("{label}: the output is not UTF-8")))?;
        parse_options(&text).map_err(|e| AssembleError::User(format!("{label}: {e}: {text:?}")))
    })
    .await?;
    tracing::info!(
        overlay = %image.name(),
        name = %options.name,
        kernel_args = ?options.kernel_args,
        "overlay get-options"
    );
    Ok(PreparedOverlay {
        artifacts,
        installer,
        extra_options,
        options,
    })
}

/// The entries of the overlay layer (see the module documentation): the artifacts tree as
/// extracted (directories 0755, files 0644 or 0755 when executable, symlinks kept), the installer
/// (0755) and the extra options, with every parent directory.
pub(crate) fn layer_entries(overlay: &PreparedOverlay) -> Result<Vec<LayerEntry>, AssembleError> {
    let mut entries = vec![
        LayerEntry::dir("overlay/"),
        LayerEntry::dir(&format!("{LAYER_ARTIFACTS}/")),
        LayerEntry::dir("overlay/installers/"),
        LayerEntry {
            path: LAYER_INSTALLER.to_owned(),
            data: EntryData::File {
                source: overlay.installer.clone(),
                mode: EXEC_MODE,
            },
        },
        LayerEntry {
            path: LAYER_EXTRA_OPTIONS.to_owned(),
            data: EntryData::Bytes(overlay.extra_options.clone()),
        },
    ];
    match std::fs::symlink_metadata(&overlay.artifacts) {
        Ok(meta) if meta.is_dir() => tree_entries(&overlay.artifacts, LAYER_ARTIFACTS, &mut entries)?,
        // An overlay with nothing but an installer.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(_) => {
            return Err(AssembleError::User(format!(
                "the overlay's {ARTIFACTS} is not a directory"
            )))
        }
        Err(e) => {
            return Err(AssembleError::Retryable(format!(
                "reading {}: {e}",
                overlay.artifacts.display()
            )))
        }
    }
    Ok(entries)
}

/// Adds the entries of the tree under `dir` (excluded), named `<prefix>/<relative path>`.
fn tree_entries(dir: &Path, prefix: &str, entries: &mut Vec<LayerEntry>) -> Result<(), AssembleError> {
    let read_error = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| AssembleError::Retryable(format!("reading {}: {e}", path.display()))
    };
    for child in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let child = child.map_err(read_error(dir))?;
        let path = child.path();
        let name = child.file_name();
        let name = name.to_str().ok_or_else(|| {
            AssembleError::User(format!("the overlay has a file name that is not UTF-8: {name:?}"))
        })?;
        let member = format!("{prefix}/{name}");
        let meta = std::fs::symlink_metadata(&path).map_err(read_error(&path))?;
        let kind = meta.file_type();
        if kind.is_dir() {
            entries.push(LayerEntry::dir(&format!("{member}/")));
            tree_entries(&path, &member, entries)?;
        } else if kind.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            entries.push(LayerEntry {
                path: member,
                data: EntryData::File {
                    source: path,
                    mode: if executable { EXEC_MODE } else { FILE_MODE },
                },
            });
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&path).map_err(read_error(&path))?;
            let target = target
                .to_str()
                .ok_or_else(|| AssembleError::User(format!("{member}: a link target that is not UTF-8")))?;
            entries.push(LayerEntry {
                path: member,
                data: EntryData::Symlink(target.to_owned()),
            });
        } else {
            return Err(AssembleError::User(format!(
                "{member} is neither a file, a directory nor a symlink"
            )));
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), AssembleError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| AssembleError::Retryable(format!("creating {}: {e}", dir.display())))
}

/// `path` if it is a regular file; a user error naming the image otherwise.
fn regular_file(path: &Path, image: &str, relative: &str, arch: Arch) -> Result<PathBuf, AssembleError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(path.to_path_buf()),
        Ok(_) => Err(AssembleError::User(format!(
            "{image} has no regular file {relative} for {arch}"
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(AssembleError::User(format!(
            "{image} has no {relative} for {arch}: the overlay does not support this board or architecture"
        ))),
        Err(e) => Err(AssembleError::Retryable(format!(
            "reading {}: {e}",
            path.display()
        ))),
    }
}

/// Runs `installer get-options` (blocking) with `stdin`, in `work_dir`, an empty environment but
/// `PATH`, for at most `timeout`; its stdout. A failure to start, a non-zero exit or the timeout
/// is a user error with its stderr (`label` names it).
pub(crate) fn run_get_options(
    installer: &Path,
    stdin: &[u8],
    work_dir: &Path,
    timeout: Duration,
    label: &str,
) -> Result<Vec<u8>, AssembleError> {
    let mut child = Command::new(installer)
        .arg("get-options")
        .env_clear()
        .env("PATH", INSTALLER_PATH)
        .current_dir(work_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| AssembleError::User(format!("{label}: cannot run it: {e}")))?;
    // Each stream on its own thread: a child that fills one pipe while we wait on another would
    // never finish.
    let input = child.stdin.take().map(|mut pipe| {
        let bytes = stdin.to_vec();
        std::thread::spawn(move || {
            // The installer need not read its input (a broken pipe is not an error).
            let _ = pipe.write_all(&bytes);
        })
    });
    let stdout = child.stdout.take().map(read_bounded);
    let stderr = child.stderr.take().map(read_bounded);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(AssembleError::Retryable(format!("{label}: waiting for it: {e}"))),
        }
    };
    let Some(status) = status else {
        // Reaped here; the reader threads end when the pipes close (they are not waited for: a
        // process the installer started may still hold them).
        let _ = child.kill();
        let _ = child.wait();
        return Err(AssembleError::User(format!(
            "{label}: no answer within {} s",
            timeout.as_secs()
        )));
    };
    if let Some(input) = input {
        let _ = input.join();
    }
    let join = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.and_then(|r| r.join().ok()).unwrap_or_default()
    };
    let stdout = join(stdout);
    let stderr = join(stderr);
    if !status.success() {
        return Err(AssembleError::User(format!(
            "{label}: {status}: {}",
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(stdout)
}

/// Reads a pipe to its end on a thread, keeping the first [`OUTPUT_LIMIT`] bytes (the rest is
/// drained so the writer never blocks).
fn read_bounded(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(OUTPUT_LIMIT as u64).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        kept
    })
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn get_options_answers_parse() {
        let answer = "name: rpi_generic\nkernelArgs:\n    - console=tty0\n    - sysctl.kernel.kexec_load_disabled=1\npartitionOptions:\n    offset: 20480\nextra: 1\n";
        assert_eq!(
            parse_options(answer).unwrap(),
            OverlayOptions {
                name: "rpi_generic".into(),
                kernel_args: vec![
                    "console=tty0".into(),
                    "sysctl.kernel.kexec_load_disabled=1".into()
                ],
                partition_offset: Some(20480),
            }
        );
        assert_eq!(parse_options("").unwrap(), OverlayOptions::default());
        assert_eq!(
            parse_options("name: x\n").unwrap().kernel_args,
            Vec::<String>::new()
        );
        assert_eq!(
            parse_options("kernelArgs: [a=1, 42]\n").unwrap().kernel_args,
            ["a=1", "42"]
        );
        assert_eq!(parse_options("- a\n"), Err(OptionsError::NotAMap));
        assert_eq!(
            parse_options("kernelArgs: console=tty0\n"),
            Err(OptionsError::Field("kernelArgs", "a list of strings"))
        );
        assert_eq!(
            parse_options("kernelArgs: [{a: 1}]\n"),
            Err(OptionsError::Field("kernelArgs", "a list of strings"))
        );
        assert_eq!(
            parse_options("partitionOptions: {offset: -1}\n"),
            Err(OptionsError::Field("partitionOptions.offset", "a sector count"))
        );
        assert!(matches!(parse_options("a: [\n"), Err(OptionsError::Yaml(_))));
        assert!(matches!(
            parse_options("Segmentation fault\n"),
            Err(OptionsError::NotAMap)
        ));
    }

    #[test]
    fn layer_members() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let artifacts = root.join("artifacts");
        std::fs::create_dir_all(artifacts.join("arm64/firmware/boot")).unwrap();
        std::fs::create_dir_all(artifacts.join("arm64/u-boot/b")).unwrap();
        std::fs::write(artifacts.join("arm64/firmware/boot/config.txt"), "x=1\n").unwrap();
        let tool = artifacts.join("arm64/u-boot/b/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("../firmware", artifacts.join("arm64/u-boot/fw")).unwrap();
        let installer = root.join("board");
        std::fs::write(&installer, "#!/bin/sh\n").unwrap();
        let overlay = PreparedOverlay {
            artifacts,
            installer: installer.clone(),
            extra_options: b"{}\n".to_vec(),
            options: OverlayOptions::default(),
        };
        let mut entries = layer_entries(&overlay).unwrap();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let listed: Vec<(&str, String)> = entries
            .iter()
            .map(|e| {
                let what = match &e.data {
                    EntryData::Dir => "dir".to_owned(),
                    EntryData::File { mode, .. } => format!("{mode:o}"),
                    EntryData::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
                    EntryData::Symlink(t) => format!("-> {t}"),
                };
                (e.path.as_str(), what)
            })
            .collect();
        let expected: Vec<(&str, String)> = [
            ("overlay/", "dir"),
            ("overlay/artifacts/", "dir"),
            ("overlay/artifacts/arm64/", "dir"),
            ("overlay/artifacts/arm64/firmware/", "dir"),
            ("overlay/artifacts/arm64/firmware/boot/", "dir"),
            ("overlay/artifacts/arm64/firmware/boot/config.txt", "644"),
            ("overlay/artifacts/arm64/u-boot/", "dir"),
            ("overlay/artifacts/arm64/u-boot/b/", "dir"),
            ("overlay/artifacts/arm64/u-boot/b/tool", "755"),
            ("overlay/artifacts/arm64/u-boot/fw", "-> ../firmware"),
            ("overlay/extra-options", "{}\n"),
            ("overlay/installers/", "dir"),
            ("overlay/installers/default", "755"),
        ]
        .into_iter()
        .map(|(p, w)| (p, w.to_owned()))
        .collect();
        assert_eq!(listed, expected);
        assert!(matches!(
            &entries[12].data,
            EntryData::File { source, .. } if *source == installer
        ));
    }

    #[test]
    fn overlay_inputs() {
        let mut inputs = BTreeMap::from([("imager".to_owned(), "sha256:i".to_owned())]);
        assert!(overlay_input_of(&inputs).is_err());
        inputs.insert(overlay_input("siderolabs/sbc-x"), "sha256:o".into());
        assert_eq!(
            overlay_input_of(&inputs).unwrap(),
            OverlayInput {
                repository: "siderolabs/sbc-x".into(),
                digest: "sha256:o".into()
            }
        );
        inputs.insert(overlay_input("siderolabs/sbc-y"), "sha256:p".into());
        assert!(overlay_input_of(&inputs).is_err());
    }

    #[test]
    fn extra_options_default_to_an_empty_map() {
        assert_eq!(extra_options(""), b"{}\n");
        assert_eq!(extra_options("a: b\n"), b"a: b\n");
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn get_options_runs_with_stdin_and_a_clean_environment() {
        let dir = tempfile::tempdir().unwrap();
        let installer = script(
            dir.path(),
            "answering",
            r#"[ "$1" = get-options ] || exit 3
[ -z "${HOME:-}" ] || exit 4
printf 'name: t\nkernelArgs:\n  - got=%s\n' "$(cat | tr -d '\n ')""#,
        );
        let out = run_get_options(&installer, b"a: b\n", dir.path(), Duration::from_secs(10), "t").unwrap();
        assert_eq!(
            parse_options(std::str::from_utf8(&out).unwrap())
                .unwrap()
                .kernel_args,
            ["got=a:b"]
        );
    }

    #[test]
    fn failing_or_hung_installers_are_user_errors() {
        let dir = tempfile::tempdir().unwrap();
        let failing = script(dir.path(), "failing", "echo 'board exploded' >&2; exit 2");
        let err = run_get_options(&failing, b"{}\n", dir.path(), Duration::from_secs(10), "t").unwrap_err();
        assert!(
            matches!(&err, AssembleError::User(m) if m.contains("board exploded")),
            "{err:?}"
        );
        let hung = script(dir.path(), "hung", "exec sleep 30");
        let started = Instant::now();
        let err = run_get_options(&hung, b"", dir.path(), Duration::from_millis(300), "t").unwrap_err();
        assert!(
            matches!(&err, AssembleError::User(m) if m.contains("no answer")),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let missing = dir.path().join("nope");
        assert!(matches!(
            run_get_options(&missing, b"", dir.path(), Duration::from_secs(1), "t"),
            Err(AssembleError::User(_))
        ));
    }
}
