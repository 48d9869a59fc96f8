//! Builds the token manager component (`wasm32-wasip2`, profile `component`)
//! so that the host can embed it, adding the Rust target when it is missing.
//!
//! The inner cargo gets its own target directory (sharing the outer one would
//! deadlock on its build lock) and none of the outer build's flags.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "component";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    for path in [
        "component/src",
        "component/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", workspace.join(path).display());
    }
    println!("cargo:rerun-if-env-changed=TOKEN_COMPONENT_WASM");

    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("token_component.wasm");
    // A prebuilt component (e.g. from another toolchain) skips the inner build.
    if let Some(prebuilt) = env::var_os("TOKEN_COMPONENT_WASM") {
        std::fs::copy(&prebuilt, &out).expect("copy TOKEN_COMPONENT_WASM");
        return;
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_target();
    let target_dir = component_target_dir(&workspace);
    let status = Command::new(&cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--package",
            "token-component",
            "--target",
            TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .status()
        .expect("run cargo to build the component");
    assert!(
        status.success(),
        "building the token component for {TARGET} failed"
    );
    let wasm = target_dir
        .join(TARGET)
        .join(PROFILE)
        .join("token_component.wasm");
    std::fs::copy(&wasm, &out).unwrap_or_else(|e| panic!("copy {}: {e}", wasm.display()));
}

/// `<target>/wasm-component`, next to the outer build's own directories.
fn component_target_dir(workspace: &Path) -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        workspace.join(target)
    };
    target.join("wasm-component")
}

/// Add the wasm32-wasip2 standard library with rustup when it is missing, as
/// wasm-pack and cargo-component do.
fn ensure_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("run rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(TARGET).exists() {
        return;
    }
    println!(
        "cargo:warning=the {TARGET} target is missing: installing it with `rustup target add {TARGET}`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match status {
        Ok(s) if s.success() => {}
        _ => panic!(
            "could not install the {TARGET} target; run `rustup target add {TARGET}` and build again"
        ),
    }
}
