//! WIT glue: exports `token-manager` over [`Manager`] on the WASI platform.

use crate::manager::{Event, EventKind, Manager, Platform, TokenRequest};
use crate::outcome::{HttpResponse, TransportError};
use crate::settings::{ClientAuth, Settings};
use std::cell::RefCell;

wit_bindgen::generate!({
    path: "../wit",
    world: "token-component",
});

use brasilintel::auth::event_sink;
use brasilintel::auth::types::{Event as WitEvent, EventType};
use exports::brasilintel::auth::token_manager as wit;

/// The platform of a real component: WASI clocks, random and HTTP, and the
/// host's event sink.
struct Wasi;

impl Platform for Wasi {
    fn now_ms(&self) -> i64 {
        let t = wasi::clocks::wall_clock::now();
        (t.seconds as i64) * 1000 + i64::from(t.nanoseconds / 1_000_000)
    }

    fn sleep_ms(&mut self, ms: u64) {
        wasi::clocks::monotonic_clock::subscribe_duration(ms.saturating_mul(1_000_000)).block();
    }

    fn random_u64(&mut self) -> u64 {
        wasi::random::insecure::get_insecure_random_u64()
    }

    fn post(&mut self, request: &TokenRequest<'_>) -> Result<HttpResponse, TransportError> {
        crate::wasi_http::post(request)
    }

    fn record(&mut self, event: Event) {
        let event_type = match event.kind {
            EventKind::Acquired => EventType::TokenAcquired,
            EventKind::Refreshed => EventType::TokenRefreshed,
            EventKind::Failed => EventType::TokenFailed,
        };
        event_sink::emit(&WitEvent {
            event_type,
            api_name: "auth".to_owned(),
            success: event.kind != EventKind::Failed,
            detail: event.detail,
            run_id: None,
        });
    }
}

struct Component;

impl wit::Guest for Component {
    type Manager = ManagerResource;
}

/// The exported resource; WIT methods take `&self`, the manager needs `&mut`.
struct ManagerResource(RefCell<Manager<Wasi>>);

impl wit::GuestManager for ManagerResource {
    fn new(s: wit::Settings) -> Self {
        let settings = Settings {
            base_url: s.base_url,
            client_id: s.client_id,
            client_secret: s.client_secret,
            token_path: s.token_path,
            scope: s.scope,
            audience: s.audience,
            client_auth: match s.client_auth {
                wit::ClientAuth::ClientSecretPost => ClientAuth::SecretPost,
                wit::ClientAuth::ClientSecretBasic => ClientAuth::SecretBasic,
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
        };
        ManagerResource(RefCell::new(Manager::new(settings, Wasi)))
    }

    fn is_configured(&self) -> bool {
        self.0.borrow().is_configured()
    }

    fn is_token_valid(&self) -> bool {
        self.0.borrow().is_token_valid()
    }

    fn get_token(&self) -> Option<String> {
        self.0.borrow_mut().get_token()
    }

    fn force_refresh(&self) -> Option<String> {
        self.0.borrow_mut().force_refresh()
    }

    fn token_info(&self) -> Option<wit::TokenInfo> {
        self.0.borrow().token_info().map(|t| wit::TokenInfo {
            access_token: t.access_token,
            expires_at: t.expires_at,
            token_type: t.token_type,
            refresh_at: t.refresh_at,
        })
    }
}

export!(Component);
