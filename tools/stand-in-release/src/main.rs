//! `stand-in-release --out DIR [--push HOST:PORT] [--boot-parts DIR | --no-boot-parts] [--key PEM]`
//!
//! Writes the stand-in Talos release (see the library docs) and optionally pushes it to a
//! plain-HTTP registry such as the one `registry/start` runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use stand_in_release::{generate, push, BootPartsSource, GenerateOptions};

#[derive(Debug, Parser)]
#[command(about = "Write a deterministic, signed stand-in Talos release as OCI image layouts")]
struct Args {
    /// Output directory (repository R is written to DIR/R/).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Push every repository and tag to this plain-HTTP registry (HOST:PORT) afterwards.
    #[arg(long, value_name = "HOST:PORT")]
    push: Option<String>,
    /// Real boot parts (scripts/fetch-boot-parts); default: .test-run/boot-parts when complete,
    /// placeholders otherwise.
    #[arg(long, value_name = "DIR", conflicts_with = "no_boot_parts")]
    boot_parts: Option<PathBuf>,
    /// Use placeholders even when real boot parts are present.
    #[arg(long)]
    no_boot_parts: bool,
    /// ECDSA P-256 private key (PEM) to sign with instead of the checked-in TEST key.
    #[arg(long, value_name = "PEM")]
    key: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stand-in-release: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let key_pem = match &args.key {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| format!("reading key {}: {e}", path.display()))?)
        }
        None => None,
    };
    let boot_parts = match (args.boot_parts, args.no_boot_parts) {
        (Some(dir), _) => BootPartsSource::Dir(dir),
        (None, true) => BootPartsSource::Placeholders,
        (None, false) => BootPartsSource::Auto,
    };
    let opts = GenerateOptions {
        out: args.out.clone(),
        boot_parts,
        key_pem,
    };
    let summary = generate(&opts).map_err(|e| e.to_string())?;
    println!("{summary}");
    if let Some(registry) = args.push {
        let pushed = push(&args.out, &registry).map_err(|e| e.to_string())?;
        println!("{pushed}");
    }
    Ok(())
}
