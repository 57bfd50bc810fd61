//! Running a blocking, CPU-bound writer (the initramfs and UKI builders) against the pipeline's
//! async output with bounded memory: the work runs on a blocking thread and writes through
//! [`SyncIoBridge`] into one end of an in-memory pipe of [`PIPE_BYTES`]; this task copies the
//! other end into the output. Back-pressure is the pipe: a slow upload stalls the writer.
//!
//! When the output fails (the store stopped accepting the upload) or the assembly is dropped, the
//! pipe's reading end goes away and the writer's next write fails with a broken pipe, so the
//! blocking work stops soon after instead of running to completion for nobody.

use std::io::Write;

use factory_pipeline::AssembleError;
use tokio::io::AsyncWrite;
use tokio_util::io::SyncIoBridge;

/// The in-memory pipe between the blocking writer and the output.
const PIPE_BYTES: usize = 1 << 20;
/// The writer's buffer in front of the pipe (each pipe write is a trip through the runtime).
const BUFFER_BYTES: usize = 256 << 10;

/// Runs `work` on a blocking thread, streaming what it writes into `out`; `work`'s own error
/// wins over a failed copy (which it sees as a failed write anyway).
pub async fn write_blocking<T, F>(
    out: &mut (dyn AsyncWrite + Send + Unpin),
    work: F,
) -> Result<T, AssembleError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Write) -> Result<T, AssembleError> + Send + 'static,
{
    let (reader, writer) = tokio::io::duplex(PIPE_BYTES);
    let bridge = SyncIoBridge::new(writer);
    let task = tokio::task::spawn_blocking(move || {
        let mut buffered = std::io::BufWriter::with_capacity(BUFFER_BYTES, bridge);
        let value = work(&mut buffered)?;
        buffered
            .flush()
            .map_err(|e| AssembleError::Retryable(format!("writing the output: {e}")))?;
        // Dropping the bridge closes the pipe: the copy below sees the end of the asset.
        Ok(value)
    });
    let copy = async move {
        let mut reader = reader;
        let copied = tokio::io::copy(&mut reader, out).await;
        // The reading end goes away here, also on error, so a blocked writer fails at once.
        drop(reader);
        copied
    };
    let (copied, joined) = tokio::join!(copy, task);
    let value = match joined {
        Ok(result) => result?,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(AssembleError::Retryable(format!("the build task failed: {e}"))),
    };
    copied.map_err(|e| AssembleError::Retryable(format!("streaming the output: {e}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    // Panicking is how a test reports failure.
    #![allow(clippy::unwrap_used)]

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use super::*;

    #[tokio::test]
    async fn streams_everything_in_order() {
        let mut out = Vec::new();
        let total = write_blocking(&mut out, |w| {
            let mut total = 0u64;
            for i in 0..5000u32 {
                let chunk = i.to_le_bytes().repeat(100);
                w.write_all(&chunk).unwrap();
                total += chunk.len() as u64;
            }
            Ok(total)
        })
        .await
        .unwrap();
        assert_eq!(out.len() as u64, total);
        assert_eq!(&out[400..404], &1u32.to_le_bytes());
    }

    #[tokio::test]
    async fn the_work_error_is_returned() {
        let mut out = Vec::new();
        let err = write_blocking(&mut out, |w| -> Result<(), AssembleError> {
            w.write_all(b"partial").unwrap();
            Err(AssembleError::User("no".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(err, AssembleError::User("no".into()));
    }

    /// An output that fails after a few bytes, as a store that stops accepting the upload.
    struct Failing(usize);

    impl AsyncWrite for Failing {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.0 == 0 {
                return Poll::Ready(Err(std::io::Error::other("store gone")));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_failing_output_stops_the_writer() {
        let mut out = Failing(1000);
        let err = write_blocking(&mut out, |w| {
            // Far more than the pipe holds: without the broken pipe this would block forever.
            let chunk = vec![7u8; 1 << 20];
            for _ in 0..64 {
                w.write_all(&chunk)
                    .map_err(|e| AssembleError::Retryable(format!("writing: {e}")))?;
            }
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(matches!(err, AssembleError::Retryable(_)), "{err:?}");
    }
}
