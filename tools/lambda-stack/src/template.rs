//! What the local stack reads from `template.yaml`: the functions (binary, environment, timeout,
//! memory), the HTTP API's routes (SAM `HttpApi` events and the API's OpenAPI `DefinitionBody`),
//! the CDN's cache behaviours, the SQS event source mappings and the queues they read.
//!
//! Nothing about routing or configuration is written twice: if a function, route or variable
//! changes in the template, the local stack changes with it, and a template that names a function
//! which does not exist (or a route whose integration URI names nobody) fails to load.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::{Mapping, Value};

use crate::intrinsics::Context;
use crate::Error;

/// The template as parsed, before it is resolved for a deployment.
#[derive(Debug, Clone)]
pub struct Template {
    doc: Value,
    /// The template's directory: paths in it (a Dockerfile) are relative to it.
    dir: std::path::PathBuf,
}

/// One Lambda function of the template.
#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    /// `FunctionName`, or `<stack>-<LogicalId>` as CloudFormation would generate (shortened).
    pub name: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`; the container-image builder's
    /// Dockerfile builds `-p builder`).
    pub binary: String,
    pub environment: BTreeMap<String, String>,
    pub timeout: Duration,
    pub memory_mb: u32,
}

/// The catch-all route: a SAM `HttpApi` event without `Path` and `Method`.
pub const DEFAULT_ROUTE: &str = "$default";

/// One HTTP API route: `ANY /image/{schematic}/{version}/{path+}` → a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upper-case method, or `ANY`.
    pub method: String,
    pub path: String,
    /// Logical ID of the function it invokes.
    pub function: String,
}

impl Route {
    /// API Gateway's route key: `ANY /schematics/{id}`.
    pub fn key(&self) -> String {
        if self.path == DEFAULT_ROUTE {
            return DEFAULT_ROUTE.to_owned();
        }
        format!("{} {}", self.method, self.path)
    }
}

/// Where a CDN cache behaviour sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The HTTP API.
    Api,
    /// An S3 bucket (logical ID), read through the origin access control.
    Bucket(String),
}

/// One CloudFront cache behaviour; `path_pattern` `None` is the default behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    pub path_pattern: Option<String>,
    pub origin: Origin,
    pub allowed_methods: Vec<String>,
}

/// An SQS queue of the template.
#[derive(Debug, Clone)]
pub struct Queue {
    pub logical_id: String,
    pub name: String,
    pub fifo: bool,
    pub visibility_timeout: Duration,
    /// `RedrivePolicy.maxReceiveCount` and the dead-letter queue's logical ID.
    pub redrive: Option<(u32, String)>,
}

/// An `AWS::Lambda::EventSourceMapping` from a queue to a function.
#[derive(Debug, Clone)]
pub struct QueueMapping {
    pub queue: String,
    pub function: String,
    pub batch_size: u32,
    pub report_batch_item_failures: bool,
    pub maximum_concurrency: Option<u32>,
}

/// The template resolved for one deployment.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub functions: BTreeMap<String, Function>,
    pub routes: Vec<Route>,
    pub behaviours: Vec<Behaviour>,
    pub queues: BTreeMap<String, Queue>,
    pub mappings: Vec<QueueMapping>,
}

impl Template {
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Template(format!("{}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, dir)
    }

    pub fn parse(text: &str, dir: std::path::PathBuf) -> Result<Self, Error> {
        let doc: Value =
            serde_yaml_ng::from_str(text).map_err(|e| Error::Template(format!("template.yaml: {e}")))?;
        Ok(Self { doc, dir })
    }

    fn section(&self, name: &str) -> Mapping {
        self.doc
            .get(name)
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default()
    }

    /// Every resource of `kind` (e.g. `AWS::SQS::Queue`): logical ID and `Properties`.
    pub fn resources(&self, kind: &str) -> Vec<(String, Value)> {
        self.section("Resources")
            .iter()
            .filter(|(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
            .filter_map(|(id, r)| Some((id.as_str()?.to_owned(), r.clone())))
            .collect()
    }

    /// Every resource of `kind` the template deploys in `context`: without a `Condition`, or with
    /// one that is true (template.yaml's `Deploy=storage` has no functions, API or CDN).
    pub fn deployed_resources(&self, kind: &str, context: &Context) -> Result<Vec<(String, Value)>, Error> {
        let mut out = Vec::new();
        for (id, resource) in self.resources(kind) {
            let deployed = match resource.get("Condition").and_then(Value::as_str) {
                None => true,
                Some(name) => context
                    .conditions
                    .get(name)
                    .copied()
                    .ok_or_else(|| Error::Template(format!("{id}: unknown condition {name}")))?,
            };
            if deployed {
                out.push((id, resource));
            }
        }
        Ok(out)
    }

    /// The Secrets Manager secrets (IDs) the deployed functions' environments reference.
    pub fn secret_references(&self, context: &Context) -> Result<BTreeSet<String>, Error> {
        let globals = self
            .doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);
        let mut out = BTreeSet::new();
        let functions = self.deployed_resources("AWS::Serverless::Function", context)?;
        let sources = functions
            .iter()
            .filter_map(|(_, f)| f.get("Properties"))
            .chain(std::iter::once(&globals).filter(|_| !functions.is_empty()));
        for source in sources {
            if let Some(vars) = source
                .get("Environment")
                .and_then(|e| e.get("Variables"))
                .and_then(Value::as_mapping)
            {
                for v in vars.values() {
                    out.extend(crate::intrinsics::secret_references(&context.raw(v)?));
                }
            }
        }
        Ok(out)
    }

    /// The parameters' defaults, overridden by `overrides` (unknown names are an error).
    pub fn parameters(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let declared = self.section("Parameters");
        let mut out = BTreeMap::new();
        for (name, spec) in &declared {
            let Some(name) = name.as_str() else { continue };
            let default = match spec.get("Default") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Bool(b)) => b.to_string(),
                _ => String::new(),
            };
            out.insert(name.to_owned(), default);
        }
        for (name, value) in overrides {
            if !out.contains_key(name) {
                return Err(Error::Template(format!("no parameter {name} in the template")));
            }
            out.insert(name.clone(), value.clone());
        }
        Ok(out)
    }

    /// Evaluates the template's `Conditions` in `context` (which must hold the parameters).
    pub fn conditions(&self, context: &mut Context) -> Result<(), Error> {
        let declared = self.section("Conditions");
        // Conditions may refer to each other: evaluate until nothing new resolves.
        let mut pending: Vec<(String, Value)> = declared
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
            .collect();
        while !pending.is_empty() {
            let before = pending.len();
            let mut still = Vec::new();
            for (name, expr) in pending {
                match context.eval(&expr) {
                    Ok(Value::Bool(b)) => {
                        context.conditions.insert(name, b);
                    }
                    Ok(other) => {
                        return Err(Error::Template(format!(
                            "condition {name} is not a boolean: {other:?}"
                        )))
                    }
                    Err(_) => still.push((name, expr)),
                }
            }
            if still.len() == before {
                let names: Vec<_> = still.iter().map(|(n, _)| n.as_str()).collect();
                return Err(Error::Template(format!(
                    "conditions that cannot be evaluated: {names:?}"
                )));
            }
            pending = still;
        }
        Ok(())
    }

    /// Resolves the functions, routes, behaviours, queues and mappings in `context`.
    pub fn deployment(&self, context: &Context) -> Result<Deployment, Error> {
        let stack = context.refs.get("AWS::StackName").cloned().unwrap_or_default();
        let globals = self
            .doc
            .get("Globals")
            .and_then(|g| g.get("Function"))
            .cloned()
            .unwrap_or(Value::Null);

        let mut functions = BTreeMap::new();
        for (id, resource) in self.deployed_resources("AWS::Serverless::Function", context)? {
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let binary = match resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
            {
                Some(b) => b.to_owned(),
                None => self.dockerfile_binary(&id, &resource)?,
            };
            let mut environment = BTreeMap::new();
            for source in [&globals, &props] {
                if let Some(vars) = source
                    .get("Environment")
                    .and_then(|e| e.get("Variables"))
                    .and_then(Value::as_mapping)
                {
                    for (k, v) in vars {
                        let k = k.as_str().unwrap_or_default().to_owned();
                        let v = context
                            .string(v)
                            .map_err(|e| Error::Template(format!("{id}: environment {k}: {e}")))?;
                        environment.insert(k, v);
                    }
                }
            }
            let number = |key: &str, default: u64| -> Result<u64, Error> {
                match props.get(key).or_else(|| globals.get(key)) {
                    None => Ok(default),
                    Some(v) => context
                        .string(v)?
                        .parse()
                        .map_err(|_| Error::Template(format!("{id}: {key} is not a number"))),
                }
            };
            let name = match props.get("FunctionName") {
                Some(v) => context.string(v)?,
                None => format!("{stack}-{id}"),
            };
            functions.insert(
                id.clone(),
                Function {
                    logical_id: id.clone(),
                    name,
                    binary,
                    environment,
                    // Lambda's defaults: 3 s, 128 MB.
                    timeout: Duration::from_secs(number("Timeout", 3)?),
                    memory_mb: u32::try_from(number("MemorySize", 128)?).unwrap_or(u32::MAX),
                },
            );
        }

        let routes = self.routes(context, &functions)?;
        let behaviours = self.behaviours(context)?;
        let queues = self.queues(context)?;
        let mut mappings = Vec::new();
        for (id, resource) in self.deployed_resources("AWS::Lambda::EventSourceMapping", context)? {
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let queue = logical_of(props.get("EventSourceArn")).ok_or_else(|| {
                Error::Template(format!("{id}: EventSourceArn is not a !GetAtt of a queue"))
            })?;
            let function = logical_of(props.get("FunctionName"))
                .ok_or_else(|| Error::Template(format!("{id}: FunctionName is not a !Ref of a function")))?;
            if !functions.contains_key(&function) || !queues.contains_key(&queue) {
                return Err(Error::Template(format!(
                    "{id}: maps {queue} to {function}: one of them is not in the template"
                )));
            }
            let batch_size = match props.get("BatchSize") {
                Some(v) => context.string(v)?.parse().unwrap_or(10),
                None => 10,
            };
            let report_batch_item_failures = props
                .get("FunctionResponseTypes")
                .and_then(Value::as_sequence)
                .is_some_and(|t| t.iter().any(|v| v.as_str() == Some("ReportBatchItemFailures")));
            let maximum_concurrency = match props
                .get("ScalingConfig")
                .and_then(|s| s.get("MaximumConcurrency"))
            {
                Some(v) => context.string(v)?.parse().ok(),
                None => None,
            };
            mappings.push(QueueMapping {
                queue,
                function,
                batch_size,
                report_batch_item_failures,
                maximum_concurrency,
            });
        }
        Ok(Deployment {
            functions,
            routes,
            behaviours,
            queues,
            mappings,
        })
    }

    /// The binary of a container-image function: its Dockerfile's `cargo build ... -p <name>`.
    fn dockerfile_binary(&self, id: &str, resource: &Value) -> Result<String, Error> {
        let dockerfile = resource
            .get("Metadata")
            .and_then(|m| m.get("Dockerfile"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::Template(format!("{id}: neither BuildProperties.Binary nor a Dockerfile"))
            })?;
        let path = self.dir.join(dockerfile);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Template(format!("{id}: {}: {e}", path.display())))?;
        dockerfile_package(&text).ok_or_else(|| {
            Error::Template(format!(
                "{id}: {} builds no `cargo build ... -p <function>`",
                path.display()
            ))
        })
    }

    fn routes(&self, context: &Context, functions: &BTreeMap<String, Function>) -> Result<Vec<Route>, Error> {
        let mut routes = Vec::new();
        // SAM HttpApi events.
        for (id, resource) in self.deployed_resources("AWS::Serverless::Function", context)? {
            let events = resource
                .get("Properties")
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            for (_, event) in events {
                if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                    continue;
                }
                let props = event.get("Properties").cloned().unwrap_or(Value::Null);
                let method = props.get("Method").and_then(Value::as_str).unwrap_or("ANY");
                // Neither Path nor Method: SAM makes it the API's $default route.
                let path = match props.get("Path").and_then(Value::as_str) {
                    Some(p) => p,
                    None if props.get("Method").is_none() => DEFAULT_ROUTE,
                    None => {
                        return Err(Error::Template(format!(
                            "{id}: an HttpApi event with Method but no Path"
                        )))
                    }
                };
                routes.push(Route {
                    method: method.to_ascii_uppercase(),
                    path: path.to_owned(),
                    function: id.clone(),
                });
            }
        }
        // The API's own OpenAPI body: integrations name their function by ARN.
        for (api, resource) in self.deployed_resources("AWS::Serverless::HttpApi", context)? {
            let paths = resource
                .get("Properties")
                .and_then(|p| p.get("DefinitionBody"))
                .and_then(|b| b.get("paths"))
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            for (path, operations) in paths {
                let path = path.as_str().unwrap_or_default().to_owned();
                for (operation, spec) in operations.as_mapping().cloned().unwrap_or_default() {
                    let operation = operation.as_str().unwrap_or_default();
                    let method = match operation {
                        "x-amazon-apigateway-any-method" => "ANY".to_owned(),
                        "parameters" | "summary" | "description" => continue,
                        m => m.to_ascii_uppercase(),
                    };
                    let uri = spec
                        .get("x-amazon-apigateway-integration")
                        .and_then(|i| i.get("uri"))
                        .ok_or_else(|| {
                            Error::Template(format!("{api}: {method} {path} has no integration uri"))
                        })?;
                    let uri = context.string(uri)?;
                    let name = function_name_of_uri(&uri).ok_or_else(|| {
                        Error::Template(format!("{api}: {method} {path}: not a Lambda integration: {uri}"))
                    })?;
                    let function = functions
                        .values()
                        .find(|f| f.name == name)
                        .ok_or_else(|| {
                            Error::Template(format!("{api}: {method} {path} invokes function {name}, which no resource of the template is named"))
                        })?;
                    routes.push(Route {
                        method,
                        path: path.clone(),
                        function: function.logical_id.clone(),
                    });
                }
            }
        }
        Ok(routes)
    }

    fn behaviours(&self, context: &Context) -> Result<Vec<Behaviour>, Error> {
        let mut out = Vec::new();
        for (id, resource) in self.deployed_resources("AWS::CloudFront::Distribution", context)? {
            let config = resource
                .get("Properties")
                .and_then(|p| p.get("DistributionConfig"))
                .cloned()
                .unwrap_or(Value::Null);
            let mut origins = BTreeMap::new();
            for origin in config
                .get("Origins")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
            {
                let origin_id = origin
                    .get("Id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                let kind = if origin.get("S3OriginConfig").is_some() {
                    let bucket = logical_of(origin.get("DomainName")).ok_or_else(|| {
                        Error::Template(format!(
                            "{id}: S3 origin {origin_id} is not a !GetAtt of a bucket"
                        ))
                    })?;
                    Origin::Bucket(bucket)
                } else {
                    // A custom origin: the local stack has one API, whatever its domain.
                    let domain = context
                        .string(origin.get("DomainName").unwrap_or(&Value::Null))
                        .unwrap_or_default();
                    if !domain.contains("execute-api") {
                        return Err(Error::Template(format!(
                            "{id}: origin {origin_id} ({domain}) is neither the HTTP API nor a bucket"
                        )));
                    }
                    Origin::Api
                };
                origins.insert(origin_id, kind);
            }
            let behaviour = |b: &Value, pattern: Option<String>| -> Result<Behaviour, Error> {
                let target = b
                    .get("TargetOriginId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let origin = origins.get(target).cloned().ok_or_else(|| {
                    Error::Template(format!("{id}: behaviour targets unknown origin {target}"))
                })?;
                let allowed_methods = b
                    .get("AllowedMethods")
                    .and_then(Value::as_sequence)
                    .map(|m| m.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_else(|| vec!["GET".to_owned(), "HEAD".to_owned()]);
                Ok(Behaviour {
                    path_pattern: pattern,
                    origin,
                    allowed_methods,
                })
            };
            for b in config
                .get("CacheBehaviors")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default()
            {
                let pattern = b.get("PathPattern").and_then(Value::as_str).map(str::to_owned);
                out.push(behaviour(&b, pattern)?);
            }
            if let Some(default) = config.get("DefaultCacheBehavior") {
                out.push(behaviour(default, None)?);
            }
        }
        Ok(out)
    }

    /// The template's queues, names resolved (needed before the rest of the deployment).
    pub fn queues(&self, context: &Context) -> Result<BTreeMap<String, Queue>, Error> {
        let mut out = BTreeMap::new();
        for (id, resource) in self.deployed_resources("AWS::SQS::Queue", context)? {
            let props = resource.get("Properties").cloned().unwrap_or(Value::Null);
            let name = match props.get("QueueName") {
                Some(v) => context.string(v)?,
                None => id.clone(),
            };
            let fifo = props.get("FifoQueue").and_then(Value::as_bool).unwrap_or(false);
            let visibility = match props.get("VisibilityTimeout") {
                Some(v) => context.string(v)?.parse().unwrap_or(30),
                None => 30,
            };
            let redrive = match props.get("RedrivePolicy") {
                Some(policy) => {
                    let count = policy
                        .get("maxReceiveCount")
                        .map(|v| context.string(v))
                        .transpose()?
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1);
                    let target = logical_of(policy.get("deadLetterTargetArn")).ok_or_else(|| {
                        Error::Template(format!("{id}: deadLetterTargetArn is not a !GetAtt"))
                    })?;
                    Some((count, target))
                }
                None => None,
            };
            out.insert(
                id.clone(),
                Queue {
                    logical_id: id,
                    name,
                    fifo,
                    visibility_timeout: Duration::from_secs(visibility),
                    redrive,
                },
            );
        }
        Ok(out)
    }
}

/// The logical ID a `!Ref X` or `!GetAtt X.Attr` names.
fn logical_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            match tag.trim_start_matches('!') {
                "Ref" => t.value.as_str().map(str::to_owned),
                "GetAtt" => match &t.value {
                    Value::String(s) => s.split('.').next().map(str::to_owned),
                    Value::Sequence(parts) => parts.first()?.as_str().map(str::to_owned),
                    _ => None,
                },
                _ => None,
            }
        }
        Value::Mapping(m) => {
            if let Some(r) = m.get("Ref") {
                return r.as_str().map(str::to_owned);
            }
            match m.get("Fn::GetAtt")? {
                Value::String(s) => s.split('.').next().map(str::to_owned),
                Value::Sequence(parts) => parts.first()?.as_str().map(str::to_owned),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The package a Dockerfile's `cargo build ... -p NAME` builds (the function's binary).
fn dockerfile_package(text: &str) -> Option<String> {
    text.lines().filter(|l| l.contains("cargo build")).find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let at = words.iter().position(|w| *w == "-p" || *w == "--package")?;
        words.get(at + 1).map(|w| (*w).to_owned())
    })
}

/// `...:function:NAME/invocations` → `NAME`.
fn function_name_of_uri(uri: &str) -> Option<String> {
    let rest = uri.split(":function:").nth(1)?;
    Some(rest.split('/').next()?.split(':').next()?.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn integration_uris_name_functions() {
        assert_eq!(
            function_name_of_uri("arn:aws:apigateway:r:lambda:path/2015-03-31/functions/arn:aws:lambda:r:1:function:s-image/invocations").as_deref(),
            Some("s-image")
        );
        assert_eq!(function_name_of_uri("https://example.com/"), None);
    }
}

#[cfg(test)]
mod template_yaml {
    //! The repository's template.yaml, resolved as the local stack resolves it.
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deployment() -> Deployment {
        let (template, context) = resolved(&[]);
        template.deployment(&context).unwrap()
    }

    fn resolved(overrides: &[(&str, &str)]) -> (Template, Context) {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let template = Template::load(&root.join("template.yaml")).unwrap();
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut context = Context {
            refs: template.parameters(&overrides).unwrap(),
            ..Context::default()
        };
        for (k, v) in [
            ("AWS::StackName", "s"),
            ("AWS::Region", "us-east-1"),
            ("AWS::AccountId", "1"),
            ("AWS::Partition", "aws"),
            ("AWS::URLSuffix", "amazonaws.com"),
            ("AWS::StackId", "arn:aws:cloudformation:us-east-1:1:stack/s/u"),
        ] {
            context.refs.insert(k.into(), v.into());
        }
        for id in [
            "ContentBucket",
            "BuildQueue",
            "BuildDeadLetterQueue",
            "FactoryApi",
            "Cdn",
        ] {
            context.refs.insert(id.into(), format!("{id}-physical"));
        }
        for a in [
            "ContentBucket.Arn",
            "ContentBucket.RegionalDomainName",
            "BuildQueue.Arn",
            "BuildDeadLetterQueue.Arn",
            "Cdn.DomainName",
        ] {
            context.attributes.insert(a.into(), format!("{a}-value"));
        }
        context
            .secrets
            .insert("talos-factory/signing-key".into(), "PEM".into());
        template.conditions(&mut context).unwrap();
        (template, context)
    }

    #[test]
    fn storage_only_deploys_no_function_route_or_cdn() {
        let (template, context) = resolved(&[("Deploy", "storage")]);
        let d = template.deployment(&context).unwrap();
        assert!(d.functions.is_empty() && d.routes.is_empty() && d.behaviours.is_empty());
        assert!(d.mappings.is_empty());
        assert_eq!(
            d.queues.keys().collect::<Vec<_>>(),
            ["BuildDeadLetterQueue", "BuildQueue"]
        );
        assert!(template.secret_references(&context).unwrap().is_empty());
        let (template, context) = resolved(&[]);
        assert_eq!(
            template.secret_references(&context).unwrap(),
            BTreeSet::from(["talos-factory/signing-key".to_owned()])
        );
    }

    #[test]
    fn every_function_route_behaviour_and_mapping() {
        let d = deployment();
        let binaries: Vec<&str> = d.functions.values().map(|f| f.binary.as_str()).collect();
        assert_eq!(
            binaries,
            [
                "builder",
                "catalog",
                "image",
                "keys",
                "pxe",
                "registry",
                "schematics"
            ]
        );
        let key = |k: &str| d.routes.iter().find(|r| r.key() == k).map(|r| r.function.clone());
        assert_eq!(
            key("ANY /image/{schematic}/{version}/{path+}").as_deref(),
            Some("ImageFunction")
        );
        assert_eq!(key("ANY /v2").as_deref(), Some("RegistryFunction"));
        assert_eq!(key("ANY /v2/{proxy+}").as_deref(), Some("RegistryFunction"));
        assert_eq!(key("ANY /schematics/{id}").as_deref(), Some("SchematicsFunction"));
        assert_eq!(
            key("ANY /pxe/{schematic}/{version}/{path}").as_deref(),
            Some("PxeFunction")
        );
        assert_eq!(key("ANY /healthz").as_deref(), Some("KeysFunction"));
        assert_eq!(key("$default").as_deref(), Some("KeysFunction"));
        assert_eq!(d.behaviours[0].path_pattern.as_deref(), Some("/assets/*"));
        assert_eq!(d.behaviours[0].origin, Origin::Bucket("ContentBucket".into()));
        assert_eq!(d.behaviours.last().unwrap().origin, Origin::Api);
        let m = &d.mappings[0];
        assert_eq!(
            (
                m.queue.as_str(),
                m.function.as_str(),
                m.batch_size,
                m.report_batch_item_failures
            ),
            ("BuildQueue", "BuilderFunction", 1, true)
        );
        let image = &d.functions["ImageFunction"];
        assert_eq!(image.name, "s-image");
        assert_eq!(image.environment["FACTORY_SIGNING_KEY_PEM"], "PEM");
        assert_eq!(
            image.environment["FACTORY_BUILD_QUEUE_URL"],
            "BuildQueue-physical"
        );
        assert_eq!(
            image.environment["FACTORY_ASSET_BASE_URL"],
            "https://Cdn.DomainName-value/"
        );
        assert_eq!(image.timeout, Duration::from_secs(28));
        assert_eq!(d.functions["BuilderFunction"].timeout, Duration::from_secs(900));
        assert_eq!(
            d.queues["BuildQueue"].redrive,
            Some((3, "BuildDeadLetterQueue".into()))
        );
    }
}
