//! The refresh policy under load and failure: single flight inside the
//! margin, serving the still-valid token when a refresh fails, cool-downs,
//! and the margin for short-lived tokens.

use std::sync::Arc;
use std::time::Duration;
use token_e2e::{Harness, detail};
use token_host::endpoint::{EndpointConfig, Scripted};

#[tokio::test]
async fn a_thousand_callers_inside_the_margin_cause_one_refresh() {
    let config = EndpointConfig {
        lifetime_secs: 4,
        ..EndpointConfig::default()
    };
    let h = Arc::new(Harness::with(config, |s| s.refresh_margin_seconds = 2).await);
    let old = h.manager.get_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let tokens = h.concurrent_get_token(1000).await;
    assert_eq!(
        h.endpoint.request_count(),
        2,
        "one acquisition, one refresh"
    );
    let new = h.manager.get_token().await.unwrap();
    assert_ne!(new, old);
    assert!(tokens.iter().all(|t| *t == old || *t == new));
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
}

#[tokio::test]
async fn a_failed_refresh_keeps_serving_the_unexpired_token_then_cools_down() {
    let config = EndpointConfig {
        lifetime_secs: 4,
        ..EndpointConfig::default()
    };
    let h = Harness::with(config, |s| {
        s.refresh_margin_seconds = 2;
        s.failure_cooldown_seconds = 60;
    })
    .await;
    let old = h.manager.get_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    h.endpoint.script((0..3).map(|_| Scripted::status(503, "")));
    assert_eq!(
        h.manager.get_token().await.as_deref(),
        Some(old.as_str()),
        "the unexpired token is kept"
    );
    assert_eq!(h.endpoint.request_count(), 4);
    // cool-down: no hammering, still the old token
    for _ in 0..20 {
        assert_eq!(h.manager.get_token().await.as_deref(), Some(old.as_str()));
    }
    assert_eq!(h.endpoint.request_count(), 4);
    let rows = h.rows();
    assert_eq!(
        h.event_types(),
        ["TOKEN_ACQUIRED", "TOKEN_FAILED"],
        "one failure per failed cycle"
    );
    assert_eq!(detail(&rows[1])["error"], "max_retries_exceeded");
    // once it has really expired: none, still without a request during the cool-down
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 4);
    // force-refresh bypasses the cool-down
    assert!(h.manager.force_refresh().await.is_some());
    assert_eq!(h.endpoint.request_count(), 5);
}

#[tokio::test]
async fn after_401_a_cool_down_keeps_get_token_off_the_server_until_force_refresh() {
    let h = Harness::start().await;
    h.endpoint
        .script([Scripted::status(401, r#"{"error":"invalid_client"}"#)]);
    assert_eq!(h.manager.get_token().await, None);
    for _ in 0..10 {
        assert_eq!(h.manager.get_token().await, None);
    }
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(h.rows().len(), 1, "no event for cool-down hits");
    assert!(
        h.manager.force_refresh().await.is_some(),
        "force-refresh bypasses the cool-down"
    );
    assert_eq!(h.endpoint.request_count(), 2);
    assert_eq!(h.event_types(), ["TOKEN_FAILED", "TOKEN_REFRESHED"]);
}

#[tokio::test]
async fn short_lived_tokens_are_cached_for_half_their_life() {
    for lifetime in [60, 300] {
        let config = EndpointConfig {
            lifetime_secs: lifetime,
            ..EndpointConfig::default()
        };
        let h = Harness::with(config, |_| {}).await; // default margin: 300 s
        let token = h.manager.get_token().await.unwrap();
        assert_eq!(
            h.manager.get_token().await.as_deref(),
            Some(token.as_str()),
            "lifetime {lifetime}"
        );
        assert_eq!(
            h.endpoint.request_count(),
            1,
            "lifetime {lifetime}: not refetched on every call"
        );
        let info = h.manager.token_info().await.unwrap();
        let margin = info.expires_at - info.refresh_at;
        assert!(
            margin >= lifetime as i64 / 2 - 1 && margin <= lifetime as i64 / 2 + 1,
            "lifetime {lifetime}: margin {margin}"
        );
    }
}

#[tokio::test]
async fn the_refresh_point_is_spread_by_jitter() {
    let mut refresh_offsets = std::collections::BTreeSet::new();
    for _ in 0..8 {
        let h = Harness::with(EndpointConfig::default(), |s| s.refresh_jitter_percent = 10).await;
        h.manager.get_token().await.unwrap();
        let info = h.manager.token_info().await.unwrap();
        let early = info.expires_at - 300 - info.refresh_at;
        assert!((0..=31).contains(&early), "{early}");
        refresh_offsets.insert(early);
    }
    assert!(
        refresh_offsets.len() > 1,
        "eight managers all chose the same refresh second: {refresh_offsets:?}"
    );
}

#[tokio::test]
async fn client_secret_post_survives_awkward_characters() {
    let config = EndpointConfig {
        client_id: "ïd:with%odd+chars &more".into(),
        client_secret: "s3=cr&t%20+ ü:".into(),
        ..EndpointConfig::default()
    };
    let h = Harness::with(config, |_| {}).await;
    assert!(
        h.manager.get_token().await.is_some(),
        "the endpoint decoded the same credentials"
    );
    let r = &h.endpoint.requests()[0];
    assert_eq!(
        r.form_value("client_id").as_deref(),
        Some("ïd:with%odd+chars &more")
    );
    assert_eq!(
        r.form_value("client_secret").as_deref(),
        Some("s3=cr&t%20+ ü:")
    );
}
