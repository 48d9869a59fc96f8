//! Acquisition, cache, proactive and forced refresh through the real component.

use serde_json::json;
use std::time::Duration;
use token_e2e::{Harness, detail};
use token_host::endpoint::EndpointConfig;

#[tokio::test]
async fn acquires_with_one_well_formed_form_post() {
    let h = Harness::start().await;
    let token = h.manager.get_token().await.expect("a token");
    assert!(
        h.endpoint.verify(&token).is_some(),
        "the token is the endpoint's signed JWT"
    );

    let requests = h.endpoint.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/coreapi/access-management/v1/token");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        r.form_value("grant_type").as_deref(),
        Some("client_credentials")
    );
    assert_eq!(
        r.form_value("client_id").as_deref(),
        Some(h.endpoint.config().client_id.as_str())
    );
    assert_eq!(
        r.form_value("client_secret").as_deref(),
        Some(h.endpoint.config().client_secret.as_str())
    );
    assert!(r.header("authorization").is_none());

    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].event_type, "TOKEN_ACQUIRED");
    assert_eq!(rows[0].api_name, "auth");
    assert!(rows[0].success);
    assert_eq!(rows[0].run_id, None);
    let fingerprint = token_component::outcome::fingerprint(&token);
    let expected = format!(
        r#"{{"expires_in_seconds":3600,"token_type":"Bearer","token_fingerprint":"{fingerprint}"}}"#
    );
    assert_eq!(rows[0].detail.as_deref(), Some(expected.as_str()));
    assert!(!rows[0].detail.as_deref().unwrap().contains(&token));

    let info = h.manager.token_info().await.expect("token info");
    assert_eq!(info.access_token, token);
    assert_eq!(info.token_type, "Bearer");
    let claims = h.endpoint.verify(&token).unwrap();
    assert!((info.expires_at - claims["exp"].as_i64().unwrap()).abs() <= 1);
    assert!(h.manager.is_token_valid().await);
    assert!(h.manager.is_configured().await);
}

#[tokio::test]
async fn second_get_token_is_served_from_the_cache() {
    let h = Harness::start().await;
    let first = h.manager.get_token().await.unwrap();
    for _ in 0..5 {
        assert_eq!(h.manager.get_token().await.as_deref(), Some(first.as_str()));
    }
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(h.manager.egress().sent(), 1);
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED"]);
}

#[tokio::test]
async fn refreshes_proactively_inside_the_margin() {
    // expires_in = margin + 2 s
    let config = EndpointConfig {
        lifetime_secs: 4,
        ..EndpointConfig::default()
    };
    let h = Harness::with(config, |s| s.refresh_margin_seconds = 2).await;
    let first = h.manager.get_token().await.unwrap();
    assert!(h.manager.is_token_valid().await);
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert!(
        !h.manager.is_token_valid().await,
        "inside the margin the token is no longer valid"
    );
    let second = h.manager.get_token().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(h.endpoint.request_count(), 2);
    let rows = h.rows();
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
    let fingerprint = token_component::outcome::fingerprint(&second);
    assert_eq!(
        detail(&rows[1]),
        json!({"expires_in_seconds": 4, "token_type": "Bearer", "token_fingerprint": fingerprint})
    );
}

#[tokio::test]
async fn force_refresh_gets_a_new_token_recorded_as_refresh() {
    let h = Harness::start().await;
    let first = h.manager.get_token().await.unwrap();
    let second = h.manager.force_refresh().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(
        h.manager.get_token().await.as_deref(),
        Some(second.as_str())
    );
    assert_eq!(h.endpoint.request_count(), 2);
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
}

#[tokio::test]
async fn concurrent_callers_share_one_request() {
    let h = std::sync::Arc::new(Harness::start().await);
    let mut tokens = h.concurrent_get_token(1000).await;
    tokens.dedup();
    assert_eq!(tokens.len(), 1);
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED"]);
}

#[tokio::test]
async fn client_secret_basic_sends_encoded_credentials() {
    let config = EndpointConfig {
        client_id: "svc:brasil intel".into(),
        client_secret: "p%ss+wörd: ok".into(),
        ..EndpointConfig::default()
    };
    let h = Harness::with(config, |s| {
        s.client_auth = token_host::ClientAuth::SecretBasic;
        s.scope = Some("news equity".into());
        s.audience = Some("https://mmc.example.com/core".into());
    })
    .await;
    assert!(
        h.manager.get_token().await.is_some(),
        "the endpoint accepted the Basic credentials"
    );
    let r = &h.endpoint.requests()[0];
    assert!(r.header("authorization").unwrap().starts_with("Basic "));
    assert_eq!(r.form_value("client_secret"), None);
    assert_eq!(r.form_value("scope").as_deref(), Some("news equity"));
    assert_eq!(
        r.form_value("audience").as_deref(),
        Some("https://mmc.example.com/core")
    );
}

#[tokio::test]
async fn a_valid_cached_token_is_served_without_entering_the_component() {
    let h = Harness::start().await;
    let token = h.manager.get_token().await.unwrap();
    let calls = h.manager.component_calls();
    for _ in 0..100 {
        assert_eq!(h.manager.get_token().await.as_deref(), Some(token.as_str()));
    }
    assert_eq!(
        h.manager.component_calls(),
        calls,
        "the fast path made no component call"
    );
    assert_eq!(
        h.manager.get_token_from_component().await.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(h.endpoint.request_count(), 1);
}

#[tokio::test]
async fn callers_get_the_unexpired_token_while_a_refresh_is_in_flight() {
    let config = EndpointConfig {
        lifetime_secs: 6,
        ..EndpointConfig::default()
    };
    let h = std::sync::Arc::new(Harness::with(config, |s| s.refresh_margin_seconds = 3).await);
    let old = h.manager.get_token().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    // The refresh answers only after 1.5 s.
    let slow = token_host::endpoint::Scripted::json(
        json!({"access_token": "new-token-from-slow-refresh", "expires_in": 60}),
    )
    .after(Duration::from_millis(1_500));
    h.endpoint.script([slow]);
    let refresher = tokio::spawn({
        let h = h.clone();
        async move { h.manager.get_token().await }
    });
    // Once the endpoint has the refresh request, the refresher holds the instance.
    let waiting = std::time::Instant::now();
    while h.endpoint.request_count() < 2 {
        assert!(
            waiting.elapsed() < Duration::from_secs(5),
            "the refresh never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    assert_eq!(h.manager.get_token().await.as_deref(), Some(old.as_str()));
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "did not wait for the refresh: {:?}",
        started.elapsed()
    );
    assert_eq!(
        refresher.await.unwrap().as_deref(),
        Some("new-token-from-slow-refresh")
    );
    assert_eq!(
        h.manager.get_token().await.as_deref(),
        Some("new-token-from-slow-refresh")
    );
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED", "TOKEN_REFRESHED"]);
}
