//! [`OciSource`] over the OCI distribution API: ghcr.io in production, a mirror or pull-through
//! cache (with its namespace prefix), a loopback registry in tests.
//!
//! Plain reqwest (rustls, no OpenSSL) rather than a full OCI client crate: the factory needs raw
//! manifests with their exact bytes, streamed blobs, `Link`-header pagination and precise error
//! mapping, and nothing else.

mod auth;
mod errors;
mod link;
mod names;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LINK, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use tokio_util::io::StreamReader;

pub use auth::{parse_bearer_challenge, BearerChallenge};
pub use names::{is_valid_repository, is_valid_tag};

use crate::digest::{is_digest_reference, sha256_digest, sha256_hex};
use crate::image::manifest::{detect_media_type, MANIFEST_ACCEPT};
use crate::source::{BlobStream, OciSource, RawManifest, UpstreamError};

/// Manifests are small; the distribution spec lets registries refuse anything over 4 MiB.
const MANIFEST_LIMIT: usize = 4 << 20;
/// One page of a tag list.
const TAG_PAGE_LIMIT: usize = 16 << 20;
/// Error bodies are only read for their message.
const ERROR_BODY_LIMIT: usize = 64 << 10;
const TOKEN_LIMIT: usize = 1 << 20;
/// A safety stop against registries whose pagination never ends.
const MAX_TAG_PAGES: usize = 10_000;
const DEFAULT_PAGE_SIZE: u32 = 1000;

/// An OCI distribution registry, read anonymously.
pub struct RegistrySource {
    /// `scheme://host[:port]`, no trailing slash.
    base: String,
    /// Pull-through prefix (`""` in production), without slashes at either end.
    namespace: String,
    http: reqwest::Client,
    /// Bearer tokens per repository path. Anonymous pull tokens are per repository scope.
    tokens: Mutex<HashMap<String, String>>,
    page_size: u32,
    name: String,
}

impl std::fmt::Debug for RegistrySource {
    // Tokens stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("base", &self.base)
            .field("namespace", &self.namespace)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl RegistrySource {
    /// `base_url`: `https://ghcr.io`, `http://127.0.0.1:5001` (plain HTTP is used as given).
    /// `namespace`: a pull-through prefix, `""` for none; `proxy` maps `siderolabs/imager` to
    /// the registry repository `proxy/siderolabs/imager`.
    pub fn new(base_url: &str, namespace: &str) -> Result<Self, UpstreamError> {
        let invalid = |reason: String| UpstreamError::Invalid {
            image: base_url.to_string(),
            reason,
        };
        let url = Url::parse(base_url).map_err(|e| invalid(format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid(
                "the registry URL must be http:// or https:// with a host".into(),
            ));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || !url.username().is_empty() {
            return Err(invalid(
                "the registry URL must not have a path, query or credentials".into(),
            ));
        }
        let namespace = namespace.trim_matches('/').to_string();
        if !namespace.is_empty() && !is_valid_repository(&namespace) {
            return Err(invalid(format!("invalid namespace {namespace:?}")));
        }
        let base = url.as_str().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .user_agent(concat!("talos-factory-rs/", env!("CARGO_PKG_VERSION")))
            // Fail fast on dead hosts; a stalled transfer is detected by the read timeout, not
            // by a total timeout that large layers would exceed.
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        let name = if namespace.is_empty() {
            format!("registry {base}")
        } else {
            format!("registry {base}/{namespace}")
        };
        Ok(RegistrySource {
            base,
            namespace,
            http,
            tokens: Mutex::new(HashMap::new()),
            page_size: DEFAULT_PAGE_SIZE,
            name,
        })
    }

    /// Tags per page requested from the registry (default 1000); small values exercise
    /// pagination in tests.
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    /// The registry repository path for a source repository name.
    fn path(&self, repository: &str) -> Result<String, UpstreamError> {
        if !is_valid_repository(repository) {
            return Err(UpstreamError::NotFound(format!(
                "invalid repository name {repository:?}"
            )));
        }
        Ok(if self.namespace.is_empty() {
            repository.to_string()
        } else {
            format!("{}/{repository}", self.namespace)
        })
    }

    fn url(&self, path: &str) -> Result<Url, UpstreamError> {
        Url::parse(&format!("{}{path}", self.base)).map_err(|e| UpstreamError::Invalid {
            image: self.name.clone(),
            reason: format!("bad URL {path}: {e}"),
        })
    }

    fn cached_token(&self, repo_path: &str) -> Option<String> {
        self.tokens.lock().ok().and_then(|t| t.get(repo_path).cloned())
    }

    /// GET with the token flow: a cached token if there is one, and on a Bearer challenge one
    /// new token and one retry. The caller maps the final status.
    async fn get(
        &self,
        repo_path: &str,
        url: Url,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response, UpstreamError> {
        let mut token = self.cached_token(repo_path);
        let mut refreshed = false;
        loop {
            let mut request = self.http.get(url.clone());
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            let response = request
                .send()
                .await
                .map_err(|e| errors::transport_error(&self.name, what, &e))?;
            if response.status() != StatusCode::UNAUTHORIZED || refreshed {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_bearer_challenge);
            let Some(challenge) = challenge else {
                return Ok(response);
            };
            token = Some(self.fetch_token(repo_path, &challenge, what).await?);
            refreshed = true;
        }
    }

    async fn fetch_token(
        &self,
        repo_path: &str,
        challenge: &BearerChallenge,
        what: &str,
    ) -> Result<String, UpstreamError> {
        let unavailable = |message: String| UpstreamError::Unavailable {
            source_name: self.name.clone(),
            message,
        };
        let mut url = Url::parse(&challenge.realm)
            .map_err(|e| unavailable(format!("bad token realm {:?}: {e}", challenge.realm)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(unavailable(format!("bad token realm {:?}", challenge.realm)));
        }
        let scope = challenge
            .scope
            .clone()
            .unwrap_or_else(|| format!("repository:{repo_path}:pull"));
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &challenge.service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
        }
        let token_what = format!("token for {what}");
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| errors::transport_error(&self.name, &token_what, &e))?;
        let status = response.status();
        if !status.is_success() {
            let body = read_limited(response, ERROR_BODY_LIMIT)
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            return Err(errors::status_error(&self.name, &token_what, status, &body));
        }
        let body = read_body(response, TOKEN_LIMIT, &self.name, &token_what).await?;
        let token = serde_json::from_slice::<auth::TokenResponse>(&body)
            .ok()
            .and_then(auth::TokenResponse::into_token)
            .ok_or_else(|| unavailable(format!("the token endpoint returned no token for {what}")))?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(repo_path.to_string(), token.clone());
        }
        Ok(token)
    }

    /// Fails with the mapped status error unless the response is a success.
    async fn check(&self, response: Response, what: &str) -> Result<Response, UpstreamError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = read_limited(response, ERROR_BODY_LIMIT)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        Err(errors::status_error(&self.name, what, status, &body))
    }
}

/// Reads a body up to `limit` bytes; `None` past the limit.
async fn read_limited(mut response: Response, limit: usize) -> Result<Option<Bytes>, reqwest::Error> {
    let mut out = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out.freeze()))
}

async fn read_body(
    response: Response,
    limit: usize,
    source_name: &str,
    what: &str,
) -> Result<Bytes, UpstreamError> {
    match read_limited(response, limit).await {
        Ok(Some(body)) => Ok(body),
        Ok(None) => Err(UpstreamError::Invalid {
            image: what.to_string(),
            reason: format!("response larger than {limit} bytes"),
        }),
        Err(e) => Err(errors::transport_error(source_name, what, &e)),
    }
}

#[derive(serde::Deserialize)]
struct TagList {
    // ghcr.io answers `"tags": null` past the last page.
    tags: Option<Vec<String>>,
}

#[async_trait]
impl OciSource for RegistrySource {
    async fn list_tags(&self, repository: &str) -> Result<Vec<String>, UpstreamError> {
        let path = self.path(repository)?;
        let what = format!("tags of {repository}");
        let mut next = Some(self.url(&format!("/v2/{path}/tags/list?n={}", self.page_size))?);
        let mut tags = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..MAX_TAG_PAGES {
            let Some(url) = next.take() else {
                return Ok(tags);
            };
            let response = self
                .check(self.get(&path, url.clone(), None, &what).await?, &what)
                .await?;
            let link = response
                .headers()
                .get(LINK)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_body(response, TAG_PAGE_LIMIT, &self.name, &what).await?;
            let page: TagList = serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid {
                image: repository.to_string(),
                reason: format!("bad tag list: {e}"),
            })?;
            let page = page.tags.unwrap_or_default();
            let before = tags.len();
            for tag in &page {
                if seen.insert(tag.clone()) {
                    tags.push(tag.clone());
                }
            }
            next = match link.as_deref().and_then(link::next_link) {
                Some(target) => Some(self.same_origin(&url, target, repository)?),
                // Some registries honour `last` without sending `Link`: a full page may mean more.
                // Stop when a page brings nothing new, so a registry ignoring `last` ends the loop.
                None if page.len() >= self.page_size as usize && tags.len() > before => {
                    let last = page.last().map(String::as_str).unwrap_or_default();
                    let mut url = self.url(&format!("/v2/{path}/tags/list"))?;
                    url.query_pairs_mut()
                        .append_pair("n", &self.page_size.to_string())
                        .append_pair("last", last);
                    Some(url)
                }
                None => None,
            };
        }
        Err(UpstreamError::Invalid {
            image: repository.to_string(),
            reason: format!("tag list has more than {MAX_TAG_PAGES} pages"),
        })
    }

    async fn manifest(&self, repository: &str, reference: &str) -> Result<RawManifest, UpstreamError> {
        let path = self.path(repository)?;
        let by_digest = is_digest_reference(reference);
        let what = if by_digest {
            format!("{repository}@{reference}")
        } else {
            format!("{repository}:{reference}")
        };
        if by_digest && sha256_hex(reference).is_none() {
            return Err(UpstreamError::Invalid {
                image: what,
                reason: "only sha256 digests are supported".into(),
            });
        }
        if !by_digest && !is_valid_tag(reference) {
            return Err(UpstreamError::NotFound(format!("{what} (invalid tag)")));
        }
        let url = self.url(&format!("/v2/{path}/manifests/{reference}"))?;
        let response = self
            .check(self.get(&path, url, Some(MANIFEST_ACCEPT), &what).await?, &what)
            .await?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_body(response, MANIFEST_LIMIT, &self.name, &what).await?;
        let digest = sha256_digest(&bytes);
        if by_digest && digest != reference {
            return Err(UpstreamError::Invalid {
                image: what,
                reason: format!("manifest digest mismatch: content has {digest}"),
            });
        }
        // The registry's own digest must agree with the bytes it sent: otherwise the content was
        // altered on the way (a proxy rewriting manifests) and nothing about it can be trusted.
        if let Some(header) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if header != digest {
                return Err(UpstreamError::Invalid {
                    image: what,
                    reason: format!("registry says {header} but the manifest bytes hash to {digest}"),
                });
            }
        }
        let media_type = detect_media_type(&bytes, content_type.as_deref());
        Ok(RawManifest {
            digest,
            media_type,
            bytes,
        })
    }

    async fn blob(&self, repository: &str, digest: &str) -> Result<BlobStream, UpstreamError> {
        let path = self.path(repository)?;
        let what = format!("blob {repository}@{digest}");
        if sha256_hex(digest).is_none() {
            return Err(UpstreamError::Invalid {
                image: what,
                reason: "only sha256 digests are supported".into(),
            });
        }
        let url = self.url(&format!("/v2/{path}/blobs/{digest}"))?;
        // reqwest follows the redirect to blob storage (ghcr.io → pkg-containers) and drops the
        // Authorization header when the host changes.
        let response = self
            .check(self.get(&path, url, None, &what).await?, &what)
            .await?;
        let source_name = self.name.clone();
        // Transport errors mid-stream surface as io errors; the layer code reports them as
        // `Unavailable` (only digest mismatches are `Invalid`).
        let stream = response
            .bytes_stream()
            .map_err(move |e| std::io::Error::other(format!("{source_name}: {what}: {}", errors::chain(&e))));
        Ok(Box::pin(StreamReader::new(stream)))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

impl RegistrySource {
    /// Resolves a pagination link and refuses to follow it to another origin (the bearer token
    /// would go with it).
    fn same_origin(&self, current: &Url, target: &str, repository: &str) -> Result<Url, UpstreamError> {
        let next = current.join(target).map_err(|e| UpstreamError::Invalid {
            image: repository.to_string(),
            reason: format!("bad pagination link {target:?}: {e}"),
        })?;
        if next.origin() != current.origin() {
            return Err(UpstreamError::Invalid {
                image: repository.to_string(),
                reason: format!("pagination link {target:?} leaves the registry"),
            });
        }
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_construction() {
        assert!(RegistrySource::new("https://ghcr.io", "").is_ok());
        assert!(RegistrySource::new("http://127.0.0.1:5001/", "proxy").is_ok());
        assert!(RegistrySource::new("ftp://x", "").is_err());
        assert!(RegistrySource::new("https://ghcr.io/v2", "").is_err());
        assert!(RegistrySource::new("not a url", "").is_err());
        assert!(RegistrySource::new("https://ghcr.io", "../x").is_err());
    }

    #[test]
    fn namespace_prefixes_paths() -> Result<(), UpstreamError> {
        let plain = RegistrySource::new("https://ghcr.io", "")?;
        assert_eq!(plain.path("siderolabs/imager")?, "siderolabs/imager");
        assert_eq!(plain.describe(), "registry https://ghcr.io");
        let proxied = RegistrySource::new("http://127.0.0.1:5001", "/proxy/")?;
        assert_eq!(proxied.path("siderolabs/imager")?, "proxy/siderolabs/imager");
        assert_eq!(proxied.describe(), "registry http://127.0.0.1:5001/proxy");
        assert!(proxied.path("../etc").is_err());
        Ok(())
    }

    #[test]
    fn pagination_stays_on_the_registry() -> Result<(), UpstreamError> {
        let r = RegistrySource::new("https://ghcr.io", "")?;
        let current = r.url("/v2/a/tags/list?n=2")?;
        let next = r.same_origin(&current, "/v2/a/tags/list?last=x&n=2", "a")?;
        assert_eq!(next.as_str(), "https://ghcr.io/v2/a/tags/list?last=x&n=2");
        assert!(r
            .same_origin(&current, "https://evil.example/v2/a/tags/list", "a")
            .is_err());
        Ok(())
    }
}
