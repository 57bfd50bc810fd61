//! The builder's container image (`infra/builder/Dockerfile`, `BuilderFunction` in `template.yaml`),
//! checked without Docker by reading the Dockerfile:
//! * every tool of [`factory_assets::BUILDER_TOOLS`] (each program and GRUB platform directory the
//!   builder calls) has its Debian package in the runtime stage's `apt-get install` list (or in the
//!   Debian base image, for Essential packages) and a row in the comment table at the top, and the
//!   table lists nothing else;
//! * the build stage builds the `builder` function (`cargo build --release -p builder`), whose binary
//!   becomes `/var/runtime/bootstrap`, the image's `ENTRYPOINT`, on the same Debian release as the
//!   runtime stage (the binary links against the build stage's glibc).
//!
//! The parser is checked on small samples too, so a Dockerfile missing a package fails these tests.

use std::path::PathBuf;

use factory_disk::tools::Tool;

/// Essential Debian packages, present in every Debian base image without being installed.
const ESSENTIAL: &[&str] = &["dash"];

fn dockerfile() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/builder/Dockerfile");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One `FROM` stage of a Dockerfile: its base image, name, and instructions (continuation lines
/// joined, comments dropped) as `(INSTRUCTION, arguments)`.
#[derive(Debug, Default)]
struct Stage {
    image: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

/// A parsed Dockerfile: its stages, and the rows of its leading comment table (comment lines
/// indented by three or more spaces: `#   <program or directory> <package> <what for>`).
#[derive(Debug, Default)]
struct Dockerfile {
    stages: Vec<Stage>,
    table: Vec<(String, String)>,
}

fn parse(text: &str) -> Dockerfile {
    let mut file = Dockerfile::default();
    let mut logical = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            // Comment lines are dropped, also inside a continued instruction.
            if logical.is_empty() && file.stages.is_empty() && comment.starts_with("   ") {
                let mut words = comment.split_whitespace();
                if let (Some(program), Some(package)) = (words.next(), words.next()) {
                    file.table.push((program.to_owned(), package.to_owned()));
                }
            }
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            logical.push_str(head);
            logical.push(' ');
            continue;
        }
        logical.push_str(trimmed);
        let instruction = std::mem::take(&mut logical);
        let instruction = instruction.trim();
        if instruction.is_empty() {
            continue;
        }
        let (keyword, args) = instruction
            .split_once(char::is_whitespace)
            .unwrap_or((instruction, ""));
        let keyword = keyword.to_ascii_uppercase();
        let args = args.trim().to_owned();
        if keyword == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let image = words
                .iter()
                .find(|w| !w.starts_with("--"))
                .copied()
                .unwrap_or_default();
            let name = words
                .iter()
                .position(|w| w.eq_ignore_ascii_case("as"))
                .and_then(|i| words.get(i + 1))
                .map(|n| n.to_string());
            file.stages.push(Stage {
                image: image.to_owned(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = file.stages.last_mut() {
            stage.instructions.push((keyword, args));
        }
    }
    file
}

impl Stage {
    fn runs(&self) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(|(k, _)| k == "RUN")
            .map(|(_, a)| a.as_str())
    }

    /// The shell commands of its `RUN`s, split at `&&`, `||` and `;`, as words.
    fn commands(&self) -> Vec<Vec<&str>> {
        self.runs()
            .flat_map(|run| {
                run.split("&&")
                    .flat_map(|c| c.split("||"))
                    .flat_map(|c| c.split(';'))
            })
            .map(|c| c.split_whitespace().collect::<Vec<_>>())
            .filter(|words| !words.is_empty())
            .collect()
    }

    /// The packages of its `apt-get install` commands (words after `install` that are not options).
    fn apt_packages(&self) -> Vec<String> {
        let mut packages = Vec::new();
        for words in self.commands() {
            // Skip `VAR=value` assignments before the command.
            let words: Vec<&str> = words.into_iter().skip_while(|w| w.contains('=')).collect();
            let is_apt = matches!(words.first(), Some(&"apt-get" | &"apt"));
            if let (true, Some(i)) = (is_apt, words.iter().position(|w| *w == "install")) {
                packages.extend(
                    words[i + 1..]
                        .iter()
                        .filter(|w| !w.starts_with('-'))
                        // `package=version` pins
                        .map(|w| w.split('=').next().unwrap_or(w).to_owned()),
                );
            }
        }
        packages
    }
}

/// The Debian release of an image reference (`rust:1-bookworm`, `debian:bookworm-slim`).
fn debian_release(image: &str) -> Option<&'static str> {
    ["bullseye", "bookworm", "trixie"]
        .into_iter()
        .find(|release| image.contains(release))
}

/// What is wrong with the Dockerfile's tool installation, for `tools`: each problem a sentence.
fn tool_problems(file: &Dockerfile, tools: &[Tool]) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(runtime) = file.stages.last() else {
        return vec!["no FROM stage".to_owned()];
    };
    let installed = runtime.apt_packages();
    if installed.is_empty() {
        problems.push("the runtime stage has no `apt-get install`".to_owned());
    }
    let debian = debian_release(&runtime.image).is_some();
    for tool in tools {
        let in_base = debian && ESSENTIAL.contains(&tool.package);
        if !in_base && !installed.iter().any(|p| p == tool.package) {
            problems.push(format!(
                "{} needs package {}, which the runtime stage does not apt-get install (installs: {})",
                tool.program,
                tool.package,
                installed.join(" ")
            ));
        }
        let listed = file.table.iter().any(|(program, package)| {
            let covers = tool.program == program
                || tool
                    .program
                    .strip_prefix(program.as_str())
                    .is_some_and(|rest| rest.starts_with('/'));
            covers && package == tool.package
        });
        if !listed {
            problems.push(format!(
                "the comment table has no row `{}  {}` (program or its directory, package)",
                tool.program, tool.package
            ));
        }
    }
    for (program, package) in &file.table {
        let known = tools.iter().any(|t| {
            t.package == package
                && (t.program == program
                    || t.program
                        .strip_prefix(program.as_str())
                        .is_some_and(|r| r.starts_with('/')))
        });
        if !known {
            problems.push(format!(
                "the comment table lists `{program}  {package}`, which is not a builder tool \
                 (factory_assets::BUILDER_TOOLS)"
            ));
        }
    }
    problems
}

/// What is wrong with how the Dockerfile builds and runs the builder function.
fn build_problems(file: &Dockerfile) -> Vec<String> {
    const BOOTSTRAP: &str = "/var/runtime/bootstrap";
    let mut problems = Vec::new();
    let Some(runtime) = file.stages.last() else {
        return vec!["no FROM stage".to_owned()];
    };

    // ENTRYPOINT ["/var/runtime/bootstrap"] (exec form) in the runtime stage.
    match runtime.instructions.iter().rev().find(|(k, _)| k == "ENTRYPOINT") {
        None => problems.push("the runtime stage has no ENTRYPOINT".to_owned()),
        Some((_, args)) => match serde_json::from_str::<Vec<String>>(args) {
            Ok(argv) if argv.first().map(String::as_str) == Some(BOOTSTRAP) => {}
            _ => problems.push(format!(
                "ENTRYPOINT is {args}, not the exec form [\"{BOOTSTRAP}\"]"
            )),
        },
    }

    // COPY --from=<stage> <source> /var/runtime/bootstrap
    let copy = runtime.instructions.iter().find_map(|(k, args)| {
        let words: Vec<&str> = args.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="))?;
        (k == "COPY" && words.last() == Some(&BOOTSTRAP))
            .then(|| (from.to_owned(), words[words.len() - 2].to_owned()))
    });
    let Some((from, source)) = copy else {
        problems.push(format!(
            "the runtime stage copies no {BOOTSTRAP} from a build stage"
        ));
        return problems;
    };
    let Some(build) = file
        .stages
        .iter()
        .enumerate()
        .find(|(i, s)| s.name.as_deref() == Some(from.as_str()) || from.parse() == Ok(*i))
        .map(|(_, s)| s)
    else {
        problems.push(format!("COPY --from={from}: no such stage"));
        return problems;
    };

    // cargo build --release -p builder, and the binary installed where the COPY takes it from.
    let builds_builder = build.commands().iter().any(|words| {
        let cargo_build = words.windows(2).any(|w| w == ["cargo", "build"]);
        let release = words.contains(&"--release");
        let package = words
            .windows(2)
            .any(|w| matches!(w[0], "-p" | "--package" | "--bin") && w[1] == "builder")
            || words
                .iter()
                .any(|w| matches!(*w, "-p=builder" | "--package=builder" | "--bin=builder"));
        cargo_build && release && package
    });
    if !builds_builder {
        problems.push(format!(
            "stage {from} does not run `cargo build --release -p builder`"
        ));
    }
    let installs_binary = build.commands().iter().any(|words| {
        matches!(words.first(), Some(&"install" | &"cp" | &"mv"))
            && words.iter().any(|w| w.ends_with("target/release/builder"))
            && words.last() == Some(&source.as_str())
    });
    if !installs_binary {
        problems.push(format!(
            "stage {from} does not put target/release/builder at {source} (what COPY takes)"
        ));
    }

    // The binary links against the build stage's glibc: the runtime must be the same release.
    let (b, r) = (debian_release(&build.image), debian_release(&runtime.image));
    if b.is_none() || b != r {
        problems.push(format!(
            "build stage {} and runtime stage {} are not the same Debian release",
            build.image, runtime.image
        ));
    }
    problems
}

#[test]
fn every_builder_tool_is_installed_and_listed() {
    let file = parse(&dockerfile());
    let problems = tool_problems(&file, factory_assets::BUILDER_TOOLS);
    assert!(
        problems.is_empty(),
        "infra/builder/Dockerfile:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_build_stage_builds_the_builder_function_as_the_entry_point() {
    let file = parse(&dockerfile());
    let problems = build_problems(&file);
    assert!(
        problems.is_empty(),
        "infra/builder/Dockerfile:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn builder_tools_are_the_ones_the_builder_calls() {
    // The list names each program at most once, and covers what the disk and ISO builders check.
    let tools = factory_assets::BUILDER_TOOLS;
    for (i, t) in tools.iter().enumerate() {
        assert!(
            !tools[..i].iter().any(|u| u.program == t.program),
            "{} twice in BUILDER_TOOLS",
            t.program
        );
    }
    use factory_disk::layout::Bootloader;
    use factory_disk::{assemble, grub, iso};
    let mut needed: Vec<Tool> = vec![grub::GRUB_PC_BIN, grub::GRUB_EFI_AMD64_BIN];
    for variant in [
        iso::IsoVariant::SdBoot,
        iso::IsoVariant::Hybrid,
        iso::IsoVariant::Grub,
    ] {
        needed.extend_from_slice(iso::required_tools(variant));
    }
    // amd64 only: arm64 media booted by GRUB are not built (factory_assets::is_profile_built).
    for bootloader in [Bootloader::SdBoot, Bootloader::DualBoot, Bootloader::Grub] {
        needed.extend(assemble::required_tools(bootloader, "amd64"));
    }
    for t in needed {
        assert!(
            tools.contains(&t),
            "{} ({}) is missing from BUILDER_TOOLS",
            t.program,
            t.package
        );
    }
}

// ---- the checks themselves, on samples

const SAMPLE: &str = r#"# A sample.
#   mkfs.xfs              xfsprogs     the BOOT partition
#   /usr/lib/grub/i386-pc grub-pc-bin  BIOS platform
#   /bin/sh               dash         a shell
FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p builder \
    && install -D target/release/builder /out/bootstrap

FROM docker.io/library/debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        # a comment inside the continued line
        ca-certificates xfsprogs=6.1.0-1 grub-pc-bin \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/bootstrap /var/runtime/bootstrap
ENTRYPOINT ["/var/runtime/bootstrap"]
"#;

const XFS: Tool = Tool {
    program: "mkfs.xfs",
    package: "xfsprogs",
};
const PC: Tool = Tool {
    program: "/usr/lib/grub/i386-pc/boot.img",
    package: "grub-pc-bin",
};
const SH: Tool = Tool {
    program: "/bin/sh",
    package: "dash",
};

#[test]
fn parser_reads_stages_packages_and_table() {
    let file = parse(SAMPLE);
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stages[0].name.as_deref(), Some("build"));
    assert_eq!(file.stages[1].image, "docker.io/library/debian:bookworm-slim");
    assert_eq!(
        file.stages[1].apt_packages(),
        ["ca-certificates", "xfsprogs", "grub-pc-bin"]
    );
    assert_eq!(
        file.table,
        [
            ("mkfs.xfs".to_owned(), "xfsprogs".to_owned()),
            ("/usr/lib/grub/i386-pc".to_owned(), "grub-pc-bin".to_owned()),
            ("/bin/sh".to_owned(), "dash".to_owned()),
        ]
    );
    // dash is not installed: Essential, in the Debian base image.
    assert_eq!(tool_problems(&file, &[XFS, PC, SH]), Vec::<String>::new());
    assert_eq!(build_problems(&file), Vec::<String>::new());
}

#[test]
fn a_tool_whose_package_is_not_installed_fails() {
    let file = parse(&SAMPLE.replace("xfsprogs=6.1.0-1 grub-pc-bin", "xfsprogs=6.1.0-1"));
    let problems = tool_problems(&file, &[XFS, PC, SH]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("/usr/lib/grub/i386-pc/boot.img") && problems[0].contains("grub-pc-bin"),
        "{problems:?}"
    );
}

#[test]
fn a_tool_missing_from_the_table_fails_and_so_does_a_stale_row() {
    let file = parse(&SAMPLE.replace("#   mkfs.xfs              xfsprogs     the BOOT partition\n", ""));
    let problems = tool_problems(&file, &[XFS, SH]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("no row `mkfs.xfs  xfsprogs`"),
        "{problems:?}"
    );
    // The other way round: a row for a tool the builder does not have.
    assert!(problems[1].contains("/usr/lib/grub/i386-pc"), "{problems:?}");
}

#[test]
fn a_different_binary_or_entry_point_fails() {
    let other = parse(&SAMPLE.replace("-p builder", "-p image"));
    let problems = build_problems(&other);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("-p builder"), "{problems:?}");

    let shell_form = parse(&SAMPLE.replace(
        r#"ENTRYPOINT ["/var/runtime/bootstrap"]"#,
        "ENTRYPOINT /var/runtime/bootstrap",
    ));
    assert_eq!(build_problems(&shell_form).len(), 1);

    let other_path = parse(&SAMPLE.replace("/out/bootstrap /var", "/out/other /var"));
    let problems = build_problems(&other_path);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("/out/other"), "{problems:?}");

    let other_release = parse(&SAMPLE.replace("rust:1-bookworm", "rust:1-trixie"));
    assert_eq!(build_problems(&other_release).len(), 1);
}
