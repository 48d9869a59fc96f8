//! Shared fixtures for the end-to-end tests: the real component in the real
//! host, a real token endpoint on 127.0.0.1, a real SQLite file or a real
//! PostgreSQL server.

pub mod pg_server;

use std::sync::OnceLock;
use tempfile::TempDir;
use token_host::endpoint::{EndpointConfig, TokenEndpoint};
use token_host::events::EventRow;
use token_host::health::Filter;
use token_host::store::Database;
use token_host::{DatabaseUrl, EventStore, Runtime, Settings, TokenManager};

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
        Self::with_events(endpoint_config, tweak, |dir| {
            EventStore::open(dir.join("data/brasilintel.db"))
        })
        .await
    }

    /// [`Harness::with`], with the event store `events` makes (given a
    /// fresh directory).
    pub async fn with_events(
        endpoint_config: EndpointConfig,
        tweak: impl FnOnce(&mut Settings),
        events: impl FnOnce(&std::path::Path) -> EventStore,
    ) -> Harness {
        let endpoint = TokenEndpoint::start(endpoint_config)
            .await
            .expect("endpoint starts");
        let mut settings = settings_for(&endpoint);
        tweak(&mut settings);
        let dir = tempfile::tempdir().expect("temp dir");
        let events = events(dir.path());
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
        rows_of(&self.events)
    }

    /// `n` concurrent `get_token` callers; every one must get a token.
    pub async fn concurrent_get_token(self: &std::sync::Arc<Self>, n: usize) -> Vec<String> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let h = self.clone();
                tokio::spawn(async move { h.manager.get_token().await })
            })
            .collect();
        let mut tokens = Vec::with_capacity(n);
        for t in tasks {
            tokens.push(
                t.await
                    .expect("caller task")
                    .expect("every caller gets a token"),
            );
        }
        tokens
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

/// How a [`FaultServer`] misbehaves after reading a request.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Accept, read the request, never answer.
    NeverAnswer,
    /// Send a 200 announcing `len` bytes, then one byte every `every`.
    Trickle {
        /// Announced body length.
        len: usize,
        /// Pause between bytes.
        every: std::time::Duration,
    },
    /// Send these bytes, then close the connection.
    Raw(Vec<u8>),
    /// Send these bytes, then reset the connection (RST, not FIN).
    RawThenReset(Vec<u8>),
}

/// A loopback server that speaks just enough HTTP/1.1 to misbehave.
pub struct FaultServer {
    addr: std::net::SocketAddr,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultServer {
    /// Listen on an ephemeral port of 127.0.0.1; every connection gets `fault`.
    pub async fn start(fault: Fault) -> FaultServer {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let fault = fault.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // Read the request head and a little body; enough for a token POST.
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    match fault {
                        Fault::NeverAnswer => {
                            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        }
                        Fault::Trickle { len, every } => {
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
                            );
                            if socket.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            for _ in 0..len {
                                tokio::time::sleep(every).await;
                                if socket.write_all(b" ").await.is_err() {
                                    return;
                                }
                            }
                        }
                        Fault::Raw(bytes) => {
                            let _ = socket.write_all(&bytes).await;
                            let _ = socket.shutdown().await;
                        }
                        Fault::RawThenReset(bytes) => {
                            let _ = socket.write_all(&bytes).await;
                            let _ = socket.set_zero_linger();
                            drop(socket);
                        }
                    }
                });
            }
        });
        FaultServer {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests read so far.
    pub fn request_count(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A manager pointed at `base_url` (any server), with quick retries and the
/// given tweaks, writing events into `dir`.
pub async fn manager_for(
    base_url: &str,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Settings),
) -> (TokenManager, EventStore) {
    let mut settings = Settings {
        base_url: base_url.to_owned(),
        client_id: "fault-client".into(),
        client_secret: "fault-secret".into(),
        backoff_multiplier_ms: 10,
        backoff_min_ms: 10,
        backoff_max_ms: 50,
        ..Settings::default()
    };
    tweak(&mut settings);
    let events = EventStore::open(dir.join("events.db"));
    let manager = TokenManager::new(runtime(), settings, events.clone())
        .await
        .expect("manager starts");
    (manager, events)
}

/// All rows of the database behind `events`, oldest first.
pub fn rows_of(events: &EventStore) -> Vec<EventRow> {
    assert_eq!(events.flush(), 0, "events still waiting to be written");
    read_rows(events.database())
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// All rows of `database` with their ids, oldest first.
pub fn read_rows(database: &DatabaseUrl) -> Vec<(i64, EventRow)> {
    token_host::store::blocking(|| {
        let mut db = Database::open_existing(database)
            .expect("open the events database")
            .expect("api_events exists");
        let mut rows = db
            .query(&Filter {
                limit: 1_000_000,
                ..Filter::default()
            })
            .expect("read api_events");
        rows.reverse();
        rows
    })
}
