//! `RegistrySource` against a tiny in-test registry that insists on the anonymous bearer-token
//! flow (as ghcr.io does), paginates tags with `Link` headers only, and misbehaves on request.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use factory_upstream::digest::sha256_digest;
use factory_upstream::{OciSource, RegistrySource, UpstreamError};
use tokio::io::AsyncReadExt as _;

const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];
const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":2},"layers":[]}"#;
const BLOB: &[u8] = b"blob content";

#[derive(Default)]
struct Server {
    port: AtomicUsize,
    /// Tokens are `token-<generation>`; bumping it expires the tokens handed out.
    generation: AtomicUsize,
    token_requests: AtomicUsize,
}

fn response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r
}

fn query(request: &Request) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

async fn handle(State(server): State<Arc<Server>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let token = format!("token-{}", server.generation.load(Ordering::SeqCst));
    if path == "/token" {
        server.token_requests.fetch_add(1, Ordering::SeqCst);
        let q = query(&request);
        if q.get("service").map(String::as_str) != Some("test-registry") {
            return response(StatusCode::BAD_REQUEST, "bad service");
        }
        return match q.get("scope").map(String::as_str) {
            Some("repository:proxy/denied/image:pull") => response(StatusCode::FORBIDDEN, "denied"),
            Some(scope) if scope.starts_with("repository:proxy/") => response(
                StatusCode::OK,
                format!(r#"{{"token":"{token}","expires_in":300}}"#),
            ),
            _ => response(StatusCode::BAD_REQUEST, "bad scope"),
        };
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return response(StatusCode::NOT_FOUND, "");
    };
    let repository = ["/tags/", "/manifests/", "/blobs/"]
        .iter()
        .find_map(|s| rest.split_once(s).map(|(r, _)| r));
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {token}").as_str());
    if !authorized {
        let port = server.port.load(Ordering::SeqCst);
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="test-registry",scope="repository:{}:pull""#,
            repository.unwrap_or_default()
        );
        let mut r = response(
            StatusCode::UNAUTHORIZED,
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("header"),
        );
        return r;
    }
    match rest {
        "proxy/siderolabs/imager/tags/list" => tags_page(&request),
        "proxy/siderolabs/imager/manifests/good" => manifest(MANIFEST, &sha256_digest(MANIFEST.as_bytes())),
        "proxy/siderolabs/imager/manifests/lying" => manifest(MANIFEST, &sha256_digest(b"other")),
        "proxy/siderolabs/imager/manifests/broken" => response(StatusCode::INTERNAL_SERVER_ERROR, "oops"),
        r if r.starts_with("proxy/siderolabs/imager/manifests/sha256:") => manifest(MANIFEST, ""),
        r if r == format!("proxy/siderolabs/imager/blobs/{}", sha256_digest(BLOB)) => {
            response(StatusCode::OK, BLOB.to_vec())
        }
        _ => response(
            StatusCode::NOT_FOUND,
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        ),
    }
}

/// Pages of `n` tags after `last`, with a `Link` to the next page. The `last` fallback of the
/// client is never needed here.
fn tags_page(request: &Request) -> Response {
    let q = query(request);
    let n: usize = q.get("n").and_then(|n| n.parse().ok()).unwrap_or(100);
    let start = q
        .get("last")
        .and_then(|l| TAGS.iter().position(|t| t == l))
        .map(|i| i + 1)
        .unwrap_or(0);
    let page: Vec<&str> = TAGS.iter().skip(start).take(n).copied().collect();
    let mut r = response(
        StatusCode::OK,
        serde_json::json!({"name": "x", "tags": page}).to_string(),
    );
    if start + n < TAGS.len() {
        let last = page.last().copied().unwrap_or_default();
        let link = format!(r#"</v2/proxy/siderolabs/imager/tags/list?n={n}&last={last}>; rel="next""#);
        r.headers_mut()
            .insert(header::LINK, HeaderValue::from_str(&link).expect("header"));
    }
    r
}

fn manifest(body: &str, digest_header: &str) -> Response {
    let mut r = response(StatusCode::OK, body.to_string());
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
    );
    if !digest_header.is_empty() {
        headers.insert(
            "docker-content-digest",
            HeaderValue::from_str(digest_header).expect("header"),
        );
    }
    r
}

async fn start() -> (Arc<Server>, RegistrySource) {
    let server = Arc::new(Server::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    server.port.store(port as usize, Ordering::SeqCst);
    let app = Router::new().fallback(handle).with_state(server.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let source = RegistrySource::new(&format!("http://127.0.0.1:{port}"), "proxy")
        .expect("source")
        .with_page_size(2);
    (server, source)
}

#[tokio::test]
async fn bearer_token_flow_pagination_and_errors() {
    let (server, source) = start().await;

    let tags = source.list_tags("siderolabs/imager").await.expect("tags");
    assert_eq!(tags, TAGS, "three pages followed through Link headers");
    assert_eq!(
        server.token_requests.load(Ordering::SeqCst),
        1,
        "one token, reused for every page"
    );

    let good = source
        .manifest("siderolabs/imager", "good")
        .await
        .expect("manifest");
    assert_eq!(good.digest, sha256_digest(MANIFEST.as_bytes()));
    assert_eq!(good.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(good.bytes, MANIFEST.as_bytes());
    assert_eq!(
        server.token_requests.load(Ordering::SeqCst),
        1,
        "the cached token is reused"
    );

    let mut blob = source
        .blob("siderolabs/imager", &sha256_digest(BLOB))
        .await
        .expect("blob");
    let mut content = Vec::new();
    blob.read_to_end(&mut content).await.expect("read blob");
    assert_eq!(content, BLOB);

    // The registry expires its tokens: the client fetches a new one once and retries.
    server.generation.fetch_add(1, Ordering::SeqCst);
    source
        .manifest("siderolabs/imager", "good")
        .await
        .expect("after token expiry");
    assert_eq!(server.token_requests.load(Ordering::SeqCst), 2);

    match source.manifest("siderolabs/imager", "lying").await {
        Err(UpstreamError::Invalid { reason, .. }) => assert!(reason.contains("hash to"), "{reason}"),
        other => panic!("a Docker-Content-Digest that disagrees with the bytes: {other:?}"),
    }
    let wrong = sha256_digest(b"not this manifest");
    match source.manifest("siderolabs/imager", &wrong).await {
        Err(UpstreamError::Invalid { reason, .. }) => assert!(reason.contains("digest mismatch"), "{reason}"),
        other => panic!("bytes that do not match the requested digest: {other:?}"),
    }
    assert!(matches!(
        source.manifest("siderolabs/imager", "missing").await,
        Err(UpstreamError::NotFound(_))
    ));
    match source.manifest("siderolabs/imager", "broken").await {
        Err(UpstreamError::Unavailable { source_name, message }) => {
            assert!(
                source_name.starts_with("registry http://127.0.0.1:"),
                "{source_name}"
            );
            assert!(message.contains("500"), "{message}");
        }
        other => panic!("a 500: {other:?}"),
    }
    match source.list_tags("denied/image").await {
        Err(UpstreamError::Unavailable { message, .. }) => assert!(message.contains("403"), "{message}"),
        other => panic!("a refused token: {other:?}"),
    }
    assert!(matches!(
        source.manifest("siderolabs/imager", "bad/tag").await,
        Err(UpstreamError::NotFound(_))
    ));
}
