//! Streaming plumbing with bounded memory: the assembler writes into a [`ChannelWriter`], which
//! hashes every byte and forwards chunks through a small bounded channel to the store's
//! `put_stream`, which reads them as an `AsyncRead`. At most `CHANNEL_DEPTH + 1` chunks of
//! `CHUNK` bytes are buffered here, plus whatever the store buffers (one multipart part on S3).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::Sink;
use sha2::{Digest, Sha256, Sha512};
use tokio::io::AsyncWrite;

const CHUNK: usize = 64 * 1024;
const CHANNEL_DEPTH: usize = 4;

/// Size and digests of a byte sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digests {
    pub size: u64,
    pub sha256: String,
    pub sha512: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Hashes {
    size: u64,
    sha256: Sha256,
    sha512: Sha512,
}

impl Hashes {
    pub fn update(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        self.sha256.update(data);
        self.sha512.update(data);
    }

    pub fn finish(self) -> Digests {
        Digests {
            size: self.size,
            sha256: hex::encode(self.sha256.finalize()),
            sha512: hex::encode(self.sha512.finalize()),
        }
    }
}

/// The reading half handed to `put_stream`.
pub(crate) type ChunkReceiver = mpsc::Receiver<io::Result<Bytes>>;

/// An `AsyncWrite` that hashes and forwards into a bounded channel.
#[derive(Debug)]
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: BytesMut,
    hashes: Hashes,
}

pub(crate) fn channel() -> (ChannelWriter, ChunkReceiver) {
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    (
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
            hashes: Hashes::default(),
        },
        rx,
    )
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the store stopped reading the object body",
    )
}

impl ChannelWriter {
    /// Sends the buffered bytes once the channel has room.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.tx).poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(_)) => Poll::Ready(Err(closed())),
            Poll::Ready(Ok(())) => {
                let chunk = self.buf.split().freeze();
                Poll::Ready(Pin::new(&mut self.tx).start_send(Ok(chunk)).map_err(|_| closed()))
            }
        }
    }

    /// Flushes the rest and ends the body normally; returns the digests of everything written.
    pub async fn finish(mut self) -> io::Result<Digests> {
        futures::future::poll_fn(|cx| self.poll_send_buf(cx)).await?;
        self.tx.close_channel();
        Ok(self.hashes.finish())
    }

    /// Ends the body with an error, so that `put_stream` fails and stores nothing.
    pub async fn abort(mut self, reason: &str) {
        use futures::SinkExt;
        // If the reader is already gone, there is nothing left to abort.
        let _ = self
            .tx
            .send(Err(io::Error::other(format!("build aborted: {reason}"))))
            .await;
    }
}

impl AsyncWrite for ChannelWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buf.len() >= CHUNK {
            match this.poll_send_buf(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = data.len().min(CHUNK - this.buf.len());
        let accepted = &data[..n];
        this.buf.extend_from_slice(accepted);
        this.hashes.update(accepted);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send_buf(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutting down only flushes: the body ends when the builder calls `finish`, after the
        // assembler reported success. An assembler that shuts down and then fails must not commit.
        self.get_mut().poll_send_buf(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn forwards_every_byte_in_bounded_chunks_and_hashes_them() {
        let data: Vec<u8> = (0..(3 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let (mut writer, rx) = channel();
        let reader = tokio::spawn(rx.collect::<Vec<_>>());
        let expected = data.clone();
        writer.write_all(&data).await.unwrap();
        let digests = writer.finish().await.unwrap();
        let chunks = reader.await.unwrap();
        assert!(chunks.iter().all(|c| c.as_ref().unwrap().len() <= CHUNK));
        let received: Vec<u8> = chunks.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(received, expected);
        assert_eq!(digests.size, expected.len() as u64);
        assert_eq!(digests.sha256, hex::encode(Sha256::digest(&expected)));
        assert_eq!(digests.sha512, hex::encode(Sha512::digest(&expected)));
    }

    #[tokio::test]
    async fn abort_ends_the_body_with_an_error() {
        let (mut writer, rx) = channel();
        writer.write_all(b"partial").await.unwrap();
        writer.abort("assembler failed").await;
        let items: Vec<_> = rx.collect().await;
        assert!(items.last().unwrap().is_err());
    }
}
