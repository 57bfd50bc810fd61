//! Pushes OCI image layouts to a plain-HTTP registry with the OCI distribution API, keeping
//! every digest: blobs by monolithic upload (`POST` then `PUT ?digest=`, skipped when a `HEAD`
//! finds them), child manifests by digest, then each tag's manifest or index by tag.
//!
//! Done in-process rather than with `skopeo copy` per tag: one process checks each blob once per
//! repository and uploads the exact bytes of the layout (skopeo may re-encode manifests unless
//! told otherwise, needs `--all` for indexes, and costs a process start per tag — ~150 tags).
//! Only `http://` is supported: the target is a loopback test registry; production images live
//! on ghcr.io and are never pushed by this tool.
//!
//! Uses a blocking HTTP client: call it from a plain thread (or `spawn_blocking`), not from
//! inside an async task.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::oci::layout::{self, LayoutRepo};
use crate::oci::spec::{Descriptor, MEDIA_INDEX, MEDIA_MANIFEST};
use crate::{parallel, Error};

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct PushSummary {
    pub registry: String,
    pub repositories: usize,
    pub tags: usize,
    pub blobs_uploaded: usize,
    /// Tags the registry already had at the same digest: skipped with their whole tree.
    pub tags_present: usize,
    /// Blobs the registry already had: not uploaded again.
    pub blobs_present: usize,
    pub bytes_uploaded: u64,
    pub elapsed: Duration,
}

impl PushSummary {
    fn add(&mut self, part: &PushSummary) {
        self.repositories += part.repositories;
        self.tags += part.tags;
        self.tags_present += part.tags_present;
        self.blobs_uploaded += part.blobs_uploaded;
        self.blobs_present += part.blobs_present;
        self.bytes_uploaded += part.bytes_uploaded;
    }
}

impl std::fmt::Display for PushSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pushed to {}: {} repositories, {} tags ({} already there), {} blobs uploaded ({:.1} MiB), \
             {} already present, in {:.1} s",
            self.registry,
            self.repositories,
            self.tags,
            self.tags_present,
            self.blobs_uploaded,
            self.bytes_uploaded as f64 / (1024.0 * 1024.0),
            self.blobs_present,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Pushes every layout under `root` (repository `R` from `root/R/`) to `registry`
/// (`HOST:PORT` or `http://HOST:PORT`).
pub fn push(root: &Path, registry: &str) -> Result<PushSummary, Error> {
    let start = Instant::now();
    let base = base_url(registry)?;
    let client = Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| registry_error(&base, format!("HTTP client: {e}")))?;
    let pusher = Pusher {
        client,
        base,
        summary: PushSummary::default(),
    };
    pusher.check_api()?;

    let repos = layout::read_all(root)?;
    if repos.is_empty() {
        return Err(Error::Layout {
            path: root.to_owned(),
            detail: "no OCI layouts found".to_owned(),
        });
    }

    // Repositories are independent, and each request to a local docker-registry costs ~10 ms of
    // mostly waiting: a few repositories at a time cut the push time severalfold.
    let parts = parallel::map(&repos, PUSH_WORKERS, |repo| {
        let mut worker = pusher.fork();
        worker.push_repo(repo).map(|()| worker.summary)
    });
    let mut summary = PushSummary {
        registry: pusher.base.clone(),
        ..PushSummary::default()
    };
    for part in parts {
        summary.add(&part?);
    }
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Concurrent repository pushes.
const PUSH_WORKERS: usize = 4;

fn base_url(registry: &str) -> Result<String, Error> {
    let trimmed = registry.trim_end_matches('/');
    if trimmed.starts_with("https://") {
        return Err(registry_error(
            trimmed,
            "only plain-HTTP registries are supported (a loopback test registry)",
        ));
    }
    Ok(if trimmed.starts_with("http://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    })
}

fn registry_error(registry: &str, detail: impl Into<String>) -> Error {
    Error::Registry {
        registry: registry.to_owned(),
        detail: detail.into(),
    }
}

/// Only the fields needed to walk from a manifest or index to what it references.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Refs {
    #[serde(default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// What this push already sent to one repository: manifests and blobs by digest.
#[derive(Default)]
struct Pushed {
    manifests: BTreeSet<String>,
    blobs: BTreeSet<String>,
}

struct Pusher {
    client: Client,
    base: String,
    summary: PushSummary,
}

impl Pusher {
    /// A pusher for another thread: same client (connection pool) and registry, own counters.
    fn fork(&self) -> Self {
        Self {
            client: self.client.clone(),
            base: self.base.clone(),
            summary: PushSummary::default(),
        }
    }

    /// Pushes every tag of `repo`; tags the registry already has at the same digest are skipped
    /// (the registry accepted their whole tree when they were pushed).
    fn push_repo(&mut self, repo: &LayoutRepo) -> Result<(), Error> {
        let mut pushed = Pushed::default();
        for (tag, descriptor) in &repo.tags {
            if self.tag_digest(repo, tag)?.as_deref() == Some(descriptor.digest.as_str()) {
                self.summary.tags_present += 1;
            } else {
                self.push_manifest(repo, descriptor, tag, &mut pushed)?;
            }
            self.summary.tags += 1;
        }
        self.summary.repositories += 1;
        Ok(())
    }

    /// The digest `repo:tag` has in the registry, if any.
    fn tag_digest(&self, repo: &LayoutRepo, tag: &str) -> Result<Option<String>, Error> {
        let url = format!("{}/v2/{}/manifests/{tag}", self.base, repo.name);
        let accept = format!("{MEDIA_INDEX}, {MEDIA_MANIFEST}");
        let response = self.send(
            self.client.head(url).header("Accept", accept),
            &format!("HEAD {}:{tag}", repo.name),
        )?;
        if response.status() != StatusCode::OK {
            return Ok(None);
        }
        Ok(response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    fn check_api(&self) -> Result<(), Error> {
        let response = self.send(self.client.get(format!("{}/v2/", self.base)), "GET /v2/")?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(registry_error(
                &self.base,
                format!("GET /v2/ answered {status} (expected 200, no auth)"),
            )),
        }
    }

    /// Pushes what `descriptor` references, then the manifest itself under `reference` (a tag,
    /// or its digest for children). `pushed` holds digests already pushed by digest.
    fn push_manifest(
        &mut self,
        repo: &LayoutRepo,
        descriptor: &Descriptor,
        reference: &str,
        pushed: &mut Pushed,
    ) -> Result<(), Error> {
        let body = repo.read_blob(&descriptor.digest)?;
        let is_tag = reference != descriptor.digest;
        if is_tag || !pushed.manifests.contains(&descriptor.digest) {
            let refs: Refs = serde_json::from_slice(&body).map_err(|e| Error::Layout {
                path: repo.blob_path(&descriptor.digest),
                detail: format!("not a manifest: {e}"),
            })?;
            if !pushed.manifests.contains(&descriptor.digest) {
                if refs.media_type == MEDIA_INDEX || !refs.manifests.is_empty() {
                    for child in &refs.manifests {
                        self.push_manifest(repo, child, &child.digest, pushed)?;
                    }
                } else {
                    for blob in refs.config.iter().chain(&refs.layers) {
                        if pushed.blobs.insert(blob.digest.clone()) {
                            self.push_blob(repo, blob)?;
                        }
                    }
                }
            }
            let media_type = if refs.media_type.is_empty() {
                &descriptor.media_type
            } else {
                &refs.media_type
            };
            let url = format!("{}/v2/{}/manifests/{reference}", self.base, repo.name);
            let request = self
                .client
                .put(&url)
                .header("Content-Type", media_type)
                .body(body);
            let response = self.send(request, &format!("PUT manifest {}:{reference}", repo.name))?;
            expect(
                &self.base,
                response,
                StatusCode::CREATED,
                &format!("PUT manifest {}:{reference}", repo.name),
            )?;
            pushed.manifests.insert(descriptor.digest.clone());
        }
        Ok(())
    }

    fn push_blob(&mut self, repo: &LayoutRepo, blob: &Descriptor) -> Result<(), Error> {
        let what = format!("blob {}@{}", repo.name, blob.digest);
        let head = self.send(
            self.client
                .head(format!("{}/v2/{}/blobs/{}", self.base, repo.name, blob.digest)),
            &what,
        )?;
        if head.status() == StatusCode::OK {
            self.summary.blobs_present += 1;
            return Ok(());
        }
        let data = repo.read_blob(&blob.digest)?;
        let start = self.send(
            self.client
                .post(format!("{}/v2/{}/blobs/uploads/", self.base, repo.name)),
            &what,
        )?;
        let start = expect(
            &self.base,
            start,
            StatusCode::ACCEPTED,
            &format!("POST upload of {what}"),
        )?;
        let location = start
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| registry_error(&self.base, format!("upload of {what}: no Location header")))?;
        let location = if location.starts_with("http") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", blob.digest);
        let len = data.len() as u64;
        let request = self
            .client
            .put(url)
            .header("Content-Type", "application/octet-stream")
            .body(data);
        let response = self.send(request, &what)?;
        expect(
            &self.base,
            response,
            StatusCode::CREATED,
            &format!("PUT upload of {what}"),
        )?;
        self.summary.blobs_uploaded += 1;
        self.summary.bytes_uploaded += len;
        Ok(())
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder, what: &str) -> Result<Response, Error> {
        request
            .send()
            .map_err(|e| registry_error(&self.base, format!("{what}: {e}")))
    }
}

fn expect(base: &str, response: Response, status: StatusCode, what: &str) -> Result<Response, Error> {
    if response.status() == status {
        return Ok(response);
    }
    let got = response.status();
    let body = response.text().unwrap_or_default();
    Err(registry_error(
        base,
        format!("{what}: {got} (expected {status}): {}", body.trim()),
    ))
}
