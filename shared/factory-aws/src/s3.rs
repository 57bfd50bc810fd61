//! [`ContentStore`] on S3.

use async_trait::async_trait;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{
    BucketLocationConstraint, CompletedMultipartUpload, CompletedPart, CreateBucketConfiguration,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use factory_store::{
    validate_key, ByteStream, ContentStore, ObjectMeta, PresignHeaders, PutCondition, PutOutcome, StoreError,
};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{status, AwsError};

/// Part size of [`S3Store::put_stream`]'s multipart uploads (S3 allows 5 MiB to 5 GiB, and at most
/// 10 000 parts: 8 MiB parts carry objects up to ~78 GiB). At most one part is held in memory.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// A [`ContentStore`] on an S3 bucket, with all keys under a prefix.
///
/// * Conditional writes use `If-None-Match: *` ([`PutCondition::IfAbsent`]) and `If-Match`
///   ([`PutCondition::IfMatch`]); S3's 412 PreconditionFailed and 409 ConditionalRequestConflict
///   (a concurrent conditional write won) become [`PutOutcome::ConditionFailed`], and so does
///   `If-Match` on an absent key.
/// * Etags are S3's ETags without the quotes (opaque: MD5-based, not a content sha256).
/// * Without a content type S3 stores `binary/octet-stream`, which is what it reports then.
/// * Keys follow [`validate_key`], as on every store.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
}

impl S3Store {
    /// A store on `bucket` whose keys live under `prefix` (`""` for the whole bucket; a non-empty
    /// prefix is treated as a folder: `"builds"` and `"builds/"` both mean `builds/<key>`).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into().trim_start_matches('/').to_owned();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Self {
            client,
            bucket: bucket.into(),
            prefix,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The normalized prefix (empty, or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The S3 object key of a store key.
    pub fn object_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Completes a streaming upload whose first part is `first` (exactly [`PART_SIZE`] bytes).
    async fn multipart(
        &self,
        object_key: &str,
        key: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .set_content_type(content_type.map(str::to_owned))
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("CreateMultipartUpload {object_key}"), &e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| AwsError::other("CreateMultipartUpload", "no upload id in the response"))?
            .to_owned();
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: object_key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        let result = self.upload_parts(object_key, &upload_id, first, body).await;
        match result {
            Ok((size, etag)) => {
                guard.upload_id = None; // completed: nothing to abort
                Ok(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    etag,
                    content_type: content_type.map(str::to_owned),
                })
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    /// Uploads all parts and completes the upload: (size, etag).
    async fn upload_parts(
        &self,
        object_key: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut (dyn AsyncRead + Send + Unpin),
    ) -> Result<(u64, String), StoreError> {
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut chunk = first;
        loop {
            let part_number = i32::try_from(parts.len() + 1)
                .map_err(|_| StoreError::Backend("too many parts".to_owned()))?;
            let len = chunk.len();
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
                .part_number(part_number)
                .content_length(len as i64)
                .body(SdkByteStream::from(chunk))
                .send()
                .await
                .map_err(|e| AwsError::sdk(format!("UploadPart {object_key} #{part_number}"), &e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    // Only the ETag: the upload was created without a checksum algorithm, so
                    // S3 refuses per-part checksums here (the SDK still sends and S3 still checks
                    // one on each UploadPart).
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            size += len as u64;
            if len < PART_SIZE {
                break; // the body ended inside this part
            }
            chunk = read_part(body).await?;
            if chunk.is_empty() {
                break;
            }
        }
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .upload_id(upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("CompleteMultipartUpload {object_key}"), &e))?;
        let etag = match completed.e_tag() {
            Some(etag) => unquote(etag),
            None => self.head_etag(object_key).await?,
        };
        Ok((size, etag))
    }

    /// The etag of an object whose write response carried none.
    async fn head_etag(&self, object_key: &str) -> Result<String, StoreError> {
        let head = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(object_key)
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("HeadObject {object_key}"), &e))?;
        head.e_tag()
            .map(unquote)
            .ok_or_else(|| AwsError::other(format!("HeadObject {object_key}"), "no ETag").into())
    }
}

#[async_trait]
impl ContentStore for S3Store {
    async fn get(&self, key: &str) -> Result<Option<(ObjectMeta, Bytes)>, StoreError> {
        let Some((meta, mut body)) = self.get_object(key).await? else {
            return Ok(None);
        };
        let mut buf = BytesMut::with_capacity(usize::try_from(meta.size).unwrap_or(0));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| StoreError::Backend(format!("reading s3 object {key}: {e}")))?
        {
            buf.extend_from_slice(&chunk);
        }
        Ok(Some((meta, buf.freeze())))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let object_key = self.object_key(key)?;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(ObjectMeta {
                key: key.to_owned(),
                size: out
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                etag: out.e_tag().map(unquote).unwrap_or_default(),
                content_type: out.content_type().map(str::to_owned),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) || status(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(AwsError::sdk(format!("HeadObject {object_key}"), &e).into()),
        }
    }

    async fn put(
        &self,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        condition: PutCondition,
    ) -> Result<PutOutcome, StoreError> {
        let object_key = self.object_key(key)?;
        let size = body.len() as u64;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .content_length(size as i64)
            .body(SdkByteStream::from(body))
            .set_content_type(content_type.map(str::to_owned));
        request = match &condition {
            PutCondition::Overwrite => request,
            PutCondition::IfAbsent => request.if_none_match("*"),
            PutCondition::IfMatch(etag) => request.if_match(quote(etag)),
        };
        match request.send().await {
            Ok(out) => {
                let etag = match out.e_tag() {
                    Some(etag) => unquote(etag),
                    None => self.head_etag(&object_key).await?,
                };
                Ok(PutOutcome::Written(ObjectMeta {
                    key: key.to_owned(),
                    size,
                    etag,
                    content_type: content_type.map(str::to_owned),
                }))
            }
            Err(e) => {
                let err = AwsError::sdk(format!("PutObject {object_key}"), &e);
                let precondition = matches!(err.status, Some(412 | 409))
                    || err.is_code(&["PreconditionFailed", "ConditionalRequestConflict"]);
                // If-Match on an absent key answers 404 NoSuchKey.
                let absent = matches!(condition, PutCondition::IfMatch(_))
                    && (err.status == Some(404) || err.is_code(&["NoSuchKey"]));
                if condition != PutCondition::Overwrite && (precondition || absent) {
                    tracing::debug!(key, ?condition, "conditional put refused: {err}");
                    Ok(PutOutcome::ConditionFailed)
                } else {
                    Err(err.into())
                }
            }
        }
    }

    async fn put_stream(
        &self,
        key: &str,
        mut body: Box<dyn AsyncRead + Send + Unpin>,
        content_type: Option<&str>,
    ) -> Result<ObjectMeta, StoreError> {
        let object_key = self.object_key(key)?;
        let first = read_part(&mut *body).await?;
        if first.len() < PART_SIZE {
            // The whole body fits in one part (an empty body included): a plain PUT.
            return match self
                .put(key, first, content_type, PutCondition::Overwrite)
                .await?
            {
                PutOutcome::Written(meta) => Ok(meta),
                PutOutcome::ConditionFailed => Err(StoreError::Backend(format!(
                    "unconditional PutObject {object_key} reported a failed condition"
                ))),
            };
        }
        self.multipart(&object_key, key, first, &mut *body, content_type)
            .await
    }

    async fn get_stream(&self, key: &str) -> Result<Option<(ObjectMeta, ByteStream)>, StoreError> {
        let Some((meta, body)) = self.get_object(key).await? else {
            return Ok(None);
        };
        let key = key.to_owned();
        let stream = futures::stream::try_unfold(Some(body), move |body| {
            let key = key.clone();
            async move {
                let Some(mut body) = body else {
                    return Ok(None);
                };
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, Some(body)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(StoreError::Backend(format!("reading s3 object {key}: {e}"))),
                }
            }
        });
        Ok(Some((meta, Box::pin(stream))))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let object_key = self.object_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(|e| AwsError::sdk(format!("DeleteObject {object_key}"), &e))?;
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| AwsError::sdk(format!("ListObjectsV2 {full_prefix}"), &e))?
        {
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key())
                    .filter_map(|k| k.strip_prefix(&self.prefix))
                    .map(str::to_owned),
            );
        }
        keys.sort();
        Ok(keys)
    }

    /// A SigV4 presigned `GetObject` URL (at most 7 days, S3's limit), with
    /// `response-content-type` / `response-content-disposition` so the download is named and
    /// typed whatever the object's stored metadata says.
    async fn presign_get(
        &self,
        key: &str,
        ttl: std::time::Duration,
        headers: &PresignHeaders,
    ) -> Result<Option<String>, StoreError> {
        let object_key = self.object_key(key)?;
        let config = PresigningConfig::expires_in(ttl)
            .map_err(|e| StoreError::Backend(format!("presigning {object_key}: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .set_response_content_type(headers.content_type.clone())
            .set_response_content_disposition(headers.content_disposition.clone());
        let presigned = request
            .presigned(config)
            .await
            .map_err(|e| AwsError::sdk(format!("presigning GetObject {object_key}"), &e))?;
        Ok(Some(presigned.uri().to_owned()))
    }
}

impl S3Store {
    async fn get_object(&self, key: &str) -> Result<Option<(ObjectMeta, SdkByteStream)>, StoreError> {
        let object_key = self.object_key(key)?;
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
        {
            Ok(out) => {
                let meta = ObjectMeta {
                    key: key.to_owned(),
                    size: out
                        .content_length()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or(0),
                    etag: out.e_tag().map(unquote).unwrap_or_default(),
                    content_type: out.content_type().map(str::to_owned),
                };
                Ok(Some((meta, out.body)))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) || status(&e) == Some(404) => {
                Ok(None)
            }
            Err(e) => Err(AwsError::sdk(format!("GetObject {object_key}"), &e).into()),
        }
    }
}

/// Aborts a multipart upload that did not complete: explicitly on errors, and from `Drop` when
/// the upload future is cancelled (best effort, on the current runtime). A bucket lifecycle rule
/// `AbortIncompleteMultipartUpload` cleans up what a crashed process leaves.
#[derive(Debug)]
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortGuard {
    async fn abort(&mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort_upload(&self.client, &self.bucket, &self.key, &upload_id).await;
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
            runtime.spawn(async move { abort_upload(&client, &bucket, &key, &upload_id).await });
        }
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = result {
        let err = AwsError::sdk(format!("AbortMultipartUpload {key}"), &e);
        tracing::warn!(
            bucket,
            key,
            upload_id,
            "could not abort a multipart upload: {err}"
        );
    }
}

/// Reads up to [`PART_SIZE`] bytes: fewer only at the end of the body.
async fn read_part(body: &mut (dyn AsyncRead + Send + Unpin)) -> Result<Bytes, StoreError> {
    let mut buf = BytesMut::zeroed(PART_SIZE);
    let mut filled = 0;
    while filled < PART_SIZE {
        let n = body.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf.freeze())
}

fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

fn quote(etag: &str) -> String {
    format!("\"{}\"", etag.trim_matches('"'))
}

/// Creates `bucket` unless it exists already (idempotent; safe to call concurrently). Outside
/// `us-east-1` the bucket is created in the client's region.
pub async fn ensure_bucket(s3: &Client, bucket: &str) -> Result<(), AwsError> {
    match s3.head_bucket().bucket(bucket).send().await {
        Ok(_) => return Ok(()),
        Err(e) if status(&e) == Some(404) || e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
        Err(e) => return Err(AwsError::sdk(format!("HeadBucket {bucket}"), &e)),
    }
    let mut request = s3.create_bucket().bucket(bucket);
    if let Some(region) = s3.config().region().map(|r| r.as_ref().to_owned()) {
        if region != "us-east-1" {
            request = request.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(region.as_str()))
                    .build(),
            );
        }
    }
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e) => Err(AwsError::sdk(format!("CreateBucket {bucket}"), &e)),
    }
}
