//! The sandbox: what the component may import, and where its HTTP may go.

use serde_json::json;
use token_e2e::{Harness, detail, runtime, settings_for};
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::{Endpoint, EventStore, Sandbox, TokenManager};

/// The imports the component may have, without versions. A new import is a
/// change to the sandbox contract: review it, then add it here.
const ALLOWED_IMPORTS: &[&str] = &[
    "brasilintel:auth/types",
    "brasilintel:auth/event-sink",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stderr",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stderr",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:http/outgoing-handler",
    "wasi:http/types",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

#[test]
fn component_imports_exactly_the_allowed_set() {
    let imports = runtime().component_imports();
    let names: Vec<&str> = imports
        .iter()
        .map(|i| i.split('@').next().unwrap())
        .collect();
    let unexpected: Vec<_> = names
        .iter()
        .filter(|n| !ALLOWED_IMPORTS.contains(n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "the component imports {unexpected:?}, which the sandbox does not allow (no files, no sockets); \
         if the import is intended, review it and add it to ALLOWED_IMPORTS"
    );
    for required in ["brasilintel:auth/event-sink", "wasi:http/outgoing-handler"] {
        assert!(
            names.contains(&required),
            "{required} missing from {names:?}"
        );
    }
    for import in &imports {
        let version = import.split('@').nth(1).unwrap_or("");
        assert!(
            import.starts_with("brasilintel:") || version.starts_with("0.2."),
            "{import} is not a WASI 0.2 interface"
        );
    }
}

#[tokio::test]
async fn requests_outside_the_token_endpoint_are_denied() {
    let allowed = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let other = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = EventStore::open(dir.path().join("events.db"));
    // The component is configured for `other`; the host only lets `allowed` through.
    let egress = Endpoint::parse(&allowed.base_url(), "/token").unwrap();
    let settings = settings_for(&other);
    let sandbox = Sandbox {
        egress: Some(egress),
        ..Sandbox::for_settings(&settings)
    };
    let manager = TokenManager::with_sandbox(runtime(), settings, events.clone(), sandbox)
        .await
        .unwrap();
    assert_eq!(manager.get_token().await, None);
    assert_eq!(other.request_count(), 0, "nothing reached the other server");
    assert_eq!(allowed.request_count(), 0);
    assert_eq!(manager.egress().denied(), 1);
    assert_eq!(manager.egress().sent(), 0);
    events.flush();
    let conn = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    let rows = token_host::events::latest(&conn, 10).unwrap();
    assert_eq!(rows.len(), 1, "a denial is not retried");
    assert_eq!(detail(&rows[0].1), json!({"error": "request_denied"}));
}

#[tokio::test]
async fn plain_http_to_a_remote_host_is_refused_without_a_request() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.base_url = "http://gateway.example.com".into()
    })
    .await;
    assert!(h.manager.is_configured().await);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.manager.egress().sent() + h.manager.egress().denied(), 0);
    let rows = h.rows();
    assert_eq!(rows.len(), 1, "reported once, not on every call");
    let d = detail(&rows[0]);
    assert_eq!(d["error"], "invalid_configuration");
    assert!(d["reason"].as_str().unwrap().contains("loopback"), "{d}");
}

#[tokio::test]
async fn not_configured_makes_no_request_and_one_event() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.client_secret.clear();
    })
    .await;
    assert!(!h.manager.is_configured().await);
    for _ in 0..10 {
        assert_eq!(h.manager.get_token().await, None);
    }
    assert!(!h.manager.is_token_valid().await);
    assert_eq!(h.manager.token_info().await, None);
    assert_eq!(h.endpoint.request_count(), 0);
    let rows = h.rows();
    assert_eq!(rows.len(), 1, "no flood of events");
    assert_eq!(detail(&rows[0]), json!({"error": "not_configured"}));
}

#[tokio::test]
async fn debug_output_never_shows_credentials_or_tokens() {
    let h = Harness::start().await;
    let token = h.manager.get_token().await.unwrap();
    let info = h.manager.token_info().await.unwrap();
    let printed = format!("{:?} {:?} {:?}", h.manager, info, h.manager.settings());
    let config = h.endpoint.config();
    for secret in [
        config.client_secret.as_str(),
        config.client_id.as_str(),
        token.as_str(),
    ] {
        assert!(
            !printed.contains(secret),
            "Debug output leaks a secret: {printed}"
        );
    }
}

#[test]
fn component_stays_under_the_size_budget() {
    // The `component` profile (opt-level "s", LTO, panic=abort, strip) gives
    // about 188 KB; the default release profile gives 237 KB.
    let size = token_host::manager::EMBEDDED_COMPONENT.len();
    assert!(
        size <= 200_000,
        "the component grew to {size} bytes (budget 200,000)"
    );
}

#[tokio::test]
async fn guest_memory_does_not_grow_across_refreshes() {
    let h = Harness::start().await;
    for _ in 0..50 {
        h.manager.force_refresh().await.unwrap();
    }
    let settled = h.manager.guest_memory_bytes().await;
    assert!(settled > 0 && settled <= token_host::manager::GUEST_MEMORY_LIMIT);
    for _ in 0..500 {
        h.manager.force_refresh().await.unwrap();
    }
    assert_eq!(
        h.manager.guest_memory_bytes().await,
        settled,
        "linear memory grew: a leak per refresh"
    );
    assert_eq!(h.rows().len(), 550);
}

#[tokio::test]
async fn a_call_over_its_budget_traps_is_recorded_and_the_next_call_works() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = EventStore::open(dir.path().join("events.db"));
    let settings = settings_for(&endpoint);
    // A 500 ms budget, and an answer that comes after 1.5 s: the guest is
    // interrupted as soon as it runs again.
    let sandbox = Sandbox {
        call_budget: std::time::Duration::from_millis(500),
        ..Sandbox::for_settings(&settings)
    };
    let manager = TokenManager::with_sandbox(runtime(), settings, events.clone(), sandbox)
        .await
        .unwrap();
    endpoint.script([token_host::endpoint::Scripted::status(503, "")
        .after(std::time::Duration::from_millis(1_500))]);
    assert_eq!(
        manager.get_token().await,
        None,
        "a trap is `none` to the caller"
    );
    let token = manager.get_token().await;
    assert!(token.is_some(), "the host re-instantiated the component");
    events.flush();
    let conn = rusqlite::Connection::open(dir.path().join("events.db")).unwrap();
    let mut rows = token_host::events::latest(&conn, 10).unwrap();
    rows.reverse();
    let types: Vec<_> = rows.iter().map(|(_, r)| r.event_type.as_str()).collect();
    assert_eq!(types, ["TOKEN_FAILED", "TOKEN_ACQUIRED"]);
    assert_eq!(
        detail(&rows[0].1),
        json!({"error": "component_trap", "call": "get-token"})
    );
}

#[tokio::test]
async fn a_memory_limit_below_what_the_component_needs_is_a_clear_error() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings_for(&endpoint);
    let sandbox = Sandbox {
        memory_limit: 64 * 1024,
        ..Sandbox::for_settings(&settings)
    };
    let err = TokenManager::with_sandbox(
        runtime(),
        settings,
        EventStore::open(dir.path().join("e.db")),
        sandbox,
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("memory"), "{err:#}");
}
