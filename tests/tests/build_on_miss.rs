//! Build on miss through HTTP (issue 4 acceptance), driven with the real `curl` CLI:
//!
//! * `fs::*` / `s3::*`: `image-factory-local` in-process over the stand-in release, on the
//!   embedded store and on `--aws` (LocalStack S3, with whatever queue the local server uses):
//!   a burst of concurrent cold requests is built exactly once, and altered stored bytes or a
//!   tampered index record are never served but rebuilt.
//! * `lambda_*`: the image Lambda function's router (`factory_http::image_app`) over S3 on
//!   LocalStack with an in-process queue and builder, redirecting to presigned S3 URLs or to a
//!   CDN.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::common::curl::curl;
use crate::common::image::{
    assert_same_bytes, asset_key_parts, built_at_least, download, redirect_key, transfer, Backend,
    ImageServer,
};
use crate::common::stand_in::{StandIn, VERSION};
use bytes::Bytes;
use factory_assets::ReleaseAssembler;
use factory_aws::S3Store;
use factory_core::schematic::Schematic;
use factory_http::{AppState, AssetLinks, HttpConfig};
use factory_pipeline::{poll_once, Builder, BuilderConfig, Pipeline, PollConfig};
use factory_signing::SigningKey;
use factory_store::memory::MemoryQueue;
use factory_store::{BuildQueue, ContentStore, PutCondition};
use futures::StreamExt;
use sha2::{Digest, Sha256};

crate::common::image::backend_tests!(
    concurrent_cold_requests_build_once,
    altered_bytes_are_rebuilt_not_served
);

// The local server's own object route only: in the serverless stack, /assets/* is the CDN's, an
// S3 origin that serves whatever the bucket holds (the image function's etag check before every
// redirect is what keeps altered objects from being handed out there: see
// altered_bytes_are_rebuilt_not_served, which runs on the stack too).
#[test]
fn object_route_never_completes_altered_bytes_fs() {
    object_route_never_completes_altered_bytes(Backend::Fs);
}

#[test]
fn object_route_never_completes_altered_bytes_s3() {
    object_route_never_completes_altered_bytes(Backend::S3);
}

/// How many clients ask for the same cold asset at once.
const CLIENTS: usize = 20;

fn concurrent_cold_requests_build_once(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", server.fresh_schematic());
    let kernel = server.release_kernel();
    assert_eq!(server.built(), 0);

    let start = Barrier::new(CLIENTS);
    let replies = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    download(&url, &path)
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|client| client.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200, "client {i}: {}", reply.text());
        assert_same_bytes(&reply.body, &kernel, &format!("client {i}"));
    }
    assert_eq!(
        server.built_at_least(1),
        1,
        "{CLIENTS} concurrent cold requests, one build"
    );
    let assets = server.list("assets/");
    assert_eq!(assets.len(), 1, "{assets:?}");
    assert_eq!(
        asset_key_parts(&assets[0]).1,
        hex::encode(Sha256::digest(&kernel))
    );
    assert_eq!(server.list("index/").len(), 1);
    assert_eq!(server.list("staging/"), Vec::<String>::new());
}

/// Stored bytes altered behind the factory's back (same length, other lengths) and a tampered
/// index signature: the image route never redirects to what was altered, it rebuilds, and the
/// client gets the release kernel.
fn altered_bytes_are_rebuilt_not_served(backend: Backend) {
    let server = ImageServer::start_checking_every_request(backend);
    let url = server.url().to_owned();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", server.fresh_schematic());
    let kernel = server.release_kernel();
    let (key, cache_key, sha256) = publish(&server, &path, &kernel);
    let mut builds = 1;

    for (altered, what) in alterations(&kernel) {
        alter(&server, &key, &altered);

        // The image route notices before redirecting, rebuilds, and serves the release kernel.
        let served = download(&url, &path);
        assert_eq!(served.status, 200, "{what}: {}", served.text());
        assert_same_bytes(&served.body, &kernel, what);
        builds += 1;
        assert_eq!(
            server.built_at_least(builds),
            builds,
            "{what}: rebuilt exactly once"
        );
        assert_same_bytes(&read_object(&server, &key), &kernel, what);
    }

    // A flipped hex digit in the index record's signature: a miss for every reader that has not
    // verified the record before, so a new process (a new Lambda environment) rebuilds. The
    // running one verified it already and kept it (factory_pipeline::index: a signed record
    // stays true once made); it serves the intact object it names, and builds nothing.
    let index_key = format!("index/{cache_key}.json");
    let (_, body) = server.block_on(server.store().get(&index_key)).unwrap().unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let signature = envelope["signature"].as_str().unwrap().to_owned();
    let at = signature.len() / 2;
    let flipped = if &signature[at..=at] == "0" { "1" } else { "0" };
    envelope["signature"] = format!("{}{flipped}{}", &signature[..at], &signature[at + 1..]).into();
    server
        .block_on(server.store().put(
            &index_key,
            Bytes::from(serde_json::to_vec(&envelope).unwrap()),
            Some("application/json"),
            PutCondition::Overwrite,
        ))
        .unwrap();
    assert_eq!(
        server.block_on(server.index().lookup(&cache_key)).unwrap(),
        None,
        "a record with a bad signature is a miss"
    );
    let served = download(&url, &path);
    assert_eq!(served.status, 200, "{}", served.text());
    assert_same_bytes(&served.body, &kernel, "after the signature was tampered with");
    assert_eq!(
        server.built_at_least(builds),
        builds,
        "the process serves the record it verified: no rebuild"
    );
    // Once the object is gone too, the warm path's HEAD fails, the process drops what it
    // remembered and reads the store: the tampered record is a miss, rebuilt exactly once.
    server.block_on(server.store().delete(&key)).unwrap();
    let served = download(&url, &path);
    assert_eq!(served.status, 200, "{}", served.text());
    assert_same_bytes(&served.body, &kernel, "after the signature was tampered with");
    builds += 1;
    assert_eq!(server.built_at_least(builds), builds, "rebuilt exactly once");
    let record = server
        .block_on(server.index().lookup(&cache_key))
        .unwrap()
        .expect("a freshly signed record");
    assert_eq!(record.object_key, key);
    assert_eq!(record.sha256, sha256);
    assert_eq!(record.size, kernel.len() as u64);
}

/// The object route (the local server's redirect target) re-hashes what it streams against the
/// sha256 in the key: altered bytes never arrive complete (the transfer breaks off, curl fails).
fn object_route_never_completes_altered_bytes(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", server.fresh_schematic());
    let kernel = server.release_kernel();
    let (key, _, _) = publish(&server, &path, &kernel);
    let intact = transfer(&url, &format!("/{key}"));
    assert_eq!(intact.exit_code, Some(0), "{}", intact.stderr);
    assert_same_bytes(&intact.body, &kernel, "the intact object");

    for (altered, what) in alterations(&kernel) {
        alter(&server, &key, &altered);
        let direct = transfer(&url, &format!("/{key}"));
        assert!(
            direct.exit_code != Some(0) || direct.body != altered,
            "{what}: the object route delivered the altered bytes complete ({} bytes, curl exit {:?})",
            direct.body.len(),
            direct.exit_code,
        );
    }
}

/// Builds `path` (the release kernel) with a client download; its object key, cache key and
/// sha256.
fn publish(server: &ImageServer, path: &str, kernel: &[u8]) -> (String, String, String) {
    let first = download(server.url(), path);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_same_bytes(&first.body, kernel, "first download");
    let key = redirect_key(&curl(server.url(), &[], path));
    let (cache_key, sha256, _) = asset_key_parts(&key);
    assert_eq!(sha256, hex::encode(Sha256::digest(kernel)));
    assert_eq!(server.built_at_least(1), 1);
    (key, cache_key, sha256)
}

/// Other bytes of the same length, longer and shorter.
fn alterations(original: &[u8]) -> [(Vec<u8>, &'static str); 3] {
    let mut same_length = original.to_vec();
    let middle = same_length.len() / 2;
    same_length[middle] ^= 0x01;
    let mut longer = original.to_vec();
    longer.extend_from_slice(b"\n# appended\n");
    let shorter = original[..original.len() - 1].to_vec();
    [
        (same_length, "same length"),
        (longer, "longer"),
        (shorter, "shorter"),
    ]
}

/// Overwrites the stored object behind the factory's back.
fn alter(server: &ImageServer, key: &str, bytes: &[u8]) {
    server
        .block_on(
            server
                .store()
                .put(key, Bytes::copy_from_slice(bytes), None, PutCondition::Overwrite),
        )
        .unwrap();
}

fn read_object(server: &ImageServer, key: &str) -> Vec<u8> {
    server.block_on(async {
        let (_, mut stream) = server.store().get_stream(key).await.unwrap().unwrap();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.unwrap());
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// The image Lambda function's router over S3

/// `image_app` (the image function's router) over S3 on LocalStack with the given asset links,
/// served on 127.0.0.1, its builds handled by an in-process queue and builder task: what the
/// image and builder functions do in AWS, minus SQS.
struct LambdaImage {
    url: String,
    store: Arc<S3Store>,
    builder: Builder,
    schematic: String,
    kernel: Vec<u8>,
    // Last: the server and builder tasks stop before the release goes away.
    runtime: tokio::runtime::Runtime,
    _stand_in: StandIn,
}

impl LambdaImage {
    fn start(links: AssetLinks) -> Self {
        crate::common::localstack_endpoint(); // Fails at once, with instructions, when unset.
        let stand_in = StandIn::generate();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (url, store, builder, schematic, kernel) = runtime.block_on(async {
            let s3 = crate::common::s3_client().await;
            let bucket = crate::common::test_bucket(&s3).await;
            let prefix = format!("{}/", crate::common::unique_name("lambda-image"));
            let store = Arc::new(S3Store::new(s3, bucket, prefix));
            let shared: Arc<dyn ContentStore> = store.clone();
            let assembler = Arc::new(ReleaseAssembler::new(stand_in.upstream()));
            let key = Arc::new(SigningKey::generate());
            let builder = Builder::new(shared.clone(), key, assembler, BuilderConfig::default()).unwrap();
            let queue = Arc::new(MemoryQueue::new(Duration::from_secs(60), 5));
            let pipeline = Pipeline::new(
                builder.index().clone(),
                queue.clone() as Arc<dyn BuildQueue>,
                PollConfig::default(),
            );
            let config = HttpConfig::default().with_asset_links(links).unwrap();
            let state = AppState::new(shared.clone(), config)
                .with_catalog(stand_in.catalog(shared.clone()))
                .with_pipeline(Arc::new(pipeline));
            let schematic = Schematic::parse(b"customization: {}\n").unwrap();
            let (id, _, _) = state.schematics().put(&schematic).await.unwrap();

            let worker = builder.clone();
            tokio::spawn(async move {
                loop {
                    if let Err(e) = poll_once(&*queue, &worker, 1, Duration::from_secs(1)).await {
                        eprintln!("builder: {e}");
                    }
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let app = factory_http::image_app(state);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (url, store, builder, id.to_string(), stand_in.kernel().await)
        });
        Self {
            url,
            store,
            builder,
            schematic,
            kernel,
            runtime,
            _stand_in: stand_in,
        }
    }
}

/// Presigned links (no CDN configured): a built asset is a `302` to a SigV4-presigned S3 URL
/// that carries the download name and type; following it gets the release kernel from S3.
#[test]
fn lambda_redirects_to_presigned_s3_urls() {
    let lambda = LambdaImage::start(AssetLinks::Presigned(Duration::from_secs(300)));
    let url = lambda.url.clone();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", lambda.schematic);
    let endpoint = crate::common::localstack_endpoint();
    // Path-style (an endpoint override): <endpoint>/<bucket>/<prefix><key>.
    let bucket_prefix = format!("{}/{}", lambda.store.bucket(), lambda.store.prefix());

    // Cold: built on the request, then downloaded from S3 under the asked name.
    let named = download(&url, &format!("{path}?filename=vmlinuz-talos"));
    assert_eq!(named.status, 200, "{}", named.text());
    assert_same_bytes(&named.body, &lambda.kernel, "presigned download");
    assert_eq!(
        named.header("content-disposition"),
        "attachment; filename=\"vmlinuz-talos\""
    );
    assert_eq!(named.header("content-type"), "application/octet-stream");
    assert_eq!(built_at_least(&lambda.builder.stats(), 1), 1);

    // The redirect itself: to LocalStack, presigned for 300 s, naming the object.
    let assets = lambda.runtime.block_on(lambda.store.list("assets/")).unwrap();
    assert_eq!(assets.len(), 1, "{assets:?}");
    let key = &assets[0];
    let redirect = curl(&url, &[], &format!("{path}?filename=vmlinuz-talos"));
    assert_eq!(redirect.status, 302, "{}", redirect.text());
    let location = redirect.header("location");
    assert!(
        location.starts_with(&format!(
            "{}/{bucket_prefix}{key}?",
            endpoint.trim_end_matches('/')
        )),
        "{location}"
    );
    for part in [
        "X-Amz-Signature=",
        "X-Amz-Expires=300",
        "response-content-disposition=attachment%3B%20filename%3D%22vmlinuz-talos%22",
        "response-content-type=application%2Foctet-stream",
    ] {
        assert!(location.contains(part), "{part} not in {location}");
    }

    // Without ?filename= the download is named after the path.
    let plain = download(&url, &path);
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_same_bytes(&plain.body, &lambda.kernel, "plain presigned download");
    assert_eq!(
        plain.header("content-disposition"),
        "attachment; filename=\"kernel-amd64\""
    );

    // HEAD answers from the record, no redirect; the function has no object route (Lambda
    // responses are capped at 6 MB).
    let head = curl(&url, &["--head"], &path);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), lambda.kernel.len().to_string());
    assert_eq!(curl(&url, &[], &format!("/{key}")).status, 404);
    assert_eq!(lambda.builder.stats().built(), 1, "built once");
}

/// A CDN base: the redirect is exactly `<base>/<object key>?filename=<name>`.
#[test]
fn lambda_redirects_to_the_cdn() {
    let lambda = LambdaImage::start(AssetLinks::Cdn("https://cdn.example/".to_owned()));
    let url = lambda.url.clone();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", lambda.schematic);
    let sha256 = hex::encode(Sha256::digest(&lambda.kernel));

    // Not -L (the CDN is made up); --retry covers the 503 while it builds.
    let first = curl(
        &url,
        &["--retry", "20"],
        &format!("{path}?filename=vmlinuz-talos"),
    );
    assert_eq!(first.status, 302, "{}", first.text());
    let assets = lambda.runtime.block_on(lambda.store.list("assets/")).unwrap();
    assert_eq!(assets.len(), 1, "{assets:?}");
    let (cache_key, object_sha, name) = asset_key_parts(&assets[0]);
    assert_eq!(
        (object_sha.as_str(), name.as_str()),
        (sha256.as_str(), "kernel-amd64")
    );
    assert_eq!(
        first.header("location"),
        format!("https://cdn.example/assets/{cache_key}/{sha256}/kernel-amd64?filename=vmlinuz-talos")
    );
    let plain = curl(&url, &[], &path);
    assert_eq!(plain.status, 302);
    assert_eq!(
        plain.header("location"),
        format!("https://cdn.example/assets/{cache_key}/{sha256}/kernel-amd64")
    );
    assert_eq!(built_at_least(&lambda.builder.stats(), 1), 1);
}

/// The wait budget through the serverless stack, measured: with nothing building (the queue's
/// pollers off, as when the builders are backed up), a cold image request and a cold registry
/// manifest request each wait out `FACTORY_IMAGE_WAIT_SECONDS` (20 s in template.yaml) and answer
/// 503 with `Retry-After` themselves, inside the function's `Timeout` (28 s) and well before API
/// Gateway's 29 s would cut them off with its own 503 (no `Retry-After`, no factory message). The
/// margin is printed (docs/serverless.md).
#[test]
fn stack_wait_budget_ends_before_api_gateway_does() {
    use std::time::{Duration, Instant};
    const BUDGET: Duration = Duration::from_secs(20);
    const API_GATEWAY: Duration = Duration::from_secs(29);
    let stand_in = StandIn::generate();
    let stack = crate::common::stack::StackThread::start_without_builders(&stand_in);
    let url = stack.url().to_owned();
    let id = crate::common::curl::curl(
        &url,
        &[
            "-X",
            "POST",
            "--data-binary",
            "customization:\n  extraKernelArgs: [budget]\n",
        ],
        "/schematics",
    );
    assert_eq!(id.status, 201, "{}", id.text());
    let id = id.json()["id"].as_str().expect("id").to_owned();
    let paths = [
        format!("/image/{id}/{VERSION}/kernel-amd64"),
        format!("/v2/metal-installer/{id}/manifests/{VERSION}"),
    ];
    let answers: Vec<(String, crate::common::curl::Reply, Duration)> = std::thread::scope(|scope| {
        let waits: Vec<_> = paths
            .iter()
            .map(|path| {
                let url = url.clone();
                scope.spawn(move || {
                    let started = Instant::now();
                    let reply = curl(&url, &[], path);
                    (path.clone(), reply, started.elapsed())
                })
            })
            .collect();
        waits.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (path, reply, took) in answers {
        assert_eq!(reply.status, 503, "{path}: {}", reply.text());
        assert!(
            !reply.header("retry-after").is_empty(),
            "{path}: the factory's own 503 carries Retry-After: {:?}",
            reply.headers
        );
        assert!(
            took >= BUDGET,
            "{path}: answered after {took:?}, before its budget"
        );
        assert!(
            took < API_GATEWAY,
            "{path}: answered after {took:?}, past API Gateway's limit"
        );
        eprintln!(
            "{path}: 503 after {:.2} s: {:.2} s over the budget, {:.2} s under API Gateway's 29 s",
            took.as_secs_f64(),
            (took - BUDGET).as_secs_f64(),
            (API_GATEWAY - took).as_secs_f64()
        );
    }
}
