//! The compiled-component cache: reused when valid, rebuilt when not.

use token_e2e::settings_for;
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::manager::EMBEDDED_COMPONENT;
use token_host::{EventStore, Runtime, TokenManager};

fn cache_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default()
}

async fn works(runtime: &Runtime) {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manager = TokenManager::new(
        runtime,
        settings_for(&endpoint),
        EventStore::open(dir.path().join("e.db")),
    )
    .await
    .unwrap();
    assert!(manager.get_token().await.is_some());
}

#[tokio::test]
async fn compiled_code_is_stored_reused_and_rebuilt_when_damaged() {
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("nested");
    let runtime = Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&dir)).unwrap();
    works(&runtime).await;
    let files = cache_files(&dir);
    assert_eq!(files.len(), 1, "one entry written");
    let written = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    // Reused: the entry is not rewritten.
    works(&Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&dir)).unwrap()).await;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        written
    );

    // Corrupted: ignored and rebuilt.
    let mut data = std::fs::read(&files[0]).unwrap();
    let middle = data.len() / 2;
    data[middle] ^= 0xff;
    std::fs::write(&files[0], &data).unwrap();
    works(&Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&dir)).unwrap()).await;
    assert_ne!(
        std::fs::read(&files[0]).unwrap(),
        data,
        "the damaged entry was replaced"
    );

    // Truncated and empty files too.
    std::fs::write(&files[0], &data[..10]).unwrap();
    works(&Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&dir)).unwrap()).await;
    std::fs::write(&files[0], b"").unwrap();
    works(&Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&dir)).unwrap()).await;
    assert_eq!(cache_files(&dir).len(), 1);
}

#[tokio::test]
async fn an_unwritable_cache_costs_only_the_compile() {
    let cache = tempfile::tempdir().unwrap();
    let blocked = cache.path().join("file-not-dir");
    std::fs::write(&blocked, b"x").unwrap();
    works(&Runtime::from_bytes(EMBEDDED_COMPONENT, Some(&blocked)).unwrap()).await;
}

#[test]
fn a_file_that_is_not_a_component_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not.wasm");
    std::fs::write(&path, b"\\0asm garbage").unwrap();
    let err = format!("{:#}", Runtime::from_file(&path, None).unwrap_err());
    assert!(
        err.contains("not.wasm") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        Runtime::from_file(&dir.path().join("absent.wasm"), None).unwrap_err()
    );
    assert!(err.contains("cannot read the component"), "{err}");
}
