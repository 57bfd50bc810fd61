//! The image route under test: `image-factory-local` over the stand-in release
//! ([`super::stand_in`]) on either backend, with a handle on its content store (to look at or
//! tamper with what it stored) and its builder's counters; plus the curl helpers these tests
//! share. [`backend_tests!`](crate::common::image::backend_tests) runs a check on both backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use factory_aws::S3Store;
use factory_pipeline::{BuildStats, Index};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use factory_store::ContentStore;
use sha2::{Digest, Sha256};

use super::curl::{curl, Reply};
use super::local_server::LocalServerThread;
use super::stack::StackThread;
use super::stand_in::StandIn;

/// The content store behind the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded filesystem store in the data directory.
    Fs,
    /// `--aws`: S3 on LocalStack (the shared test bucket, under a prefix unique to the test) and
    /// whatever build queue the local server uses with it (named uniquely for the test).
    S3,
    /// Not the local server: the serverless stack of template.yaml ([`super::stack`]), every
    /// function's release binary under the Lambda Runtime API emulator behind the template's
    /// CDN and HTTP API, on LocalStack (a bucket and queues of its own).
    Stack,
}

/// Defines `mod fs` and `mod s3`, each with one `#[test]` per listed check; a check is a
/// function `fn(Backend)` of the calling test file.
#[allow(unused_macros)]
macro_rules! backend_tests {
    ($($check:ident),* $(,)?) => {
        mod fs {
            $(
                #[test]
                fn $check() {
                    super::$check($crate::common::image::Backend::Fs);
                }
            )*
        }
        mod s3 {
            $(
                #[test]
                fn $check() {
                    super::$check($crate::common::image::Backend::S3);
                }
            )*
        }
        mod stack {
            $(
                #[test]
                fn $check() {
                    super::$check($crate::common::image::Backend::Stack);
                }
            )*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

/// What serves the factory in a test.
#[derive(Debug)]
enum Server {
    Local(LocalServerThread),
    Stack(Box<StackThread>),
}

/// A running `image-factory-local` (or the serverless stack) reading a freshly generated
/// stand-in release; stopped on drop.
#[derive(Debug)]
pub struct ImageServer {
    // Dropped in this order: the server stops before its data goes away.
    server: Server,
    stats: Option<Arc<BuildStats>>,
    store: Arc<dyn ContentStore>,
    index: Index,
    runtime: tokio::runtime::Runtime,
    stand_in: StandIn,
    _data: tempfile::TempDir,
}

impl ImageServer {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {})
    }

    /// As [`Self::start`], checking the object of a published asset on every request (object
    /// recheck interval zero, `--object-recheck-seconds 0`): what the tests that alter stored
    /// objects behind the server's back use, so that the very next request notices.
    pub fn start_checking_every_request(backend: Backend) -> Self {
        if backend == Backend::Stack {
            return Self::start_stack(&[("ObjectRecheckSeconds", "0")]);
        }
        Self::start_with(backend, |options| options.object_recheck_seconds = 0)
    }

    /// As [`Self::start`], with the options adjusted by `configure` last (the local server's
    /// options: on [`Backend::Stack`], `configure` is not called; use [`Self::start_stack`]).
    pub fn start_with(backend: Backend, configure: impl FnOnce(&mut factory_local::Options)) -> Self {
        if backend == Backend::Stack {
            return Self::start_stack(&[]);
        }
        let stand_in = StandIn::generate();
        let data = tempfile::tempdir().expect("tempdir");
        let mut options = stand_in.options(&data.path().join("data"));
        // The test thread's own runtime for store access (the server runs on another).
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s3 = match backend {
            Backend::Fs | Backend::Stack => None,
            Backend::S3 => {
                super::localstack_endpoint(); // Fails at once, with instructions, when unset.
                let (client, bucket) = runtime.block_on(async {
                    let client = super::s3_client().await;
                    let bucket = super::test_bucket(&client).await;
                    (client, bucket)
                });
                let prefix = format!("{}/", super::unique_name("image"));
                options.aws = true;
                options.bucket.clone_from(&bucket);
                options.prefix.clone_from(&prefix);
                // A build queue of its own too: servers sharing one would build each other's
                // messages into the wrong store.
                options.queue = super::unique_name("image");
                Some(S3Store::new(client, bucket, prefix))
            }
        };
        configure(&mut options);
        let store_dir = options.store_dir();
        let key_path = options.signing_key_path();

        let server = LocalServerThread::start(options, backend == Backend::S3, Duration::from_secs(240));
        let stats = Some(
            server
                .build_stats()
                .expect("the server has a builder (the release catalog is on)"),
        );
        let server = Server::Local(server);
        let store: Arc<dyn ContentStore> = match s3 {
            Some(s3) => Arc::new(s3),
            None => Arc::new(FsStore::new(store_dir).expect("open the server's store")),
        };
        let key = SigningKey::load_or_generate(&key_path).expect("the server's signing key");
        let index = Index::from_public_key_pem(Arc::clone(&store), &key.public_key_pem())
            .expect("index over the server's store");
        Self {
            server,
            stats,
            store,
            index,
            runtime,
            stand_in,
            _data: data,
        }
    }

    /// The serverless stack over the stand-in release, with template `parameters` overridden.
    pub fn start_stack(parameters: &[(&str, &str)]) -> Self {
        let stand_in = StandIn::generate();
        let data = tempfile::tempdir().expect("tempdir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let stack = StackThread::start(&stand_in, parameters);
        let client = runtime.block_on(super::s3_client());
        let store: Arc<dyn ContentStore> =
            Arc::new(S3Store::new(client, stack.bucket().to_owned(), String::new()));
        let index = Index::from_public_key_pem(Arc::clone(&store), &stack.key().public_key_pem())
            .expect("index over the stack's store");
        Self {
            server: Server::Stack(Box::new(stack)),
            stats: None,
            store,
            index,
            runtime,
            stand_in,
            _data: data,
        }
    }

    pub fn url(&self) -> &str {
        match &self.server {
            Server::Local(s) => s.url(),
            Server::Stack(s) => s.url(),
        }
    }

    /// The serverless stack, when this is one (its function logs).
    pub fn stack(&self) -> Option<&StackThread> {
        match &self.server {
            Server::Stack(s) => Some(s),
            Server::Local(_) => None,
        }
    }

    /// How many requests the local server made of its store and of the upstream (`None` for the
    /// stack: its functions count nothing the test can read).
    #[allow(dead_code)] // Not every test binary looks.
    pub fn request_counts(&self) -> Option<&factory_local::RequestCounts> {
        match &self.server {
            Server::Local(s) => Some(s.request_counts()),
            Server::Stack(_) => None,
        }
    }

    /// The server's content store (a second handle on the same directory or bucket prefix).
    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// The index of the server's store, verifying with the server's public key.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Runs store work from the (blocking) test thread.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Assets the server's builder assembled and published so far.
    pub fn built(&self) -> u64 {
        match (&self.stats, &self.server) {
            (Some(stats), _) => stats.built(),
            (None, Server::Stack(stack)) => stack.built(),
            (None, Server::Local(_)) => 0,
        }
    }

    /// [`built_at_least`] of the server's builder.
    pub fn built_at_least(&self, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.built() < n && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.built()
    }

    /// The release kernel `kernel-amd64` must serve.
    pub fn release_kernel(&self) -> Vec<u8> {
        self.block_on(self.stand_in.kernel())
    }

    /// A file of the release's imager image at `version`, e.g. `usr/install/amd64/initramfs.xz`.
    pub fn release_file(&self, version: &str, path: &str) -> Vec<u8> {
        self.block_on(self.stand_in.imager_file(version, path))
    }

    /// Stores a schematic through the API; its ID.
    pub fn post_schematic(&self, yaml: &str) -> String {
        let reply = curl(self.url(), &["-X", "POST", "--data-binary", yaml], "/schematics");
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["id"].as_str().expect("id").to_owned()
    }

    /// A schematic no other test (or earlier run on LocalStack) has: cold caches guaranteed.
    pub fn fresh_schematic(&self) -> String {
        let marker = uuid::Uuid::new_v4().simple();
        self.post_schematic(&format!(
            "customization:\n  extraKernelArgs:\n    - test.run={marker}\n"
        ))
    }

    /// Every key under `prefix` in the server's store.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.block_on(self.store.list(prefix)).expect("list the store")
    }
}

/// Waits (up to a generous bound, for liveness only) until `stats` count `n` published builds,
/// then returns the count: the HTTP answer may reach the client a moment before the builder
/// counts the build it just published.
pub fn built_at_least(stats: &BuildStats, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.built() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stats.built()
}

/// A download as a client does it: follow the redirect, retry while it builds (503).
pub fn download(url: &str, path: &str) -> Reply {
    curl(url, &["-L", "--retry", "20", "--retry-all-errors"], path)
}

/// `reply` is an error answer with `status` whose message contains `part`.
pub fn assert_error(reply: &Reply, status: u16, part: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert!(
        reply.text().contains(part),
        "{part:?} is not in {:?}",
        reply.text()
    );
}

/// Byte equality without dumping megabytes into the failure message.
pub fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}: got {} bytes (sha256 {}), expected {} bytes (sha256 {})",
        actual.len(),
        hex::encode(Sha256::digest(actual)),
        expected.len(),
        hex::encode(Sha256::digest(expected)),
    );
}

/// The store key a redirect points at: the `assets/...` path of its `Location`, without a query.
pub fn redirect_key(reply: &Reply) -> String {
    assert_eq!(reply.status, 302, "{}", reply.text());
    let location = reply.header("location");
    let start = location
        .find("/assets/")
        .unwrap_or_else(|| panic!("Location {location:?} names no asset"));
    let key = &location[start + 1..];
    key.split('?').next().unwrap_or(key).to_owned()
}

/// `assets/<cache key>/<sha256>/<file name>` split into its parts.
pub fn asset_key_parts(key: &str) -> (String, String, String) {
    let parts: Vec<&str> = key.split('/').collect();
    assert!(
        parts.len() == 4 && parts[0] == "assets",
        "not an asset key: {key}"
    );
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

/// What a plain `curl URL` got, also when the transfer failed: its exit code (18 = the body
/// ended short of `Content-Length`) and whatever body arrived.
#[derive(Debug)]
pub struct Transfer {
    pub exit_code: Option<i32>,
    pub body: Vec<u8>,
    pub stderr: String,
}

/// `curl <base_url><path>`, reporting a failed transfer instead of panicking on it.
pub fn transfer(base_url: &str, path: &str) -> Transfer {
    let scratch = tempfile::tempdir().expect("scratch dir");
    let body_file = scratch.path().join("body");
    let output = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "120", "--output"])
        .arg(&body_file)
        .arg(format!("{}{path}", base_url.trim_end_matches('/')))
        .output()
        .expect("the curl CLI is needed by this test (apt-get install curl)");
    Transfer {
        exit_code: output.status.code(),
        body: std::fs::read(&body_file).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
