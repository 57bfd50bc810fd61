//! Shared test support: OCI layouts written by hand, the test release, and a real registry.
#![allow(dead_code)]

pub mod fixture;
pub mod layout;
pub mod registry;
