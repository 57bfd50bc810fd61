use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::ApiError;

/// The whole request body, refused with 413 beyond `LIMIT` bytes.
#[derive(Debug)]
pub(crate) struct LimitedBody<const LIMIT: usize>(pub(crate) Bytes);

impl<S: Send + Sync, const LIMIT: usize> FromRequest<S> for LimitedBody<LIMIT> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        let too_large = || ApiError::PayloadTooLarge { limit: LIMIT };
        // A declared size over the limit is refused before reading a byte, so a client waiting
        // on `Expect: 100-continue` (curl does for large bodies) never sends the body at all.
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|size| size > LIMIT as u64) {
            return Err(too_large());
        }
        // Chunked or mis-declared bodies are cut off while streaming.
        match Limited::new(request.into_body(), LIMIT).collect().await {
            Ok(collected) => Ok(Self(collected.to_bytes())),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
            Err(e) => Err(ApiError::BadRequest(format!(
                "reading the request body failed: {e}"
            ))),
        }
    }
}
