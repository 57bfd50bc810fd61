//! Streaming a layer blob as tar entries, on a blocking thread.
//!
//! Design: the blob stream (async) is wrapped in a [`VerifyingReader`], bridged to a synchronous
//! `Read` with `SyncIoBridge`, decompressed with `flate2`/`zstd` and parsed with the `tar` crate,
//! all inside `spawn_blocking`; memory stays bounded by the buffers. The blob is always read to
//! its end so its digest is checked; a mismatch fails the whole operation, after the entries were
//! handed out, so callers must treat their results as garbage unless the call returned `Ok`.

use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::io::SyncIoBridge;

use super::manifest::Descriptor;
use super::paths::{self, EntryPath};
use crate::digest::{content_mismatch, VerifyingReader};
use crate::source::{BlobStream, OciSource, UpstreamError};

/// Layer compressions the factory reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression of a layer media type, `None` for media types that are not filesystem layers.
pub fn compression(media_type: &str) -> Option<Compression> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// What the blocking side needs to fetch and read layers.
#[derive(Debug, Clone)]
pub struct LayerCtx {
    pub source: Arc<dyn OciSource>,
    pub repository: String,
    /// `repository@digest`, for messages.
    pub image: String,
    pub runtime: Handle,
    /// Set when the caller's future is dropped, so the blocking thread stops reading.
    pub cancelled: Arc<AtomicBool>,
}

impl LayerCtx {
    fn invalid(&self, reason: String) -> UpstreamError {
        UpstreamError::Invalid {
            image: self.image.clone(),
            reason,
        }
    }

    /// Maps a read error from the tar/decompression stack: errors of the blob itself are
    /// digest mismatches (`Invalid`) or transport failures (`Unavailable`); anything the parsers
    /// raised means a malformed layer (`Invalid`).
    pub fn read_error(&self, layer: &str, err: io::Error) -> UpstreamError {
        match err.get_ref().and_then(|e| e.downcast_ref::<FromBlob>()) {
            Some(FromBlob(inner)) => match content_mismatch(inner) {
                Some(mismatch) => self.invalid(format!("layer {layer}: {mismatch}")),
                None => UpstreamError::Unavailable {
                    source_name: self.source.describe(),
                    message: format!("reading layer {layer} of {}: {inner}", self.image),
                },
            },
            None => self.invalid(format!("layer {layer}: {err}")),
        }
    }
}

/// Marks errors that came from reading the blob (as opposed to parsing it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct FromBlob(io::Error);

/// The blob as a synchronous reader whose errors are tagged [`FromBlob`], and which stops when
/// the operation was cancelled.
struct BlobReader {
    inner: SyncIoBridge<VerifyingReader<BlobStream>>,
    cancelled: Arc<AtomicBool>,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancelled.load(Ordering::Relaxed) {
            // Not `Interrupted`: readers retry that kind, and this must stop them.
            return Err(io::Error::other(FromBlob(io::Error::other(
                "operation cancelled",
            ))));
        }
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), FromBlob(e)))
    }
}

type Source = BufReader<BlobReader>;

/// The decompressor, kept concrete so the blob can be drained after the tar end marker.
enum Decoder {
    Plain(Source),
    // Boxed: the gzip state is several times the size of the others.
    Gzip(Box<flate2::bufread::MultiGzDecoder<Source>>),
    Zstd(zstd::stream::read::Decoder<'static, Source>),
}

impl Read for Decoder {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl Decoder {
    /// Reads whatever follows the tar end marker, then the rest of the blob, so the verifying
    /// reader reaches EOF and checks the digest.
    fn drain(mut self) -> io::Result<()> {
        io::copy(&mut self, &mut io::sink())?;
        let mut rest: Source = match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish(),
        };
        loop {
            let n = rest.fill_buf()?.len();
            if n == 0 {
                return Ok(());
            }
            rest.consume(n);
        }
    }
}

/// A layer entry as the consumers see it.
#[derive(Debug)]
pub enum Kind {
    File {
        size: u64,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    /// The link target as stored (may be absolute: it is data, resolved inside the root).
    Symlink(String),
    /// The normalised path of the earlier entry this one links to.
    Hardlink(String),
    /// Devices, FIFOs, PAX global headers: not extracted.
    Other,
}

pub struct Entry<'a> {
    pub path: EntryPath,
    pub kind: Kind,
    pub data: &'a mut dyn Read,
    /// Classifies an error from `data` (digest mismatch, transport, malformed layer).
    pub read_error: &'a dyn Fn(io::Error) -> UpstreamError,
}

impl std::fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Fetches a layer and calls `visit` for each entry, in archive order; then drains and verifies
/// the blob. Must run on a blocking thread (it blocks on the runtime for network reads).
pub fn for_each_entry(
    ctx: &LayerCtx,
    layer: &Descriptor,
    mut visit: impl FnMut(Entry<'_>) -> Result<(), UpstreamError>,
) -> Result<(), UpstreamError> {
    let media_type = layer.media_type.as_deref().unwrap_or_default();
    let compression = compression(media_type).ok_or_else(|| {
        ctx.invalid(format!(
            "layer {} has unsupported media type {media_type:?}",
            layer.digest
        ))
    })?;
    let stream = ctx
        .runtime
        .block_on(ctx.source.blob(&ctx.repository, &layer.digest))?;
    let verifying = VerifyingReader::new(stream, &layer.digest, layer.size);
    let blob = BlobReader {
        inner: SyncIoBridge::new_with_handle(verifying, ctx.runtime.clone()),
        cancelled: ctx.cancelled.clone(),
    };
    let source = BufReader::with_capacity(64 << 10, blob);
    let err = |e: io::Error| ctx.read_error(&layer.digest, e);
    let decoder = match compression {
        Compression::None => Decoder::Plain(source),
        Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(source))),
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(source).map_err(err)?),
    };
    let mut archive = tar::Archive::new(decoder);
    for entry in archive.entries().map_err(err)? {
        let mut entry = entry.map_err(err)?;
        let path = paths::classify(&entry.path_bytes())
            .map_err(|reason| ctx.invalid(format!("layer {}: {reason}", layer.digest)))?;
        let kind =
            kind_of(&entry).map_err(|reason| ctx.invalid(format!("layer {}: {reason}", layer.digest)))?;
        visit(Entry {
            path,
            kind,
            data: &mut entry,
            read_error: &err,
        })?;
    }
    archive.into_inner().drain().map_err(err)
}

fn kind_of<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Kind, String> {
    let header = entry.header();
    let mode = || {
        header
            .mode()
            .map(|m| m & 0o7777)
            .map_err(|e| format!("bad mode: {e}"))
    };
    let link = || -> Result<String, String> {
        let target = entry.link_name_bytes().ok_or("link without a target")?;
        String::from_utf8(target.into_owned()).map_err(|_| "non-UTF-8 link target".to_string())
    };
    Ok(match header.entry_type() {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File {
            size: entry.size(),
            mode: mode()?,
        },
        tar::EntryType::Directory => Kind::Dir { mode: mode()? },
        tar::EntryType::Symlink => Kind::Symlink(link()?),
        tar::EntryType::Link => Kind::Hardlink(paths::normalize(&link()?)?),
        _ => Kind::Other,
    })
}

/// Sets the cancellation flag when dropped: the async caller holds it, so dropping the caller's
/// future stops the blocking reader at its next read.
#[derive(Debug)]
pub struct CancelOnDrop(pub Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            compression("application/vnd.oci.image.layer.v1.tar"),
            Some(Compression::None)
        );
        assert_eq!(
            compression("application/vnd.dev.cosign.simplesigning.v1+json"),
            None
        );
    }
}
