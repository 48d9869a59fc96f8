//! Wasmtime host for the BrasilIntel token manager component.
//!
//! ```no_run
//! use token_host::{Config, EventStore, Runtime, TokenManager};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = Config::from_env()?;
//! let runtime = Runtime::embedded()?;
//! let events = EventStore::open(config.database.clone());
//! let manager = TokenManager::new(&runtime, config.settings, events).await?;
//! if let Some(token) = manager.get_token().await {
//!     // use it as `Authorization: Bearer {token}`
//! #   let _ = token;
//! }
//! # Ok(())
//! # }
//! ```

pub mod compile_cache;
pub mod config;
pub mod egress;
pub mod endpoint;
pub mod events;
pub mod health;
pub mod manager;
pub mod runner;
pub mod store;

pub use config::{Config, ConfigError, DatabaseUrl, PostgresUrl, TlsMode};
pub use events::{EventRow, EventStore};
pub use manager::{Runtime, Sandbox, TokenInfo, TokenManager};
pub use token_component::settings::{ClientAuth, Endpoint, Settings};

/// The README's examples, compiled as doc tests so that they keep working.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
