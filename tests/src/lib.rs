//! Shared fixtures for the end-to-end tests: the real component in the real
//! host, a real token endpoint on 127.0.0.1, a real SQLite file.

use rusqlite::Connection;
use std::sync::OnceLock;
use tempfile::TempDir;
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::events::{self, EventRow};
use token_host::{EventStore, Runtime, Settings, TokenManager};

/// The embedded component, compiled once per test binary.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::embedded().expect("the embedded component loads"))
}

/// Settings for `endpoint` with millisecond backoff, so retry tests are quick.
pub fn settings_for(endpoint: &TokenEndpoint) -> Settings {
    let config = endpoint.config();
    Settings {
        base_url: endpoint.base_url(),
        client_id: config.client_id.clone(),
        client_secret: config.client_secret.clone(),
        token_path: config.path.clone(),
        backoff_multiplier_ms: 10,
        backoff_min_ms: 10,
        backoff_max_ms: 50,
        refresh_jitter_percent: 0,
        ..Settings::default()
    }
}

/// One manager against one endpoint, writing into a fresh database.
pub struct Harness {
    /// The token endpoint.
    pub endpoint: TokenEndpoint,
    /// The manager under test.
    pub manager: TokenManager,
    /// Its event store.
    pub events: EventStore,
    /// Holds the database directory.
    pub dir: TempDir,
}

impl Harness {
    /// Start an endpoint with `endpoint_config`, and a manager whose settings
    /// `tweak` may change.
    pub async fn with(
        endpoint_config: EndpointConfig,
        tweak: impl FnOnce(&mut Settings),
    ) -> Harness {
        let endpoint = TokenEndpoint::start(endpoint_config)
            .await
            .expect("endpoint starts");
        let mut settings = settings_for(&endpoint);
        tweak(&mut settings);
        let dir = tempfile::tempdir().expect("temp dir");
        let events = EventStore::open(dir.path().join("data/brasilintel.db"));
        let manager = TokenManager::new(runtime(), settings, events.clone())
            .await
            .expect("manager starts");
        Harness {
            endpoint,
            manager,
            events,
            dir,
        }
    }

    /// Default endpoint, default test settings.
    pub async fn start() -> Harness {
        Self::with(EndpointConfig::default(), |_| {}).await
    }

    /// All rows of `api_events`, oldest first, after flushing the writer.
    pub fn rows(&self) -> Vec<EventRow> {
        assert_eq!(self.events.flush(), 0, "events still waiting to be written");
        let conn = Connection::open(self.events.path()).expect("open the events database");
        let mut rows: Vec<EventRow> = events::latest(&conn, 10_000)
            .expect("read api_events")
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        rows.reverse();
        rows
    }

    /// The event types written so far.
    pub fn event_types(&self) -> Vec<String> {
        self.rows().into_iter().map(|r| r.event_type).collect()
    }
}

/// Parse a detail column as JSON.
pub fn detail(row: &EventRow) -> serde_json::Value {
    serde_json::from_str(row.detail.as_deref().expect("detail present")).expect("detail is JSON")
}
