//! A deliberately slow [`Assembler`] with deterministic output, shared by the `crash-builder`
//! binary and `tests/builder_crash.rs`: the process that is killed mid-upload and the builder that
//! takes over must produce the same bytes for the same spec.
//!
//! The spec is `{"seed": u64, "size": u64, "file_name": "..."}`; the bytes are a function of
//! `seed` and the byte position only ([`pattern`]), so the chunking does not matter.

use std::time::Duration;

use async_trait::async_trait;
use factory_pipeline::{AssembleError, AssembledMeta, Assembler};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes written per step (the pipeline's own chunk size).
pub const CHUNK: usize = 64 * 1024;

/// Printed on stdout, followed by the byte count, when the assembler stalls
/// ([`SlowAssembler::stall_after`]).
pub const STALLED: &str = "crash-builder: stalled after";

/// Printed on stdout by `crash-builder` once its builder polls the queue.
pub const POLLING: &str = "crash-builder: polling";

/// Writes [`pattern`] in [`CHUNK`]s, sleeping `chunk_delay` after each.
#[derive(Debug, Clone)]
pub struct SlowAssembler {
    pub chunk_delay: Duration,
    /// Once at least this many bytes are written, print [`STALLED`] and wait forever (the
    /// builder keeps renewing its claim meanwhile): a process in the middle of an upload,
    /// for as long as the test needs to observe it and kill it.
    pub stall_after: Option<u64>,
}

/// The spec [`SlowAssembler`] reads.
pub fn spec(seed: u64, size: u64, file_name: &str) -> serde_json::Value {
    serde_json::json!({ "seed": seed, "size": size, "file_name": file_name })
}

/// The 8-byte block `index` of the output for `seed`: splitmix64, little endian.
fn block(seed: u64, index: u64) -> [u8; 8] {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// The output bytes `[start, start + out.len())` for `seed`.
fn fill(seed: u64, start: u64, out: &mut [u8]) {
    let mut position = start;
    let mut done = 0;
    while done < out.len() {
        let bytes = block(seed, position / 8);
        let offset = (position % 8) as usize;
        let n = (8 - offset).min(out.len() - done);
        out[done..done + n].copy_from_slice(&bytes[offset..offset + n]);
        done += n;
        position += n as u64;
    }
}

/// The whole output for `seed` and `size`.
pub fn pattern(seed: u64, size: u64) -> Vec<u8> {
    let mut out = vec![0; usize::try_from(size).unwrap_or(usize::MAX)];
    fill(seed, 0, &mut out);
    out
}

/// The sha256 (hex) of [`pattern`].
pub fn pattern_sha256(seed: u64, size: u64) -> String {
    hex::encode(Sha256::digest(pattern(seed, size)))
}

fn field(spec: &serde_json::Value, name: &str) -> Result<u64, AssembleError> {
    spec[name]
        .as_u64()
        .ok_or_else(|| AssembleError::User(format!("spec field {name} is not a number")))
}

#[async_trait]
impl Assembler for SlowAssembler {
    async fn assemble(
        &self,
        spec: &serde_json::Value,
        out: &mut (dyn AsyncWrite + Send + Unpin),
    ) -> Result<AssembledMeta, AssembleError> {
        let seed = field(spec, "seed")?;
        let size = field(spec, "size")?;
        let file_name = spec["file_name"]
            .as_str()
            .ok_or_else(|| AssembleError::User("spec field file_name is not a string".into()))?;
        let io = |e: std::io::Error| AssembleError::Retryable(e.to_string());
        let mut buf = vec![0; CHUNK];
        let mut written = 0u64;
        while written < size {
            let n = usize::try_from(size - written).map_or(CHUNK, |left| left.min(CHUNK));
            fill(seed, written, &mut buf[..n]);
            out.write_all(&buf[..n]).await.map_err(io)?;
            written += n as u64;
            if self.stall_after.is_some_and(|limit| written >= limit) {
                out.flush().await.map_err(io)?;
                println!("{STALLED} {written}");
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(self.chunk_delay).await;
        }
        out.flush().await.map_err(io)?;
        Ok(AssembledMeta {
            content_type: "application/octet-stream".into(),
            file_name: file_name.to_owned(),
            input_digests: [("pattern".to_owned(), format!("seed:{seed}"))].into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_does_not_depend_on_the_chunking() {
        let whole = pattern(7, 1000);
        let mut pieces = vec![0; 1000];
        fill(7, 0, &mut pieces[..13]);
        fill(7, 13, &mut pieces[13..]);
        assert_eq!(whole, pieces);
        assert_ne!(whole, pattern(8, 1000));
        assert_ne!(whole[..8], whole[8..16]);
    }
}
