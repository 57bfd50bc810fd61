//! What a warm request costs the content store and the upstream (issue 14 §4): the local server
//! counts every request it makes of both (the same `AppState`, pipeline and catalog code the
//! Lambda functions run, where each store request is an S3 round trip and each upstream request
//! one to the registry).
//!
//! * A warm hit of the image route — asset built, process warm — makes **no** store request
//!   and none upstream: the schematic, the version list, the tag's verified digest and the
//!   signed index record come from the process's memos (each verified when it was read), and
//!   the `HEAD` that the object is still what was published is trusted for the object recheck
//!   interval (10 s by default: at most one `HEAD` per interval, however many hits).
//! * After the interval, the next hit checks again: an object deleted behind the server's back
//!   is noticed and rebuilt.
//! * Schematic reads, PXE scripts and the catalogs make none at all once warm.

use std::sync::atomic::Ordering;

use crate::common::curl::curl;
use crate::common::image::{download, Backend, ImageServer};
use crate::common::stand_in::VERSION;

/// Warm requests of each route, this many times.
const WARM: u64 = 20;

fn warm_requests_cost_no_store_request(backend: Backend) {
    let server = ImageServer::start(backend);
    let url = server.url().to_owned();
    let id = server.fresh_schematic();
    let path = format!("/image/{id}/{VERSION}/kernel-amd64");
    let first = download(&url, &path);
    assert_eq!(first.status, 200, "cold build: {}", first.text());
    let counts = server.request_counts().expect("the local server counts").clone();

    // Every other route once, cold, so that only warm requests are counted below.
    let others = [
        format!("/schematics/{id}"),
        format!("/pxe/{id}/{VERSION}/metal-amd64"),
        "/versions".to_owned(),
        format!("/version/{VERSION}/extensions/official"),
        format!("/version/{VERSION}/overlays/official"),
    ];
    // What the CDN may keep of each (shared/factory-http/src/cache_control.rs).
    let expected_caching = [
        "public, max-age=31536000, immutable",
        "public, max-age=3600",
        "public, max-age=300",
        "public, max-age=3600",
        "public, max-age=3600",
    ];
    for (other, caching) in others.iter().zip(expected_caching) {
        let reply = curl(&url, &[], other);
        assert_eq!(reply.status, 200, "{other}: {}", reply.text());
        assert_eq!(reply.header("cache-control"), caching, "{other}");
    }
    let redirect = curl(&url, &[], &path);
    assert_eq!(
        redirect.header("cache-control"),
        "public, max-age=300",
        "the redirect"
    );
    let missing = curl(
        &url,
        &[],
        &format!("/image/{}/{VERSION}/kernel-amd64", "0".repeat(64)),
    );
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.header("cache-control"),
        "no-store",
        "errors are never kept"
    );

    let store_before = counts.store.requests();
    let heads_before = counts.store.head.load(Ordering::Relaxed);
    let upstream_before = counts.upstream.requests();
    for _ in 0..WARM {
        let reply = curl(&url, &[], &path);
        assert_eq!(reply.status, 302, "warm hit: {}", reply.text());
    }
    let head = curl(&url, &["-I"], &path);
    assert_eq!(head.status, 200, "HEAD of the image");
    let checksum = curl(&url, &[], &format!("{path}.sha256"));
    assert_eq!(checksum.status, 200, "checksum: {}", checksum.text());
    let store_used = counts.store.requests() - store_before;
    let heads = counts.store.head.load(Ordering::Relaxed) - heads_before;
    // The cold build checked the object a moment ago; the interval (10 s) may run out once during
    // these requests on a slow machine, not twice.
    assert!(
        store_used <= 1,
        "{} warm image requests made {store_used} store requests, at most one HEAD expected (all counters now: {})",
        WARM + 2,
        counts.store.summary()
    );
    assert_eq!(heads, store_used, "and that one is the object's HEAD");
    assert_eq!(
        counts.upstream.requests() - upstream_before,
        0,
        "no upstream request for a warm hit"
    );

    let store_before = counts.store.requests();
    for _ in 0..WARM {
        for other in &others {
            let reply = curl(&url, &[], other);
            assert_eq!(reply.status, 200, "{other}: {}", reply.text());
        }
    }
    assert_eq!(
        counts.store.requests() - store_before,
        0,
        "warm schematic, PXE and catalog requests ask the store nothing ({})",
        counts.store.summary()
    );
    assert_eq!(counts.upstream.requests() - upstream_before, 0);
}

mod fs {
    #[test]
    fn warm_requests_cost_no_store_request() {
        super::warm_requests_cost_no_store_request(super::Backend::Fs);
    }
}

mod s3 {
    #[test]
    fn warm_requests_cost_no_store_request() {
        super::warm_requests_cost_no_store_request(super::Backend::S3);
    }
}

/// With a short recheck interval: a warm hit within it asks the store nothing, even though the
/// object was deleted behind the server's back (the redirect goes out, as the CDN's kept copy
/// would); the first hit after it checks, finds the object gone and rebuilds it.
#[test]
fn deleted_object_is_noticed_after_the_recheck_interval() {
    const RECHECK_SECONDS: u64 = 2;
    let server = ImageServer::start_with(Backend::Fs, |options| {
        options.object_recheck_seconds = RECHECK_SECONDS;
    });
    let url = server.url().to_owned();
    let path = format!("/image/{}/{VERSION}/kernel-amd64", server.fresh_schematic());
    let kernel = server.release_kernel();
    let first = download(&url, &path);
    assert_eq!(first.status, 200, "cold build: {}", first.text());
    let checked_at = std::time::Instant::now();
    let counts = server.request_counts().expect("the local server counts").clone();
    let object = crate::common::image::redirect_key(&curl(&url, &[], &path));
    server
        .block_on(server.store().delete(&object))
        .expect("delete the object");

    let store_before = counts.store.requests();
    let within = curl(&url, &[], &path);
    assert!(
        checked_at.elapsed() < std::time::Duration::from_secs(RECHECK_SECONDS) / 2,
        "the test took longer than the interval it tests; nothing was shown"
    );
    assert_eq!(
        within.status,
        302,
        "trusted within the interval: {}",
        within.text()
    );
    assert_eq!(
        counts.store.requests() - store_before,
        0,
        "no store request within the interval"
    );
    assert_eq!(server.built(), 1);

    std::thread::sleep(
        std::time::Duration::from_secs(RECHECK_SECONDS) + std::time::Duration::from_millis(200),
    );
    let after = download(&url, &path);
    assert_eq!(after.status, 200, "after the interval: {}", after.text());
    crate::common::image::assert_same_bytes(&after.body, &kernel, "rebuilt");
    assert_eq!(
        server.built_at_least(2),
        2,
        "checked again, found gone, rebuilt once"
    );
}
