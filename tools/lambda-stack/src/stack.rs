//! The whole stack of `template.yaml`, locally: the template's buckets and queues created on
//! LocalStack (or taken from a deployed CloudFormation stack), every function's release binary
//! under the Runtime API emulator with the environment the template gives it, the CDN front
//! (and behind it the HTTP API) on one loopback port, and the SQS event source mappings.
//!
//! One deliberate difference from AWS, for want of a certificate: the CDN front speaks plain
//! HTTP, so `https://<CDN domain>` in a function's environment (the asset base URL) is rewritten
//! to `http://`. Everything else comes from the template unchanged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use tokio::sync::watch;

use crate::apigw::HttpApi;
use crate::cdn::{self, Cdn};
use crate::intrinsics::Context;
use crate::runtime::{FunctionSpec, LambdaRuntime};
use crate::template::{Deployment, Template};
use crate::{cloudformation, sqs, Error};

/// What to run.
#[derive(Debug)]
pub struct Options {
    pub template: PathBuf,
    /// Where the function binaries are: `<dir>/<binary>/bootstrap` (cargo-lambda's layout) or
    /// `<dir>/<binary>` (`target/release`).
    pub functions_dir: PathBuf,
    /// Also the prefix of every bucket and queue created (unique per test). Unused with
    /// `existing_stack`, whose name the template's `AWS::StackName` then is.
    pub stack_name: String,
    /// A stack CloudFormation deployed from this template (name or ID; `scripts/deploy-localstack`,
    /// e.g. with `Deploy=storage`): its buckets and queues are used instead of new ones, and the
    /// secrets the functions' environments reference are read from Secrets Manager (`secrets` is
    /// then ignored). The stack's parameters are not: the functions get `parameters`.
    pub existing_stack: Option<String>,
    /// Template parameter overrides. `ExternalUrl` defaults to the front's URL (`http://<CDN domain>/`).
    pub parameters: BTreeMap<String, String>,
    /// Secrets Manager values for the template's dynamic references, by secret ID (name or ARN).
    pub secrets: BTreeMap<String, String>,
    /// The front's listener (default: a new one on 127.0.0.1:0).
    pub listener: Option<std::net::TcpListener>,
    /// The CDN's domain as clients reach it (`host:port`; default the listener's address), e.g.
    /// `10.0.2.2:PORT` for a QEMU guest.
    pub cdn_domain: Option<String>,
    /// Most environments per function at once.
    pub max_instances: usize,
    /// Most concurrent pollers per event source mapping (0: nothing is polled).
    pub max_pollers: usize,
    /// Each environment's /tmp lives below this.
    pub scratch: PathBuf,
    /// Copy the functions' logs to stderr.
    pub echo_logs: bool,
}

/// A running stack; stopped on [`Stack::stop`] or drop.
#[derive(Debug)]
pub struct Stack {
    url: String,
    runtime: LambdaRuntime,
    deployment: Deployment,
    /// Logical ID → physical name (bucket name, queue URL).
    physical: BTreeMap<String, String>,
    stop: watch::Sender<bool>,
}

impl Stack {
    pub async fn start(options: Options, sdk: &SdkConfig) -> Result<Self, Error> {
        let listener = match options.listener {
            Some(l) => l,
            None => std::net::TcpListener::bind("127.0.0.1:0")?,
        };
        listener.set_nonblocking(true)?;
        let front = match &options.cdn_domain {
            Some(domain) => domain.clone(),
            None => listener.local_addr()?.to_string(),
        };
        let url = format!("http://{front}");
        let region = sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        let template = Template::load(&options.template)?;
        let existing = match &options.existing_stack {
            Some(name) => Some(cloudformation::describe(sdk, name).await?),
            None => None,
        };
        let stack_name = existing
            .as_ref()
            .map_or_else(|| options.stack_name.clone(), |d| d.name.clone());

        let mut overrides = options.parameters.clone();
        // As the local server's default external URL: with the root path's slash.
        overrides
            .entry("ExternalUrl".into())
            .or_insert_with(|| format!("{url}/"));
        let mut context = Context {
            refs: template.parameters(&overrides)?,
            ..Context::default()
        };
        let stack_id = existing.as_ref().map_or_else(
            || {
                format!(
                    "arn:aws:cloudformation:{region}:000000000000:stack/{stack_name}/{}",
                    uuid::Uuid::new_v4()
                )
            },
            |d| d.id.clone(),
        );
        for (k, v) in [
            ("AWS::StackName", stack_name.as_str()),
            ("AWS::Region", region.as_str()),
            ("AWS::AccountId", "000000000000"),
            ("AWS::Partition", "aws"),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("AWS::StackId", stack_id.as_str()),
        ] {
            context.refs.insert(k.into(), v.into());
        }
        context.secrets = options.secrets.clone();
        template.conditions(&mut context)?;

        // The template's buckets and queues: the deployed stack's, or created on LocalStack under the
        // stack's name.
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(sdk)
                .force_path_style(true)
                .build(),
        );
        let sqs_client = aws_sdk_sqs::Client::new(sdk);
        let mut physical = BTreeMap::new();
        for (id, _) in template.deployed_resources("AWS::S3::Bucket", &context)? {
            let bucket = match &existing {
                Some(d) => deployed_physical(d, &id)?,
                None => {
                    let bucket = format!("{stack_name}-{id}").to_ascii_lowercase();
                    match s3.create_bucket().bucket(&bucket).send().await {
                        Ok(_) => {}
                        Err(e) if format!("{e:?}").contains("BucketAlreadyOwnedByYou") => {}
                        Err(e) => return Err(Error::Setup(format!("create bucket {bucket}: {e:?}"))),
                    }
                    bucket
                }
            };
            context.refs.insert(id.clone(), bucket.clone());
            context
                .attributes
                .insert(format!("{id}.Arn"), format!("arn:aws:s3:::{bucket}"));
            context.attributes.insert(
                format!("{id}.RegionalDomainName"),
                format!("{bucket}.s3.{region}.amazonaws.com"),
            );
            physical.insert(id, bucket);
        }
        let queues = template.queues(&context)?;
        // Dead-letter queues first: the others' redrive policies name them.
        let mut order: Vec<_> = queues.values().collect();
        order.sort_by_key(|q| q.redrive.is_some());
        for q in order {
            if let Some(d) = &existing {
                let queue_url = deployed_physical(d, &q.logical_id)?;
                let arn = sqs_client
                    .get_queue_attributes()
                    .queue_url(&queue_url)
                    .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .send()
                    .await
                    .map_err(|e| Error::Setup(format!("queue {queue_url}: {e:?}")))?
                    .attributes()
                    .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
                    .cloned()
                    .ok_or_else(|| Error::Setup(format!("queue {queue_url}: no QueueArn")))?;
                let name = queue_url.rsplit('/').next().unwrap_or_default().to_owned();
                context.refs.insert(q.logical_id.clone(), queue_url.clone());
                context.attributes.insert(format!("{}.Arn", q.logical_id), arn);
                context
                    .attributes
                    .insert(format!("{}.QueueName", q.logical_id), name);
                physical.insert(q.logical_id.clone(), queue_url);
                continue;
            }
            let redrive = match &q.redrive {
                Some((count, dlq)) => {
                    let arn = context
                        .attributes
                        .get(&format!("{dlq}.Arn"))
                        .cloned()
                        .ok_or_else(|| {
                            Error::Template(format!("{}: dead-letter queue {dlq} unknown", q.logical_id))
                        })?;
                    Some((*count, arn))
                }
                None => None,
            };
            let (queue_url, arn) = sqs::create_queue(
                &sqs_client,
                &q.name,
                q.visibility_timeout,
                redrive.as_ref().map(|(c, a)| (*c, a.as_str())),
            )
            .await?;
            context.refs.insert(q.logical_id.clone(), queue_url.clone());
            context.attributes.insert(format!("{}.Arn", q.logical_id), arn);
            context
                .attributes
                .insert(format!("{}.QueueName", q.logical_id), q.name.clone());
            physical.insert(q.logical_id.clone(), queue_url);
        }
        // The API and the CDN: this process.
        for (id, _) in template.resources("AWS::Serverless::HttpApi") {
            context.refs.insert(id, "local".into());
        }
        for (id, _) in template.resources("AWS::CloudFront::Distribution") {
            context.refs.insert(id.clone(), "LOCALCDN".into());
            context
                .attributes
                .insert(format!("{id}.DomainName"), front.to_string());
        }

        if existing.is_some() {
            // The secrets the functions' environments reference, as CloudFormation would resolve them.
            context.secrets.clear();
            for id in template.secret_references(&context)? {
                let value = cloudformation::secret(sdk, &id).await?;
                context.secrets.insert(id, value);
            }
        }
        let deployment = template.deployment(&context)?;
        if deployment.functions.is_empty() {
            return Err(Error::Template(
                "the template deploys no function with these parameters (Deploy=storage?): nothing to run"
                    .into(),
            ));
        }
        let inherited: Vec<(String, String)> = [
            "PATH",
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_EC2_METADATA_DISABLED",
        ]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
        let mut specs = Vec::new();
        let mut names = BTreeMap::new();
        for f in deployment.functions.values() {
            let mut environment = f.environment.clone();
            for v in environment.values_mut() {
                *v = v.replace(&format!("https://{front}"), &format!("http://{front}"));
            }
            environment.extend(inherited.iter().cloned());
            environment.insert("AWS_REGION".into(), region.clone());
            environment.insert("AWS_DEFAULT_REGION".into(), region.clone());
            let binary = binary_path(&options.functions_dir, &f.binary);
            names.insert(f.logical_id.clone(), f.name.clone());
            specs.push(FunctionSpec {
                name: f.name.clone(),
                binary,
                environment,
                timeout: f.timeout,
                memory_mb: f.memory_mb,
                max_instances: options.max_instances,
            });
        }
        let runtime = LambdaRuntime::start(specs, options.scratch.clone(), options.echo_logs).await?;
        let api = HttpApi::new(&deployment.routes, &names, runtime.clone(), "local", &region);
        let buckets = template
            .resources("AWS::S3::Bucket")
            .into_iter()
            .filter_map(|(id, _)| Some((id.clone(), physical.get(&id)?.clone())))
            .collect();
        let app = cdn::app(Cdn {
            behaviours: deployment.behaviours.clone(),
            api,
            s3,
            buckets,
        });
        let (stop, stopped) = watch::channel(false);
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut shutdown = stopped.clone();
        tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
        });
        for m in &deployment.mappings {
            let (Some(queue_url), Some(queue_arn), Some(function)) = (
                physical.get(&m.queue).cloned(),
                context.attributes.get(&format!("{}.Arn", m.queue)).cloned(),
                names.get(&m.function).cloned(),
            ) else {
                return Err(Error::Template(format!(
                    "event source mapping {} → {}: unresolved",
                    m.queue, m.function
                )));
            };
            let mapping = sqs::Mapping {
                queue_url,
                queue_arn,
                function,
                batch_size: m.batch_size,
                report_batch_item_failures: m.report_batch_item_failures,
                concurrency: usize::try_from(m.maximum_concurrency.unwrap_or(2))
                    .unwrap_or(2)
                    .min(options.max_pollers),
                region: region.clone(),
            };
            tokio::spawn(sqs::run(
                sqs_client.clone(),
                runtime.clone(),
                mapping,
                stopped.clone(),
            ));
        }
        Ok(Self {
            url,
            runtime,
            deployment,
            physical,
            stop,
        })
    }

    /// The CDN front's base URL (`http://127.0.0.1:PORT`), also the factory's external URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn runtime(&self) -> &LambdaRuntime {
        &self.runtime
    }

    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The physical name of a bucket or the URL of a queue, by logical ID.
    pub fn physical(&self, logical_id: &str) -> Option<&str> {
        self.physical.get(logical_id).map(String::as_str)
    }

    /// The runtime name of a function, by logical ID.
    pub fn function_name(&self, logical_id: &str) -> Option<&str> {
        self.deployment.functions.get(logical_id).map(|f| f.name.as_str())
    }

    /// A function's log lines, by logical ID.
    pub fn logs(&self, logical_id: &str) -> Vec<String> {
        self.function_name(logical_id)
            .map(|n| self.runtime.logs(n))
            .unwrap_or_default()
    }

    /// Stops the front, the pollers and every environment.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        self.runtime.stop();
        // Let the pollers' in-flight receives end (they wait at most 1 s).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.runtime.stop();
    }
}

/// The physical ID of `logical_id` in a deployed stack.
fn deployed_physical(stack: &cloudformation::Deployed, logical_id: &str) -> Result<String, Error> {
    stack.physical.get(logical_id).cloned().ok_or_else(|| {
        Error::Setup(format!(
            "stack {} ({}) has no resource {logical_id}: deployed from another template?",
            stack.name, stack.status
        ))
    })
}

fn binary_path(dir: &std::path::Path, binary: &str) -> PathBuf {
    let lambda_layout = dir.join(binary).join("bootstrap");
    if lambda_layout.is_file() {
        lambda_layout
    } else {
        dir.join(binary)
    }
}
