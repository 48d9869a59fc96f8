//! Compiled-component cache: compile once, load in milliseconds afterwards.
//!
//! The file name is keyed by the engine's compatibility hash (wasmtime
//! version and configuration), this crate's version and the component's
//! bytes, so a stale entry is never picked up. Each file starts with the
//! SHA-256 of the rest, so a truncated or corrupted file is ignored and
//! rebuilt rather than handed to `Component::deserialize`.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// `$TOKEN_MANAGER_CACHE_DIR`, else `$XDG_CACHE_HOME/brasilintel-token-manager`,
/// else `$HOME/.cache/brasilintel-token-manager`.
pub fn default_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("TOKEN_MANAGER_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("brasilintel-token-manager")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/brasilintel-token-manager")))
}

/// The cache file for `bytes` compiled by `engine`.
pub fn entry(engine: &Engine, bytes: &[u8], dir: &Path) -> PathBuf {
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut key = Sha256::new();
    key.update(compat.finish().to_le_bytes());
    key.update(env!("CARGO_PKG_VERSION").as_bytes());
    key.update(bytes);
    let hex: String = key.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    dir.join(format!("token-component-{hex}.cwasm"))
}

/// Load the compiled component from `dir`, or compile it and store it there.
/// A cache that cannot be read or written costs only the compile time.
pub fn load(engine: &Engine, bytes: &[u8], dir: &Path) -> anyhow::Result<Component> {
    let path = entry(engine, bytes, dir);
    if let Some(component) = read(engine, &path) {
        tracing::debug!(path = %path.display(), "loaded the compiled component from the cache");
        return Ok(component);
    }
    let component = Component::new(engine, bytes)
        .map_err(|e| anyhow::Error::from(e).context("not a valid WebAssembly component"))?;
    if let Err(e) = write(&component, &path) {
        tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cannot write the compiled-component cache");
    }
    Ok(component)
}

fn read(engine: &Engine, path: &Path) -> Option<Component> {
    let data = std::fs::read(path).ok()?;
    let (digest, code) = data.split_at_checked(32)?;
    if Sha256::digest(code).as_slice() != digest {
        tracing::warn!(path = %path.display(), "ignoring a corrupted compiled-component cache file");
        return None;
    }
    // SAFETY: `code` is exactly what `Component::serialize` wrote for this
    // engine configuration (the digest and the key in the name say so);
    // wasmtime checks its own header and version as well.
    match unsafe { Component::deserialize(engine, code) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a stale compiled-component cache file");
            None
        }
    }
}

fn write(component: &Component, path: &Path) -> anyhow::Result<()> {
    let code = component.serialize().map_err(anyhow::Error::from)?;
    let dir = path.parent().context("cache path has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut data = Sha256::digest(&code).to_vec();
    data.extend_from_slice(&code);
    // Write then rename, so a concurrent reader never sees half a file.
    let tmp = dir.join(format!(
        ".{}.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("entry"),
        std::process::id()
    ));
    std::fs::write(&tmp, &data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename into {}", path.display()))?;
    Ok(())
}
