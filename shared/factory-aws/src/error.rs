use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use factory_store::{QueueError, StoreError};

/// A failed AWS call: which operation, the HTTP status and error code when the service answered,
/// and the SDK's full error text (with its causes).
#[derive(Debug, thiserror::Error)]
#[error("{operation}: {message}")]
pub struct AwsError {
    pub operation: String,
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl AwsError {
    pub(crate) fn sdk<E>(operation: impl Into<String>, err: &SdkError<E, HttpResponse>) -> Self
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    {
        Self {
            operation: operation.into(),
            status: status(err),
            code: err.code().map(str::to_owned),
            message: DisplayErrorContext(err).to_string(),
        }
    }

    /// A failure that is not an SDK error (e.g. a response without a required field).
    pub(crate) fn other(operation: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            operation: operation.into(),
            status: None,
            code: None,
            message: message.into(),
        }
    }

    pub(crate) fn is_code(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

/// The HTTP status of the service's answer, if there was one.
pub(crate) fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

impl From<AwsError> for StoreError {
    fn from(e: AwsError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<AwsError> for QueueError {
    fn from(e: AwsError) -> Self {
        QueueError::Backend(e.to_string())
    }
}
