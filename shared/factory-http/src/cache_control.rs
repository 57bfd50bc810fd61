//! `Cache-Control` of the API's answers: what a CDN in front of the factory (CloudFront in
//! `template.yaml`, whose API behaviour honours these headers and caches nothing without one)
//! and clients may keep, and for how long. The Go factory sets none; these let the CDN absorb
//! repeats (a rack of machines booting the same PXE script and kernel) without the functions.
//!
//! Each TTL is bounded by what could change the answer:
//! * [`IMMUTABLE`]: a schematic by its ID is its content address: it cannot change.
//! * [`CATALOG`]: a release's extensions and overlays never change once published; what can
//!   change the answer is the factory's configuration (a version marked broken), so an hour.
//! * [`VERSIONS`]: a new release appears upstream at any time; the factory itself re-reads the
//!   list every 15 minutes, so 5 more minutes at the edge keep a new release's delay small.
//! * [`PXE`]: a script is rendered from the schematic, the version and configuration (URLs):
//!   an hour.
//! * [`ASSET_LINK`]: the redirect to a published asset (and its `HEAD` and checksum answers)
//!   names an object by its content; the mapping changes only if the object is found gone or
//!   altered and is rebuilt, or the version's imager is re-tagged upstream: 5 minutes bounds how
//!   long the edge can send clients to a removed object.
//! * [`NO_STORE`]: errors (a `404` for a schematic about to be created, a `503` while a build
//!   runs, whose `Retry-After` must reach the client) and presigned redirects (their URLs
//!   expire and are per-request).

use http::header::CACHE_CONTROL;
use http::HeaderValue;

pub const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
pub const CATALOG: HeaderValue = HeaderValue::from_static("public, max-age=3600");
pub const VERSIONS: HeaderValue = HeaderValue::from_static("public, max-age=300");
pub const PXE: HeaderValue = HeaderValue::from_static("public, max-age=3600");
pub const ASSET_LINK: HeaderValue = HeaderValue::from_static("public, max-age=300");
pub const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Sets `value` as the response's `Cache-Control`.
pub fn set(response: &mut axum::response::Response, value: HeaderValue) {
    response.headers_mut().insert(CACHE_CONTROL, value);
}

/// `response` with `value` as its `Cache-Control`.
pub fn with(mut response: axum::response::Response, value: HeaderValue) -> axum::response::Response {
    set(&mut response, value);
    response
}
