//! Filesystem content store (in progress).
