//! A second WASI host: the same component, transpiled by jco, on Node.js
//! with preview2-shim providing wasi:http, and a JavaScript event sink.
//! Proves the component needs nothing wasmtime-specific.
//!
//! Needs `node` and `npm` (Node.js 20); `npm ci` runs here when
//! `node/node_modules` is missing. Outside CI a machine without Node.js
//! skips this test with a loud message; in CI (`CI` set) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::manager::EMBEDDED_COMPONENT;

fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../node")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_component_runs_on_node_through_jco() {
    if !have("node") || !have("npm") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Node.js and npm for the second-host test"
        );
        eprintln!("SKIPPED: node/npm not found; install Node.js 20 to run the jco host test");
        return;
    }
    let node = node_dir();
    if !node.join("node_modules/@bytecodealliance/jco").exists() {
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&node));
    }
    // Transpile the embedded component (the same bytes the wasmtime host runs).
    let out = node.join(format!("out/test-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("token_component.wasm"), EMBEDDED_COMPONENT).unwrap();
    let sink = node.join("event-sink.js").canonicalize().unwrap();
    run(Command::new("npx")
        .args([
            "--no-install",
            "jco",
            "transpile",
            "token_component.wasm",
            "-o",
            "js",
            "--quiet",
            "--map",
        ])
        .arg(format!("brasilintel:auth/event-sink={}", sink.display()))
        .current_dir(&out));

    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let events = out.join("events.jsonl");
    let mut cmd = Command::new("node");
    cmd.arg(node.join("run-component.mjs"))
        .env("TOKEN_COMPONENT_JS", out.join("js/token_component.js"))
        .env("BASE_URL", endpoint.base_url())
        .env("CLIENT_ID", &endpoint.config().client_id)
        .env("CLIENT_SECRET", &endpoint.config().client_secret)
        .env("TOKEN_PATH", &endpoint.config().path)
        .env("EVENTS_FILE", &events);
    let output = tokio::task::spawn_blocking(move || run(&mut cmd))
        .await
        .unwrap();
    let result: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");

    assert_eq!(result["configured"], true);
    let first = result["first"].as_str().expect("a token");
    assert!(
        endpoint.verify(first).is_some(),
        "a real token from the endpoint"
    );
    assert_eq!(
        result["cached"], first,
        "the second get-token is a cache hit"
    );
    let refreshed = result["refreshed"].as_str().expect("a refreshed token");
    assert_ne!(refreshed, first);
    assert_eq!(result["valid"], true);
    assert_eq!(
        endpoint.request_count(),
        2,
        "one acquisition, one forced refresh, no request for the cache hit"
    );

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<_> = lines
        .iter()
        .map(|e| e["eventType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["token-acquired", "token-refreshed"]);
    for e in &lines {
        assert_eq!(e["apiName"], "auth");
        let detail: serde_json::Value =
            serde_json::from_str(e["detail"].as_str().unwrap()).unwrap();
        assert_eq!(detail["token_type"], "Bearer");
        assert!(!e.to_string().contains(first) && !e.to_string().contains(refreshed));
    }
    std::fs::remove_dir_all(&out).unwrap();
}
