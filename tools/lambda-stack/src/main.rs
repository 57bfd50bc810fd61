//! `lambda-stack`: serves the stack of template.yaml locally (see the crate docs), until Ctrl-C.
//!
//! ```text
//! localstack/start && localstack/init && scripts/build-functions
//! AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
//!   cargo run -p lambda-stack -- --functions target/lambda --port 8080 \
//!     --parameter UpstreamRegistry=http://127.0.0.1:5000
//! ```
//!
//! Against a stack CloudFormation deployed (its bucket, queues and the signing key in Secrets
//! Manager): `scripts/deploy-localstack --stack-name talos-factory`, then
//! `lambda-stack --existing-stack talos-factory ...`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    about = "Runs template.yaml's functions under a Lambda Runtime API emulator behind its HTTP API and CDN, on LocalStack"
)]
struct Args {
    /// The SAM template.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// Where the function binaries are (`target/lambda` from cargo lambda build, or `target/release`).
    #[arg(long, default_value = "target/lambda")]
    functions: PathBuf,
    /// The stack name (prefix of the buckets and queues created).
    #[arg(long, default_value = "talos-factory-local")]
    stack_name: String,
    /// Run against this CloudFormation stack (name or ID; scripts/deploy-localstack deploys one): its
    /// bucket and queues instead of new ones, the signing key from its SigningKeySecretName secret in
    /// Secrets Manager instead of --signing-key.
    #[arg(long, conflicts_with = "stack_name")]
    existing_stack: Option<String>,
    /// Port of the CDN front on 127.0.0.1 (0: any).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Template parameter overrides, NAME=VALUE (repeatable).
    #[arg(long = "parameter", value_parser = key_value)]
    parameters: Vec<(String, String)>,
    /// The signing key (PKCS#8 PEM file) for the template's signing-key secret; generated there if missing.
    #[arg(long, default_value = "factory-data/lambda-stack-signing-key.pem")]
    signing_key: PathBuf,
    /// Most environments per function.
    #[arg(long, default_value_t = 10)]
    max_instances: usize,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let secrets = match &args.existing_stack {
        Some(_) => BTreeMap::new(),
        None => BTreeMap::from([(
            lambda_stack::SIGNING_KEY_SECRET.to_owned(),
            lambda_stack::signing_key_pem(&args.signing_key)?,
        )]),
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", args.port))?;
    let scratch = std::env::temp_dir().join(format!("lambda-stack-{}", std::process::id()));
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let stack = lambda_stack::Stack::start(
        lambda_stack::Options {
            template: args.template,
            functions_dir: args.functions,
            stack_name: args.stack_name,
            existing_stack: args.existing_stack,
            parameters: args.parameters.into_iter().collect::<BTreeMap<_, _>>(),
            secrets,
            listener: Some(listener),
            cdn_domain: None,
            max_instances: args.max_instances,
            max_pollers: 2,
            scratch,
            echo_logs: true,
        },
        &sdk,
    )
    .await?;
    println!("stack serving on {}", stack.url());
    tokio::signal::ctrl_c().await?;
    stack.stop().await;
    Ok(())
}
