//! template.yaml deployed through CloudFormation on LocalStack (issue 14 §3).
//!
//! `scripts/deploy-localstack` deploys the template with `Deploy=storage`, the part LocalStack's
//! community edition can create (no Lambda without Docker, no API Gateway v2, no CloudFront:
//! infra/README.md lists what it refused). The functions' release binaries then run under
//! `lambda-stack` against the bucket, build queues and signing-key secret **of that stack** (found
//! through CloudFormation and Secrets Manager, not created by the test): schematics, the catalog,
//! the signing key, an iPXE script and a built asset, which goes through the stack's build queue.
//! Then a stack update (a parameter and a tag) must complete and keep the data, and a delete must
//! remove the stack and its queues.
//!
//! Needs LocalStack from `localstack/start` (CloudFormation, Secrets Manager, S3, SQS) and the
//! functions from `scripts/build-functions`; fails, never skips, without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::common::curl::{curl, Reply};
use crate::common::stack::StackThread;
use factory_signing::SigningKey;
use serde_json::Value;

/// A version of the stand-in release.
const VERSION: &str = "v1.12.1";
const SCHEMATIC: &str = "customization:\n  extraKernelArgs:\n    - console=ttyS1\n";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `scripts/deploy-localstack <args>`; panics with its output unless it succeeds. Returns what it
/// printed and, unless deleting, the stack as `--outputs-file` writes it.
fn deploy_localstack(args: &[&str], scratch: &Path) -> (String, Value) {
    let outputs = scratch.join("stack.json");
    let _ = std::fs::remove_file(&outputs);
    let mut command = Command::new(root().join("scripts/deploy-localstack"));
    command.args(args);
    if !args.contains(&"--delete") {
        command.arg("--outputs-file").arg(&outputs);
    }
    let output = command.output().expect("running scripts/deploy-localstack");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scripts/deploy-localstack {args:?} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{stdout}");
    let stack = match std::fs::read(&outputs) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("the outputs file is JSON"),
        Err(_) => Value::Null,
    };
    (stdout, stack)
}

/// The aws CLI of `.venv-localstack` against LocalStack.
fn aws(args: &[&str]) -> std::process::Output {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
    Command::new(root().join(".venv-localstack/bin/aws"))
        .args(args)
        .env("AWS_DEFAULT_REGION", region)
        .env("AWS_PAGER", "")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .output()
        .expect("the aws CLI of .venv-localstack (localstack/start installs it)")
}

/// Deletes the stack (when the test did not get to) and the test's secret.
struct Cleanup {
    stack: String,
    secret: String,
    scratch: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = Command::new(root().join("scripts/deploy-localstack"))
                .args(["--delete", "--stack-name", &self.stack])
                .output();
        }
        let _ = aws(&[
            "secretsmanager",
            "delete-secret",
            "--secret-id",
            &self.secret,
            "--force-delete-without-recovery",
        ]);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

fn text<'v>(stack: &'v Value, section: &str, key: &str) -> &'v str {
    stack[section][key]
        .as_str()
        .unwrap_or_else(|| panic!("{section}.{key} missing in {stack:#}"))
}

fn get(url: &str, path: &str) -> Reply {
    curl(url, &[], path)
}

#[test]
fn storage_stack_deploy_run_update_delete() {
    crate::common::localstack_endpoint();
    crate::common::stack::functions_dir();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let s3 = rt.block_on(crate::common::s3_client());
    let sqs = rt.block_on(crate::common::sqs_client());

    // The production template keeps the bucket when the stack goes (checked below on LocalStack).
    let template =
        lambda_stack::template::Template::load(&root().join("template.yaml")).expect("template.yaml");
    let bucket_resource = template
        .resources("AWS::S3::Bucket")
        .into_iter()
        .find(|(id, _)| id == "ContentBucket")
        .expect("ContentBucket")
        .1;
    assert_eq!(
        bucket_resource.get("DeletionPolicy").and_then(|v| v.as_str()),
        Some("Retain")
    );

    let name = format!("cfn-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let secret = format!("{name}/signing-key");
    let scratch = tempfile::tempdir().expect("scratch").keep();
    let _cleanup = Cleanup {
        stack: name.clone(),
        secret: secret.clone(),
        scratch: scratch.clone(),
    };
    let key = SigningKey::generate();
    let key_file = scratch.join("signing-key.pem");
    std::fs::write(&key_file, key.private_key_pem().expect("PEM")).expect("key file");
    let key_file = key_file.to_str().expect("UTF-8 path");

    // ---- deploy
    let started = Instant::now();
    let secret_parameter = format!("SigningKeySecretName={secret}");
    let (_, stack) = deploy_localstack(
        &[
            "--stack-name",
            &name,
            "--deploy",
            "storage",
            "--parameter",
            &secret_parameter,
            "--signing-key",
            key_file,
            "--tag",
            "factory-test=cloudformation",
        ],
        &scratch,
    );
    let deployed = started.elapsed();
    assert_eq!(stack["StackStatus"], "CREATE_COMPLETE", "{stack:#}");
    assert_eq!(stack["Parameters"]["Deploy"], "storage");
    let bucket = text(&stack, "Outputs", "ContentBucketName").to_owned();
    let queue_url = text(&stack, "Outputs", "BuildQueueUrl").to_owned();
    assert!(
        queue_url.ends_with(&format!("/{name}-builds.fifo")),
        "{queue_url}"
    );
    assert!(text(&stack, "Outputs", "BuildDeadLetterQueueUrl").ends_with(&format!("/{name}-builds-dlq.fifo")));
    assert!(
        stack["Outputs"].get("CdnUrl").is_none() && stack["Outputs"].get("ApiUrl").is_none(),
        "Deploy=storage has no CDN or API: {stack:#}"
    );

    // ---- the functions against the stack's bucket, queues and secret
    let started = Instant::now();
    let stand_in = crate::common::stand_in::StandIn::generate();
    let functions = StackThread::start_existing(
        &stand_in,
        &name,
        key.clone(),
        &[("SigningKeySecretName", secret.as_str())],
    );
    let url = functions.url().to_owned();
    assert_eq!(functions.bucket(), bucket, "lambda-stack uses the stack's bucket");

    let schematic = scratch.join("schematic.yaml");
    std::fs::write(&schematic, SCHEMATIC).expect("schematic file");
    let created = curl(
        &url,
        &[
            "-X",
            "POST",
            "--data-binary",
            &format!("@{}", schematic.display()),
        ],
        "/schematics",
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_str().expect("id").to_owned();
    let fetched = get(&url, &format!("/schematics/{id}"));
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(
        fetched.text(),
        created.json()["schematic"].as_str().expect("schematic")
    );

    let versions = get(&url, "/versions");
    assert_eq!(versions.status, 200, "{}", versions.text());
    assert!(
        versions
            .json()
            .as_array()
            .expect("a list")
            .iter()
            .any(|v| v == VERSION),
        "{}",
        versions.text()
    );
    // The key the functions publish is the one in the stack's secret.
    let public = get(&url, "/oci/cosign/signing-key.pub");
    assert_eq!(public.status, 200);
    assert_eq!(public.text(), key.public_key_pem());
    let pxe = get(&url, &format!("/pxe/{id}/{VERSION}/metal-amd64"));
    assert_eq!(pxe.status, 200, "{}", pxe.text());
    assert!(pxe.text().starts_with("#!ipxe"), "{}", pxe.text());
    // Built on miss: the image function enqueues on the stack's build queue, the builder (fed by
    // the template's event source mapping from that queue) publishes into the stack's bucket.
    let cmdline = crate::common::image::download(&url, &format!("/image/{id}/{VERSION}/cmdline-metal-amd64"));
    assert_eq!(cmdline.status, 200, "{}", cmdline.text());
    assert!(cmdline.text().contains("console=ttyS1"), "{}", cmdline.text());
    assert!(functions.built() >= 1, "the builder published nothing");
    let ran = started.elapsed();

    let keys: Vec<String> = rt.block_on(async {
        let listed = s3
            .list_objects_v2()
            .bucket(&bucket)
            .send()
            .await
            .expect("list the stack's bucket");
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    });
    for prefix in [
        format!("schematics/{id}"),
        "cache/".into(),
        "index/".into(),
        "assets/".into(),
    ] {
        assert!(
            keys.iter().any(|k| k.starts_with(&prefix)),
            "no {prefix}… in the stack's bucket {bucket}: {keys:?}"
        );
    }
    drop(functions);

    // ---- update: a parameter and a tag; the bucket and its objects stay
    let started = Instant::now();
    let (_, stack) = deploy_localstack(
        &[
            "--update",
            "--stack-name",
            &name,
            "--parameter",
            "BuilderMaxConcurrency=20",
            "--tag",
            "factory-test=updated",
        ],
        &scratch,
    );
    let updated = started.elapsed();
    assert_eq!(stack["StackStatus"], "UPDATE_COMPLETE", "{stack:#}");
    assert_eq!(stack["Parameters"]["BuilderMaxConcurrency"], "20");
    assert_eq!(
        stack["Parameters"]["Deploy"], "storage",
        "kept from the first deploy"
    );
    assert_eq!(stack["Parameters"]["SigningKeySecretName"], secret.as_str());
    assert_eq!(text(&stack, "Outputs", "ContentBucketName"), bucket);
    assert_eq!(text(&stack, "Outputs", "BuildQueueUrl"), queue_url);
    rt.block_on(
        s3.head_object()
            .bucket(&bucket)
            .key(format!("schematics/{id}"))
            .send(),
    )
    .expect("the schematic survives the update");

    // ---- delete
    let started = Instant::now();
    let (printed, _) = deploy_localstack(&["--delete", "--stack-name", &name], &scratch);
    let deleted = started.elapsed();
    assert!(
        printed.contains(&format!("stack {name}: DELETE_COMPLETE")),
        "{printed}"
    );
    let described = aws(&["cloudformation", "describe-stacks", "--stack-name", &name]);
    assert!(
        !described.status.success() && String::from_utf8_lossy(&described.stderr).contains("does not exist"),
        "the stack is still there: {}",
        String::from_utf8_lossy(&described.stdout)
    );
    assert!(
        rt.block_on(
            sqs.get_queue_url()
                .queue_name(format!("{name}-builds.fifo"))
                .send()
        )
        .is_err(),
        "the build queue outlived its stack"
    );
    // AWS keeps the bucket (DeletionPolicy: Retain, asserted above); LocalStack 4.13.1 ignores
    // DeletionPolicy in both of its CloudFormation engines and deletes it with its objects.
    let retained = rt.block_on(s3.head_bucket().bucket(&bucket).send()).is_ok();
    if retained {
        rt.block_on(
            s3.head_object()
                .bucket(&bucket)
                .key(format!("schematics/{id}"))
                .send(),
        )
        .expect("a retained bucket keeps its objects");
        rt.block_on(async {
            for key in &keys {
                let _ = s3.delete_object().bucket(&bucket).key(key).send().await;
            }
            let listed = s3.list_objects_v2().bucket(&bucket).send().await.expect("list");
            for o in listed.contents() {
                let _ = s3
                    .delete_object()
                    .bucket(&bucket)
                    .key(o.key().unwrap_or_default())
                    .send()
                    .await;
            }
            s3.delete_bucket()
                .bucket(&bucket)
                .send()
                .await
                .expect("delete the retained bucket");
        });
    }
    eprintln!(
        "CloudFormation on LocalStack: deploy {:.1} s, functions against the stack {:.1} s, update {:.1} s, \
         delete {:.1} s; content bucket {}",
        deployed.as_secs_f64(),
        ran.as_secs_f64(),
        updated.as_secs_f64(),
        deleted.as_secs_f64(),
        if retained {
            "retained (DeletionPolicy: Retain), removed by the test"
        } else {
            "deleted with the stack (LocalStack ignores DeletionPolicy)"
        }
    );
}
