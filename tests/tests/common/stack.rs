//! The serverless stack of `template.yaml` as the tests run it (`tools/lambda-stack`): the
//! release binaries of every function (built by `scripts/build-functions` into `target/lambda`,
//! or where `FACTORY_FUNCTIONS_DIR` says) under the Lambda Runtime API emulator, behind the
//! template's CDN and HTTP API routes, the builder fed by the SQS event source mapping, on
//! LocalStack, with the stand-in release in a real registry (the functions read their upstream
//! over HTTP, as from ghcr.io). Each stack has its own bucket and queues (its stack name is
//! unique), and a signing key of its own in the template's secret; or, with
//! [`StackThread::start_existing`], the bucket, queues and secret of a stack CloudFormation
//! deployed (`cloudformation.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use factory_signing::SigningKey;

use super::registry::Registry;
use super::stand_in::StandIn;

/// Where the function binaries are, failing the test with instructions when one is missing.
pub fn functions_dir() -> PathBuf {
    let dir = match std::env::var_os("FACTORY_FUNCTIONS_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/lambda"),
    };
    for f in [
        "schematics",
        "keys",
        "catalog",
        "image",
        "pxe",
        "registry",
        "builder",
    ] {
        let lambda = dir.join(f).join("bootstrap");
        assert!(
            lambda.is_file() || dir.join(f).is_file(),
            "the serverless stack tests run the functions' release binaries: {} is missing.\n\
             Build them with scripts/build-functions (or point FACTORY_FUNCTIONS_DIR at them)",
            lambda.display()
        );
    }
    dir
}

/// A running stack, in a thread with its own runtime; stopped on drop.
#[derive(Debug)]
pub struct StackThread {
    url: String,
    bucket: String,
    function_names: BTreeMap<String, String>,
    key: SigningKey,
    runtime: lambda_stack::runtime::LambdaRuntime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _registry: Registry,
    _scratch: tempfile::TempDir,
}

impl StackThread {
    /// Pushes `stand_in` to a new registry and starts the stack over it, with `parameters`
    /// overriding the template's.
    pub fn start(stand_in: &StandIn, parameters: &[(&str, &str)]) -> Self {
        Self::start_on(stand_in.path(), &stand_in.cosign_key(), parameters, None)
    }

    /// As [`Self::start`] for the release in `release` (signed with `cosign_key`), serving on
    /// `front` (a listener and the `host:port` clients reach it at) when given.
    pub fn start_on(
        release: &std::path::Path,
        cosign_key: &std::path::Path,
        parameters: &[(&str, &str)],
        front: Option<(std::net::TcpListener, String)>,
    ) -> Self {
        Self::start_inner(release, cosign_key, parameters, front, None, 2)
    }

    /// As [`Self::start`], with nothing polling the build queue: every build request waits out
    /// its whole budget (as when the builders are backed up).
    pub fn start_without_builders(stand_in: &StandIn) -> Self {
        Self::start_inner(stand_in.path(), &stand_in.cosign_key(), &[], None, None, 0)
    }

    /// As [`Self::start`], against the bucket and queues of the CloudFormation stack `stack`
    /// (`scripts/deploy-localstack`); the functions' signing key comes from its secret in Secrets
    /// Manager, which must hold `key` (the template's `SigningKeySecretName`, which `parameters` may
    /// override).
    pub fn start_existing(
        stand_in: &StandIn,
        stack: &str,
        key: SigningKey,
        parameters: &[(&str, &str)],
    ) -> Self {
        Self::start_inner(
            stand_in.path(),
            &stand_in.cosign_key(),
            parameters,
            None,
            Some((stack.to_owned(), key)),
            2,
        )
    }

    fn start_inner(
        release: &std::path::Path,
        cosign_key: &std::path::Path,
        parameters: &[(&str, &str)],
        front: Option<(std::net::TcpListener, String)>,
        existing: Option<(String, SigningKey)>,
        max_pollers: usize,
    ) -> Self {
        super::localstack_endpoint();
        let functions = functions_dir();
        let registry = Registry::start();
        stand_in_release::push(release, &registry.address())
            .unwrap_or_else(|e| panic!("pushing the stand-in release: {e}"));
        let cosign = std::fs::read_to_string(cosign_key).expect("cosign.pub");
        let (existing_stack, key) = match existing {
            Some((stack, key)) => (Some(stack), key),
            None => (None, SigningKey::generate()),
        };
        let key_pem = key.private_key_pem().expect("PEM");
        let scratch = tempfile::tempdir().expect("scratch");
        let stack_name = super::unique_name("stack").to_ascii_lowercase();
        let mut overrides: BTreeMap<String, String> = BTreeMap::from([
            ("UpstreamRegistry".to_owned(), registry.url()),
            ("UpstreamCosignPublicKey".to_owned(), cosign),
        ]);
        for (k, v) in parameters {
            overrides.insert((*k).to_owned(), (*v).to_owned());
        }
        let options = lambda_stack::Options {
            template: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"),
            functions_dir: functions,
            stack_name,
            existing_stack,
            parameters: overrides,
            secrets: BTreeMap::from([(lambda_stack::SIGNING_KEY_SECRET.to_owned(), key_pem)]),
            cdn_domain: front.as_ref().map(|(_, domain)| domain.clone()),
            listener: front.map(|(listener, _)| listener),
            max_instances: 10,
            max_pollers,
            scratch: scratch.path().to_owned(),
            echo_logs: std::env::var_os("FACTORY_STACK_LOGS").is_some(),
        };
        type Ready = Result<(String, String, BTreeMap<String, String>), String>;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (logs_tx, logs_rx) = std::sync::mpsc::channel::<lambda_stack::runtime::LambdaRuntime>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let sdk = super::aws_config().await;
                match lambda_stack::Stack::start(options, &sdk).await {
                    Ok(stack) => {
                        let names = stack
                            .deployment()
                            .functions
                            .values()
                            .map(|f| (f.logical_id.clone(), f.name.clone()))
                            .collect();
                        let bucket = stack.physical("ContentBucket").unwrap_or_default().to_owned();
                        let _ = logs_tx.send(stack.runtime().clone());
                        let _ = ready_tx.send(Ok((stack.url().to_owned(), bucket, names)));
                        let _ = stopped.await;
                        stack.stop().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                    }
                }
            });
        });
        let (url, bucket, function_names) = match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(ready)) => ready,
            Ok(Err(e)) => panic!("the serverless stack did not start: {e}"),
            Err(_) => match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => panic!("the serverless stack did not start within 120 s"),
            },
        };
        let runtime = logs_rx.recv().expect("the stack's runtime");
        Self {
            url,
            bucket,
            function_names,
            key,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
            _registry: registry,
            _scratch: scratch,
        }
    }

    /// The CDN front's URL (the factory's external URL).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The stack's content bucket (its physical name).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The factory's signing key (the template's secret).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// The log of a function, by logical ID (`BuilderFunction`).
    pub fn logs(&self, logical_id: &str) -> Vec<String> {
        self.function_names
            .get(logical_id)
            .map(|name| self.runtime.logs(name))
            .unwrap_or_default()
    }

    /// Assets the builder published: its `published` log lines (a CloudWatch metric filter's
    /// view of the builder).
    pub fn built(&self) -> u64 {
        let lines = self.logs("BuilderFunction");
        u64::try_from(lines.iter().filter(|l| l.contains("\"published\"")).count()).unwrap_or(u64::MAX)
    }
}

impl Drop for StackThread {
    fn drop(&mut self) {
        // A failing test shows what the functions logged (CloudWatch's view), the end of each.
        if std::thread::panicking() {
            for (logical, name) in &self.function_names {
                let lines = self.runtime.logs(name);
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "---- {logical} ({name}): last {} of {} log lines ----",
                    tail.len(),
                    lines.len()
                );
                for line in tail {
                    eprintln!("{line}");
                }
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("the stack thread panicked");
            }
        }
    }
}
