# BrasilIntel token manager. `just --list` shows the recipes.

# Build the component (wasm32-wasip2) and the host.
build:
    cargo build --workspace

# Run the whole test suite (unit, end-to-end, CLI, doc tests).
test:
    cargo test --workspace

# Check the configured credentials against the real token endpoint (exit 0/1/2).
test-auth *ARGS:
    cargo run --quiet --package token-host --bin token-manager -- test-auth {{ARGS}}

# The four test-auth steps against an embedded local token endpoint; no credentials needed.
demo *ARGS:
    cargo run --quiet --package token-host --bin token-manager -- demo {{ARGS}}

# Print the latest api_events rows (e.g. `just events -n 50 --json`).
events *ARGS:
    cargo run --quiet --package token-host --bin token-manager -- events {{ARGS}}

# Auth health from api_events (e.g. `just health --acquire --json`).
health *ARGS:
    cargo run --quiet --package token-host --bin token-manager -- health {{ARGS}}

# Benchmarks with same-run baselines (dev profile: no release rebuild of wasmtime).
bench:
    cargo bench --profile dev --package token-host --bench perf

# Property-based fuzzing of the response and Retry-After parsers (default 300 s).
fuzz SECONDS="300":
    FUZZ_SECONDS={{SECONDS}} cargo test --package token-component --test fuzz -- --ignored --nocapture

# Formatting and lints, for the host target and the component's wasm32 glue.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    cargo clippy --package token-component --target wasm32-wasip2 -- -D warnings
