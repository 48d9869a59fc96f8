//! The token manager's state machine: cache, refresh policy, retries, events.
//!
//! Everything that touches the world (clock, sleep, randomness, HTTP, the
//! event sink) goes through [`Platform`], so the whole policy unit-tests
//! natively with a virtual clock; the component supplies the WASI platform.

use crate::backoff::Backoff;
use crate::form;
use crate::outcome::{self, Failure, HttpResponse, Transient, TransportError, Verdict};
use crate::response::Grant;
use crate::settings::{Endpoint, Settings};

/// Per-request timeouts, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connect.
    pub connect_ms: u64,
    /// First response byte.
    pub first_byte_ms: u64,
    /// Between body bytes.
    pub between_bytes_ms: u64,
    /// The whole request, response body included: what is left of the
    /// acquisition deadline, so a trickling server cannot outlast it.
    pub total_ms: u64,
}

/// One token request, ready to send. Holds credentials: no `Debug`.
pub struct TokenRequest<'a> {
    /// Where to send it.
    pub endpoint: &'a Endpoint,
    /// The form body.
    pub body: &'a str,
    /// `Authorization` header value, for `client_secret_basic`.
    pub authorization: Option<&'a str>,
    /// Timeouts for this attempt.
    pub timeouts: Timeouts,
}

/// Which `api_events.event_type` an event has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// First token.
    Acquired,
    /// A token replacing a cached one, or a forced refresh.
    Refreshed,
    /// No token.
    Failed,
}

/// One event for the sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The kind.
    pub kind: EventKind,
    /// Detail JSON.
    pub detail: String,
}

/// What the manager needs from the world.
pub trait Platform {
    /// Wall-clock time, Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Block for `ms` milliseconds.
    fn sleep_ms(&mut self, ms: u64);
    /// A random number (for backoff and jitter; need not be cryptographic).
    fn random_u64(&mut self) -> u64;
    /// Send one token request.
    fn post(&mut self, request: &TokenRequest<'_>) -> Result<HttpResponse, TransportError>;
    /// Record an event; must not fail.
    fn record(&mut self, event: Event);
}

/// The cached token, as `token-info` reports it. `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token.
    pub access_token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// `Bearer`.
    pub token_type: String,
    /// When `get-token` stops serving it from the cache, Unix seconds.
    pub refresh_at: i64,
}

impl std::fmt::Debug for TokenInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenInfo")
            .field("access_token", &crate::redact::token(&self.access_token))
            .field("expires_at", &self.expires_at)
            .field("token_type", &self.token_type)
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

struct Cached {
    access_token: String,
    token_type: String,
    expires_at_ms: i64,
    refresh_at_ms: i64,
}

/// The prepared request: built once, since the settings never change.
struct Target {
    endpoint: Endpoint,
    body: String,
    authorization: Option<String>,
}

/// The token manager.
pub struct Manager<P> {
    settings: Settings,
    target: Result<Target, Failure>,
    cache: Option<Cached>,
    /// No attempt before this time (cool-downs), Unix ms.
    quiet_until_ms: i64,
    config_failure_recorded: bool,
    platform: P,
}

impl<P: Platform> Manager<P> {
    /// A manager with an empty cache; makes no request.
    pub fn new(settings: Settings, platform: P) -> Self {
        let target = if !settings.is_configured() {
            Err(Failure::NotConfigured)
        } else {
            Endpoint::parse(&settings.base_url, &settings.token_path)
                .map(|endpoint| {
                    let parts = form::token_request(&settings);
                    Target {
                        endpoint,
                        body: parts.body,
                        authorization: parts.authorization,
                    }
                })
                .map_err(|e| Failure::InvalidConfiguration(e.to_string()))
        };
        Manager {
            settings,
            target,
            cache: None,
            quiet_until_ms: 0,
            config_failure_recorded: false,
            platform,
        }
    }

    /// True iff base URL, client id and secret are all set.
    pub fn is_configured(&self) -> bool {
        self.settings.is_configured()
    }

    /// True iff a cached token exists and is outside the refresh margin.
    pub fn is_token_valid(&self) -> bool {
        let now = self.platform.now_ms();
        self.cache.as_ref().is_some_and(|c| now < c.refresh_at_ms)
    }

    /// The cached token while valid; otherwise acquire (see the WIT docs).
    pub fn get_token(&mut self) -> Option<String> {
        let now = self.platform.now_ms();
        let unexpired = match &self.cache {
            Some(c) if now < c.refresh_at_ms => return Some(c.access_token.clone()),
            Some(c) => now < c.expires_at_ms,
            None => false,
        };
        if now < self.quiet_until_ms {
            // Cool-down after a failure: no request, no event.
            return self.unexpired_token(now);
        }
        let kind = if self.cache.is_some() {
            EventKind::Refreshed
        } else {
            EventKind::Acquired
        };
        match self.acquire(kind) {
            Some(token) => Some(token),
            None if unexpired => {
                let until =
                    self.platform.now_ms() + secs_to_ms(self.settings.failure_cooldown_seconds);
                self.quiet_until_ms = self.quiet_until_ms.max(until);
                self.unexpired_token(self.platform.now_ms())
            }
            None => None,
        }
    }

    /// Drop the cached token and acquire a new one, recorded as a refresh.
    pub fn force_refresh(&mut self) -> Option<String> {
        self.cache = None;
        self.quiet_until_ms = 0;
        self.acquire(EventKind::Refreshed)
    }

    /// The cached token unless it has expired.
    pub fn token_info(&self) -> Option<TokenInfo> {
        let now = self.platform.now_ms();
        let c = self.cache.as_ref().filter(|c| now < c.expires_at_ms)?;
        Some(TokenInfo {
            access_token: c.access_token.clone(),
            expires_at: c.expires_at_ms.div_euclid(1000),
            token_type: c.token_type.clone(),
            refresh_at: c.refresh_at_ms.div_euclid(1000),
        })
    }

    fn unexpired_token(&self, now: i64) -> Option<String> {
        self.cache
            .as_ref()
            .filter(|c| now < c.expires_at_ms)
            .map(|c| c.access_token.clone())
    }

    fn acquire(&mut self, kind: EventKind) -> Option<String> {
        let target = match &self.target {
            Ok(target) => target,
            Err(failure) => {
                // Reported once: a misconfigured service must not flood the table.
                if !self.config_failure_recorded {
                    self.config_failure_recorded = true;
                    let detail = failure.detail();
                    self.platform.record(Event {
                        kind: EventKind::Failed,
                        detail,
                    });
                }
                return None;
            }
        };
        let s = &self.settings;
        let backoff = Backoff::from_settings(s);
        let max_attempts = s.max_attempts.max(1);
        let started = self.platform.now_ms();
        let deadline = started + i64::from(s.acquisition_deadline_ms);
        let mut attempts = 0;
        let mut last = Transient::Status(0);
        let mut waited_ms = 0;
        let mut last_retry_after = None;
        while attempts < max_attempts {
            attempts += 1;
            let remaining = (deadline - self.platform.now_ms()).max(1) as u64;
            let request = TokenRequest {
                endpoint: &target.endpoint,
                body: &target.body,
                authorization: target.authorization.as_deref(),
                timeouts: Timeouts {
                    connect_ms: u64::from(s.connect_timeout_ms).min(remaining),
                    first_byte_ms: u64::from(s.first_byte_timeout_ms).min(remaining),
                    between_bytes_ms: u64::from(s.between_bytes_timeout_ms).min(remaining),
                    total_ms: remaining,
                },
            };
            let result = self.platform.post(&request);
            let now = self.platform.now_ms();
            match outcome::classify(result, now.div_euclid(1000)) {
                Verdict::Granted(grant) => return Some(self.store(grant, kind, now)),
                Verdict::Fail(failure) => {
                    if let Failure::InvalidCredentials { .. } = failure {
                        self.quiet_until_ms =
                            now + secs_to_ms(s.invalid_credentials_cooldown_seconds);
                    }
                    let detail = failure.detail();
                    self.platform.record(Event {
                        kind: EventKind::Failed,
                        detail,
                    });
                    return None;
                }
                Verdict::Retry(cause, retry_after) => {
                    last = cause;
                    if attempts == max_attempts {
                        break;
                    }
                    let random = self.platform.random_u64();
                    let mut wait = backoff.wait_ms(attempts, random);
                    if let Some(after) = retry_after {
                        // Honoured, but never beyond the largest backoff.
                        wait = wait.max(after.saturating_mul(1000)).min(backoff.max_ms);
                        last_retry_after = Some(after);
                    }
                    if now + wait as i64 >= deadline {
                        break;
                    }
                    self.platform.sleep_ms(wait);
                    waited_ms += wait;
                }
            }
        }
        let retry_after = last_retry_after.map(|after| (after, waited_ms));
        let detail = Failure::MaxRetries {
            attempts,
            last,
            retry_after,
        }
        .detail();
        self.platform.record(Event {
            kind: EventKind::Failed,
            detail,
        });
        None
    }

    fn store(&mut self, grant: Grant, kind: EventKind, now: i64) -> String {
        let lifetime_ms = grant.expires_in.saturating_mul(1000);
        // A fixed margin would make a token that lives no longer than the
        // margin due for refresh on every call; cap it at half the lifetime.
        let margin = secs_to_ms(self.settings.refresh_margin_seconds).min(lifetime_ms / 2);
        let jitter_span = margin * i64::from(self.settings.refresh_jitter_percent.min(100)) / 100;
        let jitter = match jitter_span {
            0 => 0,
            span => (self.platform.random_u64() % (span as u64 + 1)) as i64,
        };
        let expires_at_ms = now.saturating_add(lifetime_ms);
        let detail = outcome::grant_detail(&grant);
        let token = grant.access_token.clone();
        self.cache = Some(Cached {
            access_token: grant.access_token,
            token_type: grant.token_type,
            expires_at_ms,
            refresh_at_ms: expires_at_ms - margin - jitter,
        });
        self.quiet_until_ms = 0;
        self.platform.record(Event { kind, detail });
        token
    }
}

fn secs_to_ms(s: u32) -> i64 {
    i64::from(s) * 1000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A virtual world: sleeping advances the clock, responses are scripted.
    #[derive(Default)]
    struct World {
        now_ms: i64,
        script: VecDeque<Result<HttpResponse, TransportError>>,
        requests: Vec<String>,
        sleeps: Vec<u64>,
        events: Vec<Event>,
        random: u64,
    }

    impl Platform for World {
        fn now_ms(&self) -> i64 {
            self.now_ms
        }
        fn sleep_ms(&mut self, ms: u64) {
            self.sleeps.push(ms);
            self.now_ms += ms as i64;
        }
        fn random_u64(&mut self) -> u64 {
            self.random
        }
        fn post(&mut self, request: &TokenRequest<'_>) -> Result<HttpResponse, TransportError> {
            self.requests.push(request.body.to_owned());
            self.script.pop_front().expect("an unscripted request")
        }
        fn record(&mut self, event: Event) {
            self.events.push(event);
        }
    }

    fn token(name: &str, expires_in: i64) -> Result<HttpResponse, TransportError> {
        let body = format!(r#"{{"access_token":"{name}","expires_in":{expires_in}}}"#);
        Ok(HttpResponse {
            status: 200,
            body: body.into_bytes(),
            retry_after: None,
        })
    }

    fn status(status: u16) -> Result<HttpResponse, TransportError> {
        Ok(HttpResponse {
            status,
            body: Vec::new(),
            retry_after: None,
        })
    }

    fn settings() -> Settings {
        Settings {
            base_url: "https://gw.example.com".into(),
            client_id: "client".into(),
            client_secret: "secret".into(),
            refresh_jitter_percent: 0,
            ..Settings::default()
        }
    }

    fn manager(script: Vec<Result<HttpResponse, TransportError>>) -> Manager<World> {
        let world = World {
            now_ms: 1_700_000_000_000,
            script: script.into(),
            ..World::default()
        };
        Manager::new(settings(), world)
    }

    fn kinds(m: &Manager<World>) -> Vec<EventKind> {
        m.platform.events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn acquires_once_then_serves_from_cache() {
        let mut m = manager(vec![token("t1", 3600)]);
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        assert!(m.is_token_valid());
        assert_eq!(m.platform.requests.len(), 1);
        assert_eq!(kinds(&m), [EventKind::Acquired]);
        let fp = crate::outcome::fingerprint("t1");
        let expected = format!(
            r#"{{"expires_in_seconds":3600,"token_type":"Bearer","token_fingerprint":"{fp}"}}"#
        );
        assert_eq!(m.platform.events[0].detail, expected);
        let info = m.token_info().unwrap();
        assert_eq!(info.expires_at, 1_700_000_000 + 3600);
        assert_eq!(info.refresh_at, 1_700_000_000 + 3600 - 300);
    }

    #[test]
    fn refreshes_inside_the_margin() {
        let mut m = manager(vec![token("t1", 3600), token("t2", 3600)]);
        m.get_token();
        m.platform.now_ms += 3_300_000 - 1;
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        m.platform.now_ms += 1;
        assert!(!m.is_token_valid());
        assert_eq!(m.get_token().as_deref(), Some("t2"));
        assert_eq!(kinds(&m), [EventKind::Acquired, EventKind::Refreshed]);
    }

    #[test]
    fn short_lived_tokens_use_half_their_lifetime_as_margin() {
        for lifetime in [60, 300] {
            let mut m = manager(vec![token("t1", lifetime), token("t2", lifetime)]);
            m.get_token();
            m.platform.now_ms += lifetime * 1000 / 2 - 1;
            assert_eq!(m.get_token().as_deref(), Some("t1"), "lifetime {lifetime}");
            m.platform.now_ms += 1;
            assert_eq!(m.get_token().as_deref(), Some("t2"), "lifetime {lifetime}");
        }
    }

    #[test]
    fn jitter_moves_the_refresh_point_earlier_within_ten_percent() {
        let mut m = manager(vec![token("t1", 3600)]);
        m.settings.refresh_jitter_percent = 10;
        m.platform.random = u64::MAX;
        m.get_token();
        let info = m.token_info().unwrap();
        let early = info.expires_at - 300 - info.refresh_at;
        assert!((0..=30).contains(&early), "{early}");
    }

    #[test]
    fn force_refresh_is_recorded_as_refresh() {
        let mut m = manager(vec![token("t1", 3600), token("t2", 3600)]);
        m.get_token();
        assert_eq!(m.force_refresh().as_deref(), Some("t2"));
        assert_eq!(kinds(&m), [EventKind::Acquired, EventKind::Refreshed]);
    }

    #[test]
    fn retries_transient_failures_with_backoff_then_records_once() {
        let mut m = manager(vec![status(503), Err(TransportError::Timeout), status(503)]);
        assert_eq!(m.get_token(), None);
        assert_eq!(m.platform.requests.len(), 3);
        assert_eq!(m.platform.sleeps, [2_000, 2_000]);
        assert_eq!(kinds(&m), [EventKind::Failed]);
        assert_eq!(
            m.platform.events[0].detail,
            r#"{"error":"max_retries_exceeded","attempts":3,"last_status":503}"#
        );
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_largest_backoff() {
        let after = |v: &str| {
            Ok(HttpResponse {
                status: 429,
                body: vec![],
                retry_after: Some(v.into()),
            })
        };
        let mut m = manager(vec![after("5"), after("60"), after("1")]);
        assert_eq!(m.get_token(), None);
        assert_eq!(m.platform.sleeps, [5_000, 10_000]);
        assert_eq!(
            m.platform.events[0].detail,
            r#"{"error":"max_retries_exceeded","attempts":3,"last_status":429,"retry_after_seconds":60,"waited_ms":15000}"#
        );
    }

    #[test]
    fn a_retry_can_succeed() {
        let mut m = manager(vec![status(429), token("t1", 3600)]);
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        assert_eq!(kinds(&m), [EventKind::Acquired]);
    }

    #[test]
    fn invalid_credentials_fail_at_once_then_cool_down() {
        let mut m = manager(vec![status(401), status(403)]);
        assert_eq!(m.get_token(), None);
        assert_eq!(m.get_token(), None);
        assert_eq!(
            m.platform.requests.len(),
            1,
            "no request during the cool-down"
        );
        assert_eq!(m.platform.events.len(), 1);
        assert!(m.platform.sleeps.is_empty());
        // force-refresh bypasses the cool-down
        assert_eq!(m.force_refresh(), None);
        assert_eq!(m.platform.requests.len(), 2);
        assert_eq!(
            m.platform.events[1].detail,
            r#"{"status_code":403,"error":"invalid_credentials"}"#
        );
    }

    #[test]
    fn failed_refresh_keeps_serving_the_unexpired_token() {
        let mut m = manager(vec![
            token("t1", 3600),
            status(500),
            status(500),
            status(500),
            token("t2", 3600),
        ]);
        m.get_token();
        m.platform.now_ms += 3_400_000;
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        assert_eq!(kinds(&m), [EventKind::Acquired, EventKind::Failed]);
        // cool-down: no new attempt, still the old token
        let before = m.platform.requests.len();
        assert_eq!(m.get_token().as_deref(), Some("t1"));
        assert_eq!(m.platform.requests.len(), before);
        m.platform.now_ms += 30_000;
        assert_eq!(m.get_token().as_deref(), Some("t2"));
        assert_eq!(
            kinds(&m),
            [EventKind::Acquired, EventKind::Failed, EventKind::Refreshed]
        );
    }

    #[test]
    fn deadline_cuts_retries_short() {
        let mut m = manager(vec![status(503), status(503), status(503)]);
        m.settings.acquisition_deadline_ms = 3_000;
        assert_eq!(m.get_token(), None);
        assert_eq!(m.platform.requests.len(), 2);
        assert!(m.platform.events[0].detail.contains(r#""attempts":2"#));
    }

    #[test]
    fn not_configured_makes_no_request_and_records_once() {
        let mut m = Manager::new(Settings::default(), World::default());
        assert!(!m.is_configured());
        for _ in 0..5 {
            assert_eq!(m.get_token(), None);
            assert_eq!(m.force_refresh(), None);
        }
        assert!(m.platform.requests.is_empty());
        assert_eq!(m.platform.events.len(), 1);
        assert_eq!(m.platform.events[0].detail, r#"{"error":"not_configured"}"#);
    }

    #[test]
    fn invalid_base_url_is_reported_once_without_secrets() {
        let mut s = settings();
        s.base_url = "http://gw.example.com".into();
        let mut m = Manager::new(s, World::default());
        assert!(m.is_configured());
        assert_eq!(m.get_token(), None);
        assert_eq!(m.get_token(), None);
        assert_eq!(m.platform.events.len(), 1);
        assert!(
            m.platform.events[0]
                .detail
                .contains("invalid_configuration")
        );
        assert!(!m.platform.events[0].detail.contains("secret"));
    }

    #[test]
    fn unusable_response_is_not_retried() {
        let mut m = manager(vec![Ok(HttpResponse {
            status: 200,
            body: b"<html>".to_vec(),
            retry_after: None,
        })]);
        assert_eq!(m.get_token(), None);
        assert_eq!(m.platform.requests.len(), 1);
        assert_eq!(
            m.platform.events[0].detail,
            r#"{"status_code":200,"error":"invalid_token_response","reason":"body_not_json"}"#
        );
    }
}
