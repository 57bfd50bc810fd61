//! Every integration and contract test of the workspace, in one test binary.
//!
//! One binary instead of one per file: each of them linked the AWS SDK, the local server and the
//! stack emulator again (about 170 MB apiece with line tables, 4 GB for the set), which is what
//! filled the CI machine's disk. Test names keep the file as their first path segment, so
//! `cargo nextest run -p factory-tests -E 'test(/^pxe_api::/)'` runs what `--test pxe_api` ran;
//! nextest still runs every test in a process of its own.

mod common;

mod build_on_miss;
mod builder_crash;
mod builder_image;
mod builder_sqs;
mod catalog_api;
mod cloudformation;
mod cloudfront_function;
mod disk_boot;
mod hot_path;
mod http_api;
mod image_api;
mod initramfs_api;
mod iso_boot;
mod lambda_events;
mod media_api;
mod media_boot;
mod meta_report;
mod pipeline_contract;
mod pxe_api;
mod pxe_boot;
mod queue_contract;
mod registry_api;
mod registry_overlay;
mod store_contract;
mod uki_boot;
