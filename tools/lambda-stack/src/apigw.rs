//! The HTTP API (API Gateway v2) in front of the functions: routes chosen as API Gateway chooses
//! them from the template's route table, each request turned into the payload-format-2.0 event a
//! Lambda proxy integration receives, each function result turned back into HTTP, and API
//! Gateway's own answers where it gives them (`{"message":"Not Found"}` for no route, 500 for a
//! function error or a malformed result, 503 for an integration that outlived 30 s, 413 for a
//! request body over the 10 MB quota).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use base64::Engine;
use serde_json::{json, Map, Value};

use crate::runtime::LambdaRuntime;
use crate::template::Route;

/// API Gateway's integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP API's request payload quota.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// One compiled route: its segments and the function (runtime name) it invokes.
#[derive(Debug, Clone)]
struct Compiled {
    route: Route,
    segments: Vec<Segment>,
    function: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(String),
    Greedy(String),
}

/// The API: routes and the runtime that runs their functions.
#[derive(Debug, Clone)]
pub struct HttpApi {
    routes: Vec<Compiled>,
    runtime: LambdaRuntime,
    api_id: String,
    domain: String,
}

/// A matched route with its path parameters (percent-decoded, as API Gateway passes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub route_key: String,
    pub function: String,
    pub path_parameters: BTreeMap<String, String>,
}

impl HttpApi {
    /// `routes` with the runtime name of each route's function (`function_names`: logical ID →
    /// function name).
    pub fn new(
        routes: &[Route],
        function_names: &BTreeMap<String, String>,
        runtime: LambdaRuntime,
        api_id: &str,
        region: &str,
    ) -> Self {
        let routes = routes
            .iter()
            .filter_map(|r| {
                let function = function_names.get(&r.function)?.clone();
                let segments = r
                    .path
                    .trim_start_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(v) => match v.strip_suffix('+') {
                            Some(g) => Segment::Greedy(g.to_owned()),
                            None => Segment::Variable(v.to_owned()),
                        },
                        None => Segment::Literal(s.to_owned()),
                    })
                    .collect();
                Some(Compiled {
                    route: r.clone(),
                    segments,
                    function,
                })
            })
            .collect();
        Self {
            routes,
            runtime,
            api_id: api_id.to_owned(),
            domain: format!("{api_id}.execute-api.{region}.amazonaws.com"),
        }
    }

    /// The route API Gateway picks for `method` `raw_path`: a route without variables before one
    /// with variables before a greedy one, a specific method before `ANY`. A trailing slash is
    /// not a segment (`/v2/` is routed as `/v2`).
    pub fn route(&self, method: &Method, raw_path: &str) -> Option<Match> {
        let parts: Vec<&str> = raw_path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut best: Option<((u8, usize, u8), Match)> = None;
        for c in &self.routes {
            if c.route.path == crate::template::DEFAULT_ROUTE {
                continue;
            }
            if c.route.method != "ANY" && c.route.method != method.as_str() {
                continue;
            }
            let Some(params) = match_segments(&c.segments, &parts) else {
                continue;
            };
            let kind = if c.segments.iter().any(|s| matches!(s, Segment::Greedy(_))) {
                0
            } else if c.segments.iter().any(|s| matches!(s, Segment::Variable(_))) {
                1
            } else {
                2
            };
            let literals = c
                .segments
                .iter()
                .filter(|s| matches!(s, Segment::Literal(_)))
                .count();
            let score = (kind, literals, u8::from(c.route.method != "ANY"));
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((
                    score,
                    Match {
                        route_key: c.route.key(),
                        function: c.function.clone(),
                        path_parameters: params,
                    },
                ));
            }
        }
        best.map(|(_, m)| m).or_else(|| {
            // Nothing else matched: the $default route, if there is one.
            self.routes
                .iter()
                .find(|c| c.route.path == crate::template::DEFAULT_ROUTE)
                .map(|c| Match {
                    route_key: c.route.key(),
                    function: c.function.clone(),
                    path_parameters: BTreeMap::new(),
                })
        })
    }

    /// Answers one request as API Gateway would. `source_ip` is the client (or CloudFront).
    pub async fn handle(
        &self,
        method: Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
        source_ip: &str,
    ) -> Response<Body> {
        if body.len() > MAX_REQUEST_BYTES {
            return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
        }
        let raw_path = uri.path();
        let Some(matched) = self.route(&method, raw_path) else {
            return message(StatusCode::NOT_FOUND, "Not Found");
        };
        let request_id = uuid::Uuid::new_v4().to_string();
        let event = self.event(&method, uri, headers, body, source_ip, &matched, &request_id);
        let payload = Bytes::from(event.to_string());
        let outcome = tokio::time::timeout(
            INTEGRATION_TIMEOUT,
            self.runtime.invoke(&matched.function, payload),
        )
        .await;
        let mut response = match outcome {
            Err(_) => message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            Ok(Err(e)) => {
                tracing::warn!(function = %matched.function, route = %matched.route_key, "integration error: {e}");
                message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
            }
            Ok(Ok(result)) => match proxy_result(&result, method == Method::HEAD) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(function = %matched.function, route = %matched.route_key, "malformed Lambda proxy result: {why}");
                    message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                }
            },
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("apigw-requestid", v);
        }
        response
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        body: Bytes,
        source_ip: &str,
        matched: &Match,
        request_id: &str,
    ) -> Value {
        let mut header_map: BTreeMap<String, String> = BTreeMap::new();
        let mut cookies = Vec::new();
        for (name, value) in headers {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if name == "cookie" {
                cookies.extend(
                    value
                        .split(';')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty()),
                );
                continue;
            }
            header_map
                .entry(name.as_str().to_owned())
                .and_modify(|v| {
                    v.push(',');
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        // What API Gateway sets itself.
        header_map.insert("host".into(), self.domain.clone());
        header_map
            .entry("x-forwarded-for".into())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(source_ip);
            })
            .or_insert_with(|| source_ip.to_owned());
        header_map.insert("x-forwarded-proto".into(), "https".into());
        header_map.insert("x-forwarded-port".into(), "443".into());
        header_map.insert("content-length".into(), body.len().to_string());
        if body.is_empty() {
            header_map.remove("content-length");
        }

        let raw_query = uri.query().unwrap_or("").to_owned();
        let mut query: BTreeMap<String, String> = BTreeMap::new();
        for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (percent_decode(k, true), percent_decode(v, true));
            query
                .entry(k)
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&v);
                })
                .or_insert(v);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let user_agent = headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut event = Map::new();
        event.insert("version".into(), json!("2.0"));
        event.insert("routeKey".into(), json!(matched.route_key));
        event.insert("rawPath".into(), json!(uri.path()));
        event.insert("rawQueryString".into(), json!(raw_query));
        if !cookies.is_empty() {
            event.insert("cookies".into(), json!(cookies));
        }
        event.insert("headers".into(), json!(header_map));
        if !query.is_empty() {
            event.insert("queryStringParameters".into(), json!(query));
        }
        event.insert(
            "requestContext".into(),
            json!({
                "accountId": "000000000000",
                "apiId": self.api_id,
                "domainName": self.domain,
                "domainPrefix": self.api_id,
                "http": {
                    "method": method.as_str(),
                    "path": uri.path(),
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": user_agent,
                },
                "requestId": request_id,
                "routeKey": matched.route_key,
                "stage": "$default",
                "time": http_time(now),
                "timeEpoch": u64::try_from(now.as_millis()).unwrap_or(u64::MAX),
            }),
        );
        if !matched.path_parameters.is_empty() {
            event.insert("pathParameters".into(), json!(matched.path_parameters));
        }
        if !body.is_empty() {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            match std::str::from_utf8(&body) {
                Ok(text) if is_text(content_type) => {
                    event.insert("body".into(), json!(text));
                    event.insert("isBase64Encoded".into(), json!(false));
                }
                _ => {
                    event.insert(
                        "body".into(),
                        json!(base64::engine::general_purpose::STANDARD.encode(&body)),
                    );
                    event.insert("isBase64Encoded".into(), json!(true));
                }
            }
        } else {
            event.insert("isBase64Encoded".into(), json!(false));
        }
        Value::Object(event)
    }
}

/// Text media types API Gateway passes as a plain string; anything else goes base64-encoded.
fn is_text(content_type: &str) -> bool {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct == "application/json"
        || ct.ends_with("+json")
        || ct == "application/xml"
        || ct.ends_with("+xml")
        || ct == "application/x-www-form-urlencoded"
        || ct == "application/yaml"
        || ct == "application/javascript"
}

fn match_segments(segments: &[Segment], parts: &[&str]) -> Option<BTreeMap<String, String>> {
    let mut params = BTreeMap::new();
    for (i, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Literal(l) => {
                if parts.get(i) != Some(&l.as_str()) {
                    return None;
                }
            }
            Segment::Variable(name) => {
                params.insert(name.clone(), percent_decode(parts.get(i)?, false));
            }
            Segment::Greedy(name) => {
                if parts.len() <= i {
                    return None;
                }
                params.insert(name.clone(), percent_decode(&parts[i..].join("/"), false));
                return Some(params);
            }
        }
    }
    (parts.len() == segments.len()).then_some(params)
}

/// The Lambda proxy result (payload format 2.0) as an HTTP response.
fn proxy_result(result: &[u8], head: bool) -> Result<Response<Body>, String> {
    let value: Value = serde_json::from_slice(result).map_err(|e| format!("not JSON: {e}"))?;
    // Without statusCode, API Gateway takes the whole result as a 200 JSON body.
    let Some(status) = value.get("statusCode") else {
        let mut r = Response::new(if head {
            Body::empty()
        } else {
            Body::from(result.to_vec())
        });
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        return Ok(r);
    };
    let status = status
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("statusCode {status}"))?;
    let body = match value.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => {
            if value
                .get("isBase64Encoded")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| format!("body is not base64: {e}"))?
            } else {
                s.clone().into_bytes()
            }
        }
        Some(other) => return Err(format!("body is not a string: {other}")),
    };
    let mut headers = HeaderMap::new();
    if let Some(map) = value.get("headers").and_then(Value::as_object) {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k}: {e}"))?;
            let value = HeaderValue::from_str(&v).map_err(|e| format!("header {k}: {e}"))?;
            headers.append(name, value);
        }
    }
    if let Some(cookies) = value.get("cookies").and_then(Value::as_array) {
        for c in cookies.iter().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(c) {
                headers.append("set-cookie", v);
            }
        }
    }
    // A HEAD answer keeps the length the function declared (the body is dropped); otherwise the
    // length is the body's, whatever the function said.
    if !(head && headers.contains_key("content-length")) {
        headers.insert("content-length", HeaderValue::from(body.len()));
    }
    headers.remove("transfer-encoding");
    let mut r = Response::new(if head { Body::empty() } else { Body::from(body) });
    *r.status_mut() = status;
    *r.headers_mut() = headers;
    Ok(r)
}

/// API Gateway's own error answers: `{"message": "..."}`.
pub fn message(status: StatusCode, text: &str) -> Response<Body> {
    let body = json!({ "message": text }).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

/// Percent-decoding (`+` as space in query strings).
pub fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `12/Mar/2020:19:03:58 +0000`, as requestContext.time.
fn http_time(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let name = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!("{d:02}/{name}/{year}:{h:02}:{m:02}:{s:02} +0000")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn compiled(path: &str) -> Vec<Segment> {
        let api = HttpApi::new(
            &[Route {
                method: "ANY".into(),
                path: path.into(),
                function: "F".into(),
            }],
            &BTreeMap::from([("F".to_owned(), "f".to_owned())]),
            dummy_runtime(),
            "local",
            "us-east-1",
        );
        api.routes[0].segments.clone()
    }

    fn dummy_runtime() -> LambdaRuntime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(LambdaRuntime::start(vec![], std::env::temp_dir(), false))
            .unwrap()
    }

    #[test]
    fn segments_and_greedy_variables() {
        let image = compiled("/image/{schematic}/{version}/{path+}");
        let m = match_segments(&image, &["image", "abc", "v1.12.1", "metal-amd64.iso"]).unwrap();
        assert_eq!(m["path"], "metal-amd64.iso");
        let m = match_segments(&image, &["image", "abc", "v1", "a", "b%20c"]).unwrap();
        assert_eq!(m["path"], "a/b c");
        assert!(match_segments(&image, &["image", "abc", "v1"]).is_none());
        let exact = compiled("/schematics");
        assert!(match_segments(&exact, &["schematics"]).is_some());
        assert!(match_segments(&exact, &["schematics", "x"]).is_none());
    }

    #[test]
    fn most_specific_route_wins() {
        let routes = vec![
            Route {
                method: "ANY".into(),
                path: "/v2".into(),
                function: "R".into(),
            },
            Route {
                method: "ANY".into(),
                path: "/v2/{proxy+}".into(),
                function: "R".into(),
            },
            Route {
                method: "ANY".into(),
                path: "/schematics/{id}".into(),
                function: "S".into(),
            },
            Route {
                method: "ANY".into(),
                path: "/schematics".into(),
                function: "S".into(),
            },
        ];
        let names = BTreeMap::from([("R".to_owned(), "r".to_owned()), ("S".to_owned(), "s".to_owned())]);
        let api = HttpApi::new(&routes, &names, dummy_runtime(), "local", "us-east-1");
        assert_eq!(api.route(&Method::GET, "/v2/").unwrap().route_key, "ANY /v2");
        assert_eq!(
            api.route(&Method::GET, "/v2/x/manifests/v1")
                .unwrap()
                .path_parameters["proxy"],
            "x/manifests/v1"
        );
        assert_eq!(
            api.route(&Method::POST, "/schematics").unwrap().route_key,
            "ANY /schematics"
        );
        assert_eq!(
            api.route(&Method::GET, "/schematics/abc")
                .unwrap()
                .path_parameters["id"],
            "abc"
        );
        assert!(api.route(&Method::GET, "/nothing").is_none());
    }

    #[test]
    fn proxy_results() {
        let r = proxy_result(
            br#"{"statusCode":302,"headers":{"location":"/x"},"body":""}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "/x");
        let r = proxy_result(
            br#"{"statusCode":200,"headers":{"content-length":"559"},"body":"","isBase64Encoded":false}"#,
            true,
        )
        .unwrap();
        assert_eq!(r.headers()["content-length"], "559");
        let r = proxy_result(
            br#"{"statusCode":200,"body":"aGk=","isBase64Encoded":true}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.headers()["content-length"], "2");
        assert!(proxy_result(b"not json", false).is_err());
        assert!(proxy_result(br#"{"statusCode":"x"}"#, false).is_err());
        assert_eq!(
            http_time(Duration::from_secs(1_583_348_638)),
            "04/Mar/2020:19:03:58 +0000"
        );
        assert_eq!(percent_decode("a%2Fb+c%zz", true), "a/b c%zz");
    }
}
