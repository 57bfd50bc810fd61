//! Router behaviour through `oneshot`, over an in-memory store.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::body::Body;
use bytes::Bytes;
use factory_core::schematic::Schematic;
use factory_store::{ByteStream, ContentStore, ObjectMeta, PutCondition, PutOutcome, StoreError};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// Just enough of a store for the routes: objects in a map, `fail` to simulate an outage.
#[derive(Debug, Default)]
struct MapStore {
    objects: Mutex<BTreeMap<String, Bytes>>,
    fail: bool,
}

impl MapStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.fail {
            Err(StoreError::Backend(
                "simulated outage of bucket secret-bucket".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn meta(key: &str, body: &Bytes) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size: body.len() as u64,
            etag: String::new(),
            content_type: None,
        }
    }
}

#[async_trait]
impl ContentStore for MapStore {
    async fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError> {
        self.check()?;
        let objects = self
            .objects
            .lock()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(objects.get(key).map(|b| (Self::meta(key, b), b.clone())))
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        Ok(self.get(key).await?.map(|(m, _)| m))
    }
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        _content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        self.check()?;
        let mut objects = self
            .objects
            .lock()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        if condition == PutCondition::IfAbsent && objects.contains_key(key) {
            return Ok(PutOutcome::ConditionFailed);
        }
        let meta = Self::meta(key, &body);
        objects.insert(key.into(), body);
        Ok(PutOutcome::Written(meta))
    }
    async fn put_stream(
        &self,
        _key: &str,
        _body: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
        _content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        Err(StoreError::Backend("not needed by these tests".into()))
    }
    async fn get_stream(&self, _key: &str) -> Result<Option<(ObjectMeta, ByteStream)>, StoreError> {
        Err(StoreError::Backend("not needed by these tests".into()))
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check()?;
        self.objects
            .lock()
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .remove(key);
        Ok(())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.check()?;
        let objects = self
            .objects
            .lock()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

const EMPTY_ID: &str = "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba";

fn state_with(store: MapStore) -> AppState {
    AppState::new(Arc::new(store), HttpConfig::default()).with_signing_key_pem("PEM\n")
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let response = app(state.clone()).oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into(),
    }
}

fn request(method: &str, uri: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn stored_schematics_are_served_as_yaml() {
    let state = state_with(MapStore::default());
    let (id, canonical, first) = state.schematics().put(&Schematic::default()).await.expect("put");
    assert_eq!((id.as_str(), first), (EMPTY_ID, PutResult::Created));
    let (_, _, second) = state
        .schematics()
        .put(&Schematic::default())
        .await
        .expect("put again");
    assert_eq!(second, PutResult::AlreadyExisted);

    let answer = send(
        &state,
        request("GET", &format!("/schematics/{EMPTY_ID}"), Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/yaml");
    assert_eq!(answer.body, canonical);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let state = state_with(MapStore::default());
    for id in [EMPTY_ID, "aaaaaaaaaaaa", &EMPTY_ID.to_uppercase(), "%ff%fe"] {
        let answer = send(
            &state,
            request("GET", &format!("/schematics/{id}"), Body::empty()),
        )
        .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{id}");
        assert_eq!(answer.body, "schematic not found\n");
        assert_eq!(answer.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    }
}

#[tokio::test]
async fn unparsable_schematics_are_client_errors() {
    let state = state_with(MapStore::default());
    // Whatever the parser says about this body, it is the client's fault: 400, never 5xx.
    let answer = send(&state, request("POST", "/schematics", "something: {}\n")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.body.ends_with('\n') && answer.body.len() > 1);
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let state = state_with(MapStore::default());
    let big = vec![b'a'; MAX_SCHEMATIC_BODY + 1];
    let answer = send(&state, request("POST", "/schematics", big.clone())).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        answer.body,
        format!("request body too large: the limit is {MAX_SCHEMATIC_BODY} bytes\n")
    );

    // Same when the size is declared up front.
    let declared = Request::builder()
        .method("POST")
        .uri("/schematics")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big))
        .expect("request");
    assert_eq!(send(&state, declared).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn every_response_has_server_and_request_id() {
    let state = state_with(MapStore::default());
    let answer = send(&state, request("GET", "/nope", Body::empty())).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.body, "404 page not found\n");
    assert!(answer.headers[header::SERVER]
        .to_str()
        .expect("ascii")
        .starts_with("Image Factory talos-factory-rs"));
    let id = answer.headers[REQUEST_ID_HEADER].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");

    let echoed = Request::builder()
        .uri("/healthz")
        .header("X-Request-ID", "abc-123")
        .body(Body::empty());
    let answer = send(&state, echoed.expect("request")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[REQUEST_ID_HEADER], "abc-123");
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let state = state_with(MapStore::default());
    let answer = send(&state, request("DELETE", "/schematics", Body::empty())).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers[header::ALLOW], "POST");
    assert_eq!(
        answer.body,
        "method DELETE is not allowed for /schematics; see the Allow header\n"
    );

    let answer = send(&state, request("POST", "/healthz", Body::empty())).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers[header::ALLOW], "GET,HEAD");

    // A plain OPTIONS (not a preflight) is answered by the router, as Go's httprouter does.
    let answer = send(&state, request("OPTIONS", "/schematics", Body::empty())).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::ALLOW], "POST");
}

#[tokio::test]
async fn cors_preflight_and_simple_requests() {
    let state = state_with(MapStore::default());
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri(format!("/schematics/{EMPTY_ID}"))
        .header(header::ORIGIN, "https://foo.com")
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "cache-control")
        .body(Body::empty())
        .expect("request");
    let answer = send(&state, preflight).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_METHODS], "GET");
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
        "cache-control"
    );
    assert!(answer.headers.contains_key(header::SERVER));
    assert!(answer.headers.contains_key(REQUEST_ID_HEADER));

    let simple = Request::builder()
        .uri("/oci/cosign/signing-key.pub")
        .header(header::ORIGIN, "https://foo.com")
        .body(Body::empty())
        .expect("request");
    let answer = send(&state, simple).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/x-pem-file");
    assert_eq!(answer.body, "PEM\n");
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(
        answer.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "Content-Disposition, Content-Length, Content-Type"
    );
}

#[tokio::test]
async fn health_and_readiness() {
    let healthy = state_with(MapStore::default());
    for path in ["/healthz", "/readyz"] {
        for method in ["GET", "HEAD"] {
            let answer = send(&healthy, request(method, path, Body::empty())).await;
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (StatusCode::OK, ""),
                "{method} {path}"
            );
        }
    }

    let broken = state_with(MapStore {
        fail: true,
        ..MapStore::default()
    });
    assert_eq!(
        send(&broken, request("GET", "/healthz", Body::empty()))
            .await
            .status,
        StatusCode::OK
    );
    let answer = send(&broken, request("GET", "/readyz", Body::empty())).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    );
}

#[tokio::test]
async fn store_outages_are_generic_500s() {
    let state = state_with(MapStore {
        fail: true,
        ..MapStore::default()
    });
    let answer = send(
        &state,
        request("GET", &format!("/schematics/{EMPTY_ID}"), Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.body, "internal server error\n");
}

#[tokio::test]
async fn missing_signing_key_is_a_server_error() {
    let state = AppState::new(Arc::new(MapStore::default()), HttpConfig::default());
    let answer = send(
        &state,
        request("GET", "/oci/cosign/signing-key.pub", Body::empty()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
}
