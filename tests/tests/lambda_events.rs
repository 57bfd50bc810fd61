//! The Lambda functions' HTTP code path, fed with checked-in API Gateway (HTTP API, payload 2.0)
//! and Function URL events: event JSON → `lambda_http::request::from_str` → the function's router
//! (`tower::ServiceExt::oneshot`) → `lambda_http::IntoResponse`, which is what `lambda_http::run`
//! does with every invocation. Only the runtime API loop is left out.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use factory_http::{AppState, HttpConfig};
use factory_signing::SigningKey;
use factory_store::fs::FsStore;
use http::{header, HeaderMap, StatusCode};
use lambda_http::IntoResponse as _;
use tower::ServiceExt as _;

/// `customization:\n  extraKernelArgs: [noapic, nolapic]` (spec §5.3 conformance vector).
const KERNEL_ARGS_ID: &str = "9cba8e32753f91a16c1837ab8abf356af021706ef284aef07380780177d9a06c";

/// The two functions, over one store, as deployed: each serves only its own routes.
struct Functions {
    schematics: Router,
    keys: Router,
    public_key_pem: String,
    _dir: tempfile::TempDir,
}

fn functions() -> Functions {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsStore::new(dir.path().join("store")).expect("fs store");
    let public_key_pem = SigningKey::generate().public_key_pem();
    let state =
        AppState::new(Arc::new(store), HttpConfig::default()).with_signing_key_pem(public_key_pem.clone());
    Functions {
        schematics: factory_http::schematics_app(state.clone()),
        keys: factory_http::keys_app(state),
        public_key_pem,
        _dir: dir,
    }
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lambda")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A fixture with some fields replaced (to derive error cases from the realistic events).
fn fixture_with(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut event: serde_json::Value = serde_json::from_str(&fixture(name)).expect("fixture is JSON");
    edit(&mut event);
    event.to_string()
}

/// What the function hands back to the Lambda runtime.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: lambda_http::Body,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(self.body.as_ref()).into_owned()
    }
}

async fn invoke(function: &Router, event: &str) -> Answer {
    let request = lambda_http::request::from_str(event).expect("a valid Lambda HTTP event");
    let response = function
        .clone()
        .oneshot(request)
        .await
        .expect("routers are infallible");
    let (parts, body) = response.into_response().await.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn assert_common_headers(answer: &Answer) {
    let server = answer.headers[header::SERVER].to_str().expect("ascii");
    assert!(server.starts_with("Image Factory talos-factory-rs "), "{server}");
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn post_then_get_a_schematic_through_api_gateway_events() {
    let f = functions();

    let created = invoke(&f.schematics, &fixture("apigw_v2_post_schematic.json")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.headers[header::CONTENT_TYPE], "application/json");
    assert_common_headers(&created);
    // JSON goes back to API Gateway as text, not base64.
    assert!(
        matches!(created.body, lambda_http::Body::Text(_)),
        "{:?}",
        created.body
    );
    let json: serde_json::Value = serde_json::from_str(&created.text()).expect("JSON body");
    assert_eq!(json["id"], KERNEL_ARGS_ID);
    assert!(
        created.text().ends_with("}\n"),
        "Go's json.Encoder adds a newline"
    );
    let canonical = json["schematic"]
        .as_str()
        .expect("schematic is a string")
        .to_owned();
    assert!(canonical.contains("noapic"), "{canonical}");

    let fetched = invoke(&f.schematics, &fixture("apigw_v2_get_schematic.json")).await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.text());
    assert_eq!(fetched.headers[header::CONTENT_TYPE], "application/yaml");
    assert_eq!(fetched.text(), canonical);
    // The fixture carries an X-Request-ID: it is echoed, not replaced.
    assert_eq!(
        fetched.headers["x-request-id"],
        "3f1c0a52-7d1e-4c55-9a43-0e2f6b7d8c91"
    );
    assert_common_headers(&fetched);
}

#[tokio::test]
async fn base64_encoded_json_body_is_the_same_schematic() {
    let f = functions();
    let created = invoke(&f.schematics, &fixture("apigw_v2_post_schematic_base64.json")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let json: serde_json::Value = serde_json::from_str(&created.text()).expect("JSON body");
    assert_eq!(
        json["id"], KERNEL_ARGS_ID,
        "JSON is YAML: same canonical form, same ID"
    );

    // Creating it again (the plain YAML event) is idempotent.
    let again = invoke(&f.schematics, &fixture("apigw_v2_post_schematic.json")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    assert_eq!(again.text(), created.text());
}

#[tokio::test]
async fn unknown_schematic_and_bad_bodies_through_events() {
    let f = functions();
    let missing = invoke(&f.schematics, &fixture("apigw_v2_get_schematic.json")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.text(), "schematic not found\n");
    assert_eq!(missing.headers[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    assert_eq!(missing.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");

    let bad = fixture_with("apigw_v2_post_schematic.json", |e| {
        e["body"] = "customization:\n  unknownField: 1\n".into();
        e["headers"]["content-length"] = "31".into();
    });
    let answer = invoke(&f.schematics, &bad).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert!(answer.text().ends_with('\n'));
}

#[tokio::test]
async fn routes_of_another_function_are_not_found() {
    let f = functions();
    // The keys function does not serve schematics (API Gateway routes them elsewhere).
    let answer = invoke(&f.keys, &fixture("apigw_v2_post_schematic.json")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.text(), "404 page not found\n");
    assert_common_headers(&answer);
}

#[tokio::test]
async fn signing_key_through_a_function_url_event_with_cors() {
    let f = functions();
    let answer = invoke(&f.keys, &fixture("function_url_get_signing_key.json")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers[header::CONTENT_TYPE], "application/x-pem-file");
    assert_eq!(answer.text(), f.public_key_pem);
    assert_eq!(answer.headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_common_headers(&answer);

    let wrong_method = fixture_with("function_url_get_signing_key.json", |e| {
        e["requestContext"]["http"]["method"] = "DELETE".into();
    });
    let answer = invoke(&f.keys, &wrong_method).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers[header::ALLOW], "GET,HEAD");
}
