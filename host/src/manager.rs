//! Loading the component and driving it: [`Runtime`] compiles once,
//! [`TokenManager`] owns one instance and serialises calls into it.

use crate::egress::{EgressPolicy, EgressStats};
use crate::events::{EventRow, EventStore, utc_timestamp};
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use token_component::settings::{ClientAuth, Endpoint, Settings};
use wasmtime::component::{Component, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "token-component",
        exports: { default: async },
    });
}

use bindings::brasilintel::auth::types::{Event, EventType};
use bindings::exports::brasilintel::auth::token_manager as wit;
use bindings::{TokenComponent, TokenComponentPre};

/// The component built with this host (`wasm32-wasip2`, profile `component`).
pub const EMBEDDED_COMPONENT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/token_component.wasm"));

/// Compiled component and linker, shared by any number of managers.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: TokenComponentPre<HostState>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

impl Runtime {
    /// The embedded component, compiled now.
    pub fn embedded() -> anyhow::Result<Runtime> {
        Self::from_bytes(EMBEDDED_COMPONENT, None)
    }

    /// A component file (e.g. another build of the token component).
    pub fn from_file(path: &Path, cache_dir: Option<&Path>) -> anyhow::Result<Runtime> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the component {}", path.display()))?;
        Self::from_bytes(&bytes, cache_dir)
            .with_context(|| format!("cannot load the component {}", path.display()))
    }

    /// A component from bytes. With `cache_dir`, the compiled code is kept
    /// there and reused by later processes (see [`crate::compile_cache`]).
    pub fn from_bytes(bytes: &[u8], cache_dir: Option<&Path>) -> anyhow::Result<Runtime> {
        let mut config = wasmtime::Config::new();
        // Epoch interruption bounds every call into the guest (see `Sandbox`).
        config.epoch_interruption(true);
        let engine = Engine::new(&config)?;
        start_epoch_ticker(&engine);
        let component = match cache_dir {
            Some(dir) => crate::compile_cache::load(&engine, bytes, dir)?,
            None => Component::new(&engine, bytes)
                .map_err(|e| anyhow::Error::from(e).context("not a valid WebAssembly component"))?,
        };
        let mut linker = Linker::<HostState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        TokenComponent::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        let pre = TokenComponentPre::new(linker.instantiate_pre(&component)?).map_err(|e| {
            anyhow::Error::from(e)
                .context("the component does not export brasilintel:auth/token-manager")
        })?;
        Ok(Runtime { engine, pre })
    }

    /// The imports the component declares, as `namespace:package/interface@version`.
    pub fn component_imports(&self) -> Vec<String> {
        let ty = self.pre.instance_pre().component().component_type();
        ty.imports(&self.engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }
}

/// Default cap on the component's linear memory; it uses about 1.1 MiB.
pub const GUEST_MEMORY_LIMIT: usize = 16 << 20;

/// How often the engine's epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Advance `engine`'s epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch thread");
}

/// What the host allows the component: where its HTTP may go, how much
/// memory it may have, and how long one call into it may run.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The only endpoint outgoing HTTP may reach (scheme, host and port);
    /// `None` denies every request.
    pub egress: Option<Endpoint>,
    /// Largest linear memory, bytes.
    pub memory_limit: usize,
    /// Longest one call may take, wall clock, enforced by epoch
    /// interruption: a runaway guest is stopped with a trap. Must exceed
    /// the acquisition deadline, which already bounds a healthy call.
    pub call_budget: Duration,
}

impl Sandbox {
    /// The defaults for `settings`: its token endpoint, 16 MiB, and the
    /// acquisition deadline plus 60 s.
    pub fn for_settings(settings: &Settings) -> Sandbox {
        Sandbox {
            egress: Endpoint::parse(&settings.base_url, &settings.token_path).ok(),
            memory_limit: GUEST_MEMORY_LIMIT,
            call_budget: Duration::from_millis(u64::from(settings.acquisition_deadline_ms))
                + Duration::from_secs(60),
        }
    }
}

/// Caps the guest's memory and tables, and remembers the memory's size.
struct GuestLimits {
    memory_limit: usize,
    memory_bytes: usize,
}

impl wasmtime::ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            return Ok(false);
        }
        self.memory_bytes = desired;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The `T` of the store: WASI, HTTP with the egress policy, the event sink.
pub(crate) struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    egress: EgressPolicy,
    events: EventStore,
    limits: GuestLimits,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl bindings::brasilintel::auth::types::Host for HostState {}

impl bindings::brasilintel::auth::event_sink::Host for HostState {
    fn emit(&mut self, event: Event) {
        self.events.record(EventRow {
            event_type: event_type_name(event.event_type).to_owned(),
            api_name: event.api_name,
            timestamp: utc_timestamp(SystemTime::now()),
            success: event.success,
            detail: Some(event.detail),
            run_id: event.run_id,
        });
    }
}

/// The upper-case member name the application's ORM stores (SPEC §5).
fn event_type_name(t: EventType) -> &'static str {
    match t {
        EventType::TokenAcquired => "TOKEN_ACQUIRED",
        EventType::TokenRefreshed => "TOKEN_REFRESHED",
        EventType::TokenFailed => "TOKEN_FAILED",
        EventType::NewsFetch => "NEWS_FETCH",
        EventType::NewsFallback => "NEWS_FALLBACK",
        EventType::EquityFetch => "EQUITY_FETCH",
        EventType::EquityFallback => "EQUITY_FALLBACK",
        EventType::EmailSent => "EMAIL_SENT",
        EventType::EmailFallback => "EMAIL_FALLBACK",
    }
}

/// The cached token as `token-info` reports it (the component's own type).
pub use token_component::manager::TokenInfo;

/// Call one export of the manager resource on a locked guest, through
/// [`TokenManager::call_on`].
macro_rules! export_call {
    ($self:ident, $guest:expr, $name:literal, $method:ident) => {
        $self
            .call_on($guest, $name, |g| {
                Box::pin(async move {
                    let manager = g.bindings.brasilintel_auth_token_manager().manager();
                    manager.$method(&mut g.store, g.manager).await
                })
            })
            .await
    };
}

type GuestCall<'a, R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>>;

struct Guest {
    store: Store<HostState>,
    bindings: TokenComponent,
    manager: ResourceAny,
}

/// What the component last said about its cache, so that a cached token can
/// be served without entering the guest. The component decides when to
/// refresh: the snapshot only repeats its `refresh-at` (rounded down to the
/// second, so the fast path stops serving no later than the component would).
struct Snapshot {
    token: String,
    refresh_at_ms: i64,
    expires_at_ms: i64,
}

/// One token manager: a component instance behind an async lock, so that it
/// can be shared by any number of tasks (`Arc<TokenManager>`).
///
/// A valid cached token is served from a snapshot without entering the
/// component. Otherwise callers queue for the instance, so an empty cache
/// costs one request however many callers there are; while one caller
/// refreshes, the others get the cached token as long as it has not expired.
pub struct TokenManager {
    runtime: Runtime,
    settings: Settings,
    sandbox: Sandbox,
    events: EventStore,
    egress: Arc<EgressStats>,
    snapshot: std::sync::RwLock<Option<Snapshot>>,
    component_calls: std::sync::atomic::AtomicU64,
    guest: tokio::sync::Mutex<Guest>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("settings", &self.settings)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// A manager in the default [`Sandbox`] for its settings: outgoing HTTP
    /// may reach only the settings' token endpoint.
    pub async fn new(
        runtime: &Runtime,
        settings: Settings,
        events: EventStore,
    ) -> anyhow::Result<Self> {
        let sandbox = Sandbox::for_settings(&settings);
        Self::with_sandbox(runtime, settings, events, sandbox).await
    }

    /// A manager in the given sandbox (e.g. an egress endpoint pinned by the
    /// platform whatever the settings name, or other limits).
    pub async fn with_sandbox(
        runtime: &Runtime,
        settings: Settings,
        events: EventStore,
        sandbox: Sandbox,
    ) -> anyhow::Result<Self> {
        let stats = Arc::new(EgressStats::default());
        let guest = instantiate(runtime, &settings, &events, &sandbox, stats.clone()).await?;
        Ok(TokenManager {
            runtime: runtime.clone(),
            settings,
            sandbox,
            events,
            egress: stats,
            snapshot: std::sync::RwLock::new(None),
            component_calls: Default::default(),
            guest: tokio::sync::Mutex::new(guest),
        })
    }

    /// The token: from the cache while valid, else freshly acquired. `None`
    /// on failure (recorded as `TOKEN_FAILED`).
    pub async fn get_token(&self) -> Option<String> {
        if let Some(token) = self.snapshot_token(|s, now| now < s.refresh_at_ms) {
            return Some(token);
        }
        let mut guest = match self.guest.try_lock() {
            Ok(guest) => guest,
            Err(_) => {
                // Someone is refreshing: an unexpired token beats waiting.
                if let Some(token) = self.snapshot_token(|s, now| now < s.expires_at_ms) {
                    return Some(token);
                }
                let guest = self.guest.lock().await;
                // The caller we waited for may have left a fresh token.
                if let Some(token) = self.snapshot_token(|s, now| now < s.refresh_at_ms) {
                    return Some(token);
                }
                guest
            }
        };
        self.enter_get_token(&mut guest).await
    }

    /// Always enter the component for `get-token`, bypassing the snapshot.
    /// The slow path, for benchmarks and for checking the fast path.
    pub async fn get_token_from_component(&self) -> Option<String> {
        let mut guest = self.guest.lock().await;
        self.enter_get_token(&mut guest).await
    }

    /// Drop the cached token and acquire a new one (`TOKEN_REFRESHED`).
    pub async fn force_refresh(&self) -> Option<String> {
        let mut guest = self.guest.lock().await;
        let token = export_call!(self, &mut guest, "force-refresh", call_force_refresh).flatten();
        self.refresh_snapshot(&mut guest).await;
        token
    }

    /// The cached token with its expiry.
    pub async fn token_info(&self) -> Option<TokenInfo> {
        let mut guest = self.guest.lock().await;
        let info = export_call!(self, &mut guest, "token-info", call_token_info).flatten()?;
        Some(TokenInfo {
            access_token: info.access_token,
            expires_at: info.expires_at,
            token_type: info.token_type,
            refresh_at: info.refresh_at,
        })
    }

    /// Whether a cached token is outside the refresh margin.
    pub async fn is_token_valid(&self) -> bool {
        let mut guest = self.guest.lock().await;
        export_call!(self, &mut guest, "is-token-valid", call_is_token_valid).unwrap_or(false)
    }

    /// Whether base URL, client id and secret are all set (asks the component).
    pub async fn is_configured(&self) -> bool {
        let mut guest = self.guest.lock().await;
        export_call!(self, &mut guest, "is-configured", call_is_configured).unwrap_or(false)
    }

    /// Requests sent to (and denied outside) the token endpoint so far.
    pub fn egress(&self) -> &EgressStats {
        &self.egress
    }

    /// The size of the component's linear memory, in bytes.
    pub async fn guest_memory_bytes(&self) -> usize {
        self.guest.lock().await.store.data().limits.memory_bytes
    }

    /// Calls made into the component so far (the fast path makes none).
    pub fn component_calls(&self) -> u64 {
        self.component_calls
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The event store this manager records into.
    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// The settings (redacted in `Debug`).
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn snapshot_token(&self, usable: impl Fn(&Snapshot, i64) -> bool) -> Option<String> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let s = snapshot.as_ref()?;
        usable(s, unix_ms()).then(|| s.token.clone())
    }

    /// A `get-token` that returned the snapshot's token left the cache as it
    /// was (same token, same expiry); anything else may have changed it.
    /// `get-token` in the component, then the snapshot brought up to date.
    async fn enter_get_token(&self, guest: &mut Guest) -> Option<String> {
        let token = export_call!(self, guest, "get-token", call_get_token).flatten();
        self.refresh_snapshot_if_changed(guest, token.as_deref())
            .await;
        token
    }

    async fn refresh_snapshot_if_changed(&self, guest: &mut Guest, token: Option<&str>) {
        let unchanged = {
            let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            snapshot.as_ref().map(|s| s.token.as_str()) == token
        };
        if !unchanged {
            self.refresh_snapshot(guest).await;
        }
    }

    /// Ask the component what it has cached now (a call without I/O).
    async fn refresh_snapshot(&self, guest: &mut Guest) {
        let info = export_call!(self, guest, "token-info", call_token_info).flatten();
        let snapshot = info.map(|i| Snapshot {
            token: i.access_token,
            refresh_at_ms: i.refresh_at.saturating_mul(1000),
            expires_at_ms: i.expires_at.saturating_mul(1000),
        });
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }

    /// Run one export on the locked guest. A trap does not take the host
    /// down: it is logged and recorded, the instance is replaced (with an
    /// empty cache), and the caller gets `None`.
    async fn call_on<R>(
        &self,
        guest: &mut Guest,
        what: &'static str,
        f: impl for<'a> FnOnce(&'a mut Guest) -> GuestCall<'a, R>,
    ) -> Option<R> {
        self.component_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        guest
            .store
            .set_epoch_deadline(epoch_ticks(self.sandbox.call_budget));
        match f(guest).await {
            Ok(r) => Some(r),
            Err(trap) => {
                tracing::error!(call = what, error = %trap, "the token component trapped; re-instantiating");
                self.events.record(EventRow {
                    event_type: "TOKEN_FAILED".into(),
                    api_name: "auth".into(),
                    timestamp: utc_timestamp(SystemTime::now()),
                    success: false,
                    detail: Some(
                        serde_json::json!({"error": "component_trap", "call": what}).to_string(),
                    ),
                    run_id: None,
                });
                *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = None;
                let fresh = instantiate(
                    &self.runtime,
                    &self.settings,
                    &self.events,
                    &self.sandbox,
                    self.egress.clone(),
                );
                match fresh.await {
                    Ok(fresh) => *guest = fresh,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot re-instantiate the token component")
                    }
                }
                None
            }
        }
    }
}

fn epoch_ticks(budget: Duration) -> u64 {
    (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn instantiate(
    runtime: &Runtime,
    settings: &Settings,
    events: &EventStore,
    sandbox: &Sandbox,
    egress: Arc<EgressStats>,
) -> anyhow::Result<Guest> {
    let state = HostState {
        wasi: WasiCtx::builder().build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        egress: EgressPolicy::new(sandbox.egress.as_ref(), egress),
        events: events.clone(),
        limits: GuestLimits {
            memory_limit: sandbox.memory_limit,
            memory_bytes: 0,
        },
    };
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|s| &mut s.limits);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(epoch_ticks(sandbox.call_budget));
    let bindings = runtime.pre.instantiate_async(&mut store).await?;
    let manager = bindings
        .brasilintel_auth_token_manager()
        .manager()
        .call_constructor(&mut store, &to_wit(settings))
        .await?;
    Ok(Guest {
        store,
        bindings,
        manager,
    })
}

fn to_wit(s: &Settings) -> wit::Settings {
    wit::Settings {
        base_url: s.base_url.clone(),
        client_id: s.client_id.clone(),
        client_secret: s.client_secret.clone(),
        token_path: s.token_path.clone(),
        scope: s.scope.clone(),
        audience: s.audience.clone(),
        client_auth: match s.client_auth {
            ClientAuth::SecretPost => wit::ClientAuth::ClientSecretPost,
            ClientAuth::SecretBasic => wit::ClientAuth::ClientSecretBasic,
        },
        refresh_margin_seconds: s.refresh_margin_seconds,
        max_attempts: s.max_attempts,
        backoff_multiplier_ms: s.backoff_multiplier_ms,
        backoff_min_ms: s.backoff_min_ms,
        backoff_max_ms: s.backoff_max_ms,
        connect_timeout_ms: s.connect_timeout_ms,
        first_byte_timeout_ms: s.first_byte_timeout_ms,
        between_bytes_timeout_ms: s.between_bytes_timeout_ms,
        acquisition_deadline_ms: s.acquisition_deadline_ms,
        failure_cooldown_seconds: s.failure_cooldown_seconds,
        invalid_credentials_cooldown_seconds: s.invalid_credentials_cooldown_seconds,
        refresh_jitter_percent: s.refresh_jitter_percent,
    }
}
