//! The BrasilIntel token manager component.
//!
//! The policy (settings, request building, response parsing, classification,
//! backoff, cache and refresh decisions, event details) is plain Rust in the
//! modules below and unit-tests natively. On `wasm32` the [`guest`] glue
//! exports it as the WIT `token-manager` interface, with `wasi:http` as its
//! only way out.

pub mod backoff;
pub mod base64;
pub mod form;
pub mod manager;
pub mod outcome;
pub mod redact;
pub mod response;
pub mod retry_after;
pub mod settings;
pub mod sha256;

#[cfg(target_arch = "wasm32")]
mod guest;
#[cfg(target_arch = "wasm32")]
mod wasi_http;
