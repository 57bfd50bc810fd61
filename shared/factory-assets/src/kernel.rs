//! The `kernel-<arch>` asset: `usr/install/<arch>/vmlinuz` of the verified imager image, streamed.

use factory_core::arch::Arch;
use factory_pipeline::AssembleError;
use factory_upstream::Upstream;
use tokio::io::AsyncWrite;

use crate::imager;
use crate::spec::Spec;

pub(crate) async fn assemble(
    upstream: &Upstream,
    spec: &Spec,
    arch: Arch,
    out: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), AssembleError> {
    let dir = crate::scratch_dir()?;
    let paths = imager::extract(upstream, &spec.inputs, arch, &[imager::KERNEL], dir.path()).await?;
    let mut file = tokio::fs::File::open(&paths[0])
        .await
        .map_err(|e| AssembleError::Retryable(format!("opening the kernel: {e}")))?;
    tokio::io::copy(&mut file, out)
        .await
        .map_err(|e| AssembleError::Retryable(format!("streaming the kernel: {e}")))?;
    Ok(())
}
