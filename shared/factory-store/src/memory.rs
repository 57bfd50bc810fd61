//! In-process build queue (in progress).
