//! The contract of [`ContentStore`], one generic suite run against every adapter:
//! `fs::*` on [`FsStore`] in a temporary directory, `s3::*` on [`S3Store`] in LocalStack (under a
//! unique prefix of the shared test bucket; see `common` for the environment it needs).
#![allow(clippy::unwrap_used)]

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use factory_aws::S3Store;
use factory_store::fs::FsStore;
use factory_store::{ContentStore, ObjectMeta, PutCondition, PutOutcome, StoreError};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// A store under test, and what must live as long as it.
struct Fixture {
    store: Arc<dyn ContentStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn fs_fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path().join("store")).unwrap();
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

async fn s3_fixture() -> Fixture {
    let s3 = crate::common::s3_client().await;
    let bucket = crate::common::test_bucket(&s3).await;
    let prefix = format!("{}/", crate::common::unique_name("store-contract"));
    Fixture {
        store: Arc::new(S3Store::new(s3, bucket, prefix)),
        _dir: None,
    }
}

/// Runs every listed case against every adapter, each case on a fresh, isolated store.
macro_rules! store_suite {
    ($($case:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::fs_fixture().await;
                    super::$case(&*fixture.store).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let fixture = super::s3_fixture().await;
                    super::$case(&*fixture.store).await;
                }
            )*
        }
    };
}

store_suite!(
    absent_objects,
    put_get_roundtrip,
    overwrite_replaces,
    if_absent_writes_once,
    if_match_is_compare_and_swap,
    concurrent_if_absent_has_one_winner,
    stream_large_object,
    failed_stream_changes_nothing,
    list_by_prefix_sorted,
    delete_removes,
    invalid_keys_are_rejected,
);

async fn absent_objects(store: &dyn ContentStore) {
    assert_eq!(store.get("absent/key").await.unwrap(), None);
    assert_eq!(store.head("absent/key").await.unwrap(), None);
    assert!(store.get_stream("absent/key").await.unwrap().is_none());
    store.delete("absent/key").await.unwrap();
    assert!(store.list("absent/").await.unwrap().is_empty());
}

async fn put_get_roundtrip(store: &dyn ContentStore) {
    let body = Bytes::from_static(br#"{"hello":"world"}"#);
    let meta = written(
        store
            .put(
                "docs/hello.json",
                body.clone(),
                Some("application/json"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap(),
    );
    assert_eq!(meta.key, "docs/hello.json");
    assert_eq!(meta.size, body.len() as u64);
    assert_eq!(meta.content_type.as_deref(), Some("application/json"));
    assert!(
        !meta.etag.is_empty() && !meta.etag.contains('"'),
        "etag {:?}",
        meta.etag
    );

    let (got_meta, got) = store.get("docs/hello.json").await.unwrap().unwrap();
    assert_eq!(got, body);
    assert_eq!(got_meta, meta);
    assert_eq!(store.head("docs/hello.json").await.unwrap(), Some(meta.clone()));
    let (stream_meta, stream) = store.get_stream("docs/hello.json").await.unwrap().unwrap();
    assert_eq!(stream_meta, meta);
    assert_eq!(collect(stream).await, body);

    // An empty object is an object.
    let empty = written(
        store
            .put(
                "docs/empty",
                Bytes::new(),
                Some("text/plain"),
                PutCondition::IfAbsent,
            )
            .await
            .unwrap(),
    );
    assert_eq!(empty.size, 0);
    let (meta, got) = store.get("docs/empty").await.unwrap().unwrap();
    assert_eq!((meta.size, got.len()), (0, 0));
}

async fn overwrite_replaces(store: &dyn ContentStore) {
    let first = written(
        store
            .put(
                "k",
                Bytes::from_static(b"version 1"),
                Some("text/plain"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap(),
    );
    let second = written(
        store
            .put(
                "k",
                Bytes::from_static(b"version 2!"),
                Some("text/markdown"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap(),
    );
    assert_ne!(first.etag, second.etag);
    let (meta, body) = store.get("k").await.unwrap().unwrap();
    assert_eq!(&body[..], b"version 2!");
    assert_eq!(meta, second);
}

async fn if_absent_writes_once(store: &dyn ContentStore) {
    let first = written(
        store
            .put(
                "claims/one",
                Bytes::from_static(b"first"),
                None,
                PutCondition::IfAbsent,
            )
            .await
            .unwrap(),
    );
    let again = store
        .put(
            "claims/one",
            Bytes::from_static(b"second"),
            None,
            PutCondition::IfAbsent,
        )
        .await
        .unwrap();
    assert_eq!(again, PutOutcome::ConditionFailed);
    let (meta, body) = store.get("claims/one").await.unwrap().unwrap();
    assert_eq!(&body[..], b"first");
    assert_eq!(meta.etag, first.etag);
}

async fn if_match_is_compare_and_swap(store: &dyn ContentStore) {
    // On an absent key the condition cannot hold.
    let outcome = store
        .put(
            "lease",
            Bytes::from_static(b"x"),
            None,
            PutCondition::IfMatch("0123abcd".into()),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::ConditionFailed);
    assert_eq!(store.head("lease").await.unwrap(), None);

    let v1 = written(
        store
            .put(
                "lease",
                Bytes::from_static(b"v1"),
                Some("text/plain"),
                PutCondition::Overwrite,
            )
            .await
            .unwrap(),
    );
    let v2 = written(
        store
            .put(
                "lease",
                Bytes::from_static(b"v2"),
                Some("text/plain"),
                PutCondition::IfMatch(v1.etag.clone()),
            )
            .await
            .unwrap(),
    );
    assert_ne!(v1.etag, v2.etag);
    // A stale etag loses, and changes nothing.
    let stale = store
        .put(
            "lease",
            Bytes::from_static(b"v3"),
            None,
            PutCondition::IfMatch(v1.etag.clone()),
        )
        .await
        .unwrap();
    assert_eq!(stale, PutOutcome::ConditionFailed);
    let (meta, body) = store.get("lease").await.unwrap().unwrap();
    assert_eq!((&body[..], &meta.etag), (&b"v2"[..], &v2.etag));
    // The current etag wins again.
    written(
        store
            .put(
                "lease",
                Bytes::from_static(b"v4"),
                None,
                PutCondition::IfMatch(v2.etag.clone()),
            )
            .await
            .unwrap(),
    );
    assert_eq!(&store.get("lease").await.unwrap().unwrap().1[..], b"v4");
}

async fn concurrent_if_absent_has_one_winner(store: &dyn ContentStore) {
    const N: usize = 8;
    let attempts = (0..N).map(|i| async move {
        let body = Bytes::from(format!("writer {i}"));
        let outcome = store
            .put("builds/claim", body.clone(), None, PutCondition::IfAbsent)
            .await
            .unwrap();
        (outcome, body)
    });
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results
        .iter()
        .filter(|(outcome, _)| matches!(outcome, PutOutcome::Written(_)))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one IfAbsent put must win: {results:?}");
    let (_, body) = store.get("builds/claim").await.unwrap().unwrap();
    assert_eq!(body, winners[0].1);
}

async fn stream_large_object(store: &dyn ContentStore) {
    // More than two 8 MiB parts, and not a multiple of any buffer size.
    const SIZE: u64 = 20 * 1024 * 1024 + 12_345;
    let expected = {
        let mut hasher = Sha256::new();
        let mut reader = PatternReader::new(7, SIZE);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                .await
                .unwrap();
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        hex::encode(hasher.finalize())
    };

    let meta = store
        .put_stream(
            "images/big.raw",
            Box::new(PatternReader::new(7, SIZE)),
            Some("application/octet-stream"),
        )
        .await
        .unwrap();
    assert_eq!((meta.key.as_str(), meta.size), ("images/big.raw", SIZE));
    assert_eq!(meta.content_type.as_deref(), Some("application/octet-stream"));
    let head = store.head("images/big.raw").await.unwrap().unwrap();
    assert_eq!((head.size, &head.etag), (SIZE, &meta.etag));

    let (got_meta, mut stream) = store.get_stream("images/big.raw").await.unwrap().unwrap();
    assert_eq!(got_meta.size, SIZE);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        size += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(size, SIZE);
    assert_eq!(
        hex::encode(hasher.finalize()),
        expected,
        "streamed content differs"
    );

    // A stream replaces an object, and an empty stream still makes an (empty) object.
    let small = store
        .put_stream("images/big.raw", Box::new(PatternReader::new(1, 1000)), None)
        .await
        .unwrap();
    assert_eq!(small.size, 1000);
    assert_eq!(store.get("images/big.raw").await.unwrap().unwrap().1.len(), 1000);
    let empty = store
        .put_stream("images/empty.raw", Box::new(tokio::io::empty()), None)
        .await
        .unwrap();
    assert_eq!(empty.size, 0);
    let (meta, body) = store.get("images/empty.raw").await.unwrap().unwrap();
    assert_eq!((meta.size, body.len()), (0, 0));
}

async fn failed_stream_changes_nothing(store: &dyn ContentStore) {
    store
        .put(
            "images/kept",
            Bytes::from_static(b"old"),
            Some("text/plain"),
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    // The body breaks after more than one 8 MiB part.
    for key in ["images/kept", "images/new"] {
        let broken = FailingReader {
            inner: PatternReader::new(3, u64::MAX),
            fail_after: 9 * 1024 * 1024,
        };
        let err = store.put_stream(key, Box::new(broken), None).await.unwrap_err();
        assert!(matches!(err, StoreError::Body(_)), "{key}: {err}");
    }
    let (meta, body) = store.get("images/kept").await.unwrap().unwrap();
    assert_eq!(
        (&body[..], meta.content_type.as_deref()),
        (&b"old"[..], Some("text/plain"))
    );
    assert_eq!(store.head("images/new").await.unwrap(), None);
    assert_eq!(store.list("images/").await.unwrap(), ["images/kept"]);
}

async fn list_by_prefix_sorted(store: &dyn ContentStore) {
    for key in ["list/b", "list/a/2", "list/a/1", "list/c.json", "lisz", "other/x"] {
        store
            .put(key, Bytes::from_static(b"."), None, PutCondition::Overwrite)
            .await
            .unwrap();
    }
    assert_eq!(
        store.list("list/").await.unwrap(),
        ["list/a/1", "list/a/2", "list/b", "list/c.json"]
    );
    assert_eq!(store.list("list/a").await.unwrap(), ["list/a/1", "list/a/2"]);
    assert_eq!(
        store.list("lis").await.unwrap(),
        ["list/a/1", "list/a/2", "list/b", "list/c.json", "lisz"]
    );
    assert_eq!(
        store.list("").await.unwrap(),
        ["list/a/1", "list/a/2", "list/b", "list/c.json", "lisz", "other/x"]
    );
    assert!(store.list("nothing/").await.unwrap().is_empty());
}

async fn delete_removes(store: &dyn ContentStore) {
    store
        .put(
            "gone/soon",
            Bytes::from_static(b"bye"),
            None,
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    store
        .put(
            "gone/stays",
            Bytes::from_static(b"hi"),
            None,
            PutCondition::Overwrite,
        )
        .await
        .unwrap();
    store.delete("gone/soon").await.unwrap();
    assert_eq!(store.get("gone/soon").await.unwrap(), None);
    assert_eq!(store.head("gone/soon").await.unwrap(), None);
    assert_eq!(store.list("gone/").await.unwrap(), ["gone/stays"]);
    store.delete("gone/soon").await.unwrap();
    // The key can be written again, also with IfAbsent.
    written(
        store
            .put(
                "gone/soon",
                Bytes::from_static(b"back"),
                None,
                PutCondition::IfAbsent,
            )
            .await
            .unwrap(),
    );
}

async fn invalid_keys_are_rejected(store: &dyn ContentStore) {
    for key in [
        "",
        "/abs",
        "a/../b",
        "..",
        ".",
        "./a",
        "a/./b",
        "a\\b",
        "a\0b",
        "a//b",
        "trailing/",
    ] {
        let invalid = |r: Result<(), StoreError>| matches!(r, Err(StoreError::InvalidKey(_)));
        assert!(invalid(store.get(key).await.map(drop)), "get {key:?}");
        assert!(invalid(store.head(key).await.map(drop)), "head {key:?}");
        assert!(
            invalid(store.get_stream(key).await.map(drop)),
            "get_stream {key:?}"
        );
        assert!(invalid(store.delete(key).await), "delete {key:?}");
        let put = store
            .put(key, Bytes::from_static(b"x"), None, PutCondition::Overwrite)
            .await
            .map(drop);
        assert!(invalid(put), "put {key:?}");
        let put_stream = store
            .put_stream(key, Box::new(tokio::io::empty()), None)
            .await
            .map(drop);
        assert!(invalid(put_stream), "put_stream {key:?}");
    }
    assert!(
        store.list("").await.unwrap().is_empty(),
        "nothing may have been written"
    );
}

fn written(outcome: PutOutcome) -> ObjectMeta {
    match outcome {
        PutOutcome::Written(meta) => meta,
        PutOutcome::ConditionFailed => panic!("expected the write to happen"),
    }
}

async fn collect(mut stream: factory_store::ByteStream) -> Bytes {
    let mut all = Vec::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    Bytes::from(all)
}

/// `len` pseudo-random bytes from `seed`, generated on the fly (never held in memory). The bytes
/// depend only on their position, not on how the reader is called.
struct PatternReader {
    seed: u64,
    pos: u64,
    len: u64,
}

impl PatternReader {
    fn new(seed: u64, len: u64) -> Self {
        Self { seed, pos: 0, len }
    }
}

/// splitmix64 of one 8-byte word index.
fn pattern_word(seed: u64, index: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

impl AsyncRead for PatternReader {
    fn poll_read(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Odd-sized reads, to exercise the stores' buffering.
        let n = (buf.remaining() as u64).min(this.len - this.pos).min(100_003) as usize;
        let out = buf.initialize_unfilled_to(n);
        let mut word = pattern_word(this.seed, this.pos / 8);
        for byte in out.iter_mut() {
            if this.pos % 8 == 0 {
                word = pattern_word(this.seed, this.pos / 8);
            }
            *byte = word[(this.pos % 8) as usize];
            this.pos += 1;
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// A reader that fails with an I/O error after `fail_after` bytes.
struct FailingReader {
    inner: PatternReader,
    fail_after: u64,
}

impl AsyncRead for FailingReader {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.inner.pos >= this.fail_after {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "client went away",
            )));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

/// S3 only: a failed streaming upload leaves no incomplete multipart upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_failed_stream_aborts_the_multipart_upload() {
    let s3 = crate::common::s3_client().await;
    let bucket = crate::common::test_bucket(&s3).await;
    let store = S3Store::new(s3.clone(), bucket.clone(), crate::common::unique_name("abort"));
    let broken = FailingReader {
        inner: PatternReader::new(5, u64::MAX),
        fail_after: 17 * 1024 * 1024,
    };
    store.put_stream("big", Box::new(broken), None).await.unwrap_err();
    let uploads = s3
        .list_multipart_uploads()
        .bucket(&bucket)
        .prefix(store.prefix())
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "left over: {:?}", uploads.uploads());
}
