//! Failure handling against scripted responses: no retry on 401/403 and
//! other client errors, bounded retries on 429/5xx, one event per outcome.

use serde_json::json;
use std::time::Duration;
use token_e2e::{Harness, detail};
use token_host::endpoint::{EndpointConfig, Scripted};

#[tokio::test]
async fn invalid_credentials_are_not_retried() {
    for status in [401, 403] {
        let h = Harness::start().await;
        h.endpoint
            .script([Scripted::status(status, r#"{"error":"invalid_client"}"#)]);
        assert_eq!(h.manager.get_token().await, None);
        assert_eq!(h.endpoint.request_count(), 1, "status {status}");
        let rows = h.rows();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event_type, "TOKEN_FAILED");
        assert!(!rows[0].success);
        assert_eq!(
            detail(&rows[0]),
            json!({"status_code": status, "error": "invalid_credentials"})
        );
    }
}

#[tokio::test]
async fn wrong_secret_is_refused_by_the_real_endpoint() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.client_secret = "wrong".into()
    })
    .await;
    assert_eq!(h.manager.get_token().await, None);
    // the cool-down keeps further calls off the server
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(h.event_types(), ["TOKEN_FAILED"]);
}

#[tokio::test]
async fn transient_statuses_are_retried_three_times_then_recorded_once() {
    for status in [429, 500, 502, 503] {
        let h = Harness::start().await;
        h.endpoint
            .script((0..3).map(|_| Scripted::status(status, "busy")));
        assert_eq!(h.manager.get_token().await, None, "status {status}");
        assert_eq!(h.endpoint.request_count(), 3, "status {status}");
        let rows = h.rows();
        assert_eq!(rows.len(), 1, "status {status}");
        assert_eq!(
            detail(&rows[0]),
            json!({"error": "max_retries_exceeded", "attempts": 3, "last_status": status})
        );
    }
}

#[tokio::test]
async fn a_503_then_200_succeeds_on_the_second_attempt() {
    let h = Harness::start().await;
    h.endpoint.script([Scripted::status(503, "")]);
    assert!(h.manager.get_token().await.is_some());
    assert_eq!(h.endpoint.request_count(), 2);
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED"]);
}

#[tokio::test]
async fn default_backoff_waits_between_two_and_ten_seconds() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        let d = token_host::Settings::default();
        (s.backoff_multiplier_ms, s.backoff_min_ms, s.backoff_max_ms) =
            (d.backoff_multiplier_ms, d.backoff_min_ms, d.backoff_max_ms);
    })
    .await;
    h.endpoint.script((0..3).map(|_| Scripted::status(500, "")));
    assert_eq!(h.manager.get_token().await, None);
    let requests = h.endpoint.requests();
    assert_eq!(requests.len(), 3);
    for pair in requests.windows(2) {
        let wait = pair[1].received_at - pair[0].received_at;
        assert!(
            wait >= Duration::from_secs(2) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
    }
}

#[tokio::test]
async fn other_client_errors_are_not_retried_and_name_the_oauth_error() {
    let h = Harness::start().await;
    h.endpoint.script([Scripted::status(
        400,
        r#"{"error":"invalid_client","error_description":"unknown client"}"#,
    )]);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 1);
    let rows = h.rows();
    assert_eq!(
        detail(&rows[0]),
        json!({"status_code": 400, "error": "unexpected_client_error", "oauth_error": "invalid_client"})
    );
}

#[tokio::test]
async fn a_wrong_token_path_is_a_404_failure() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.token_path = "/oauth/token".into()
    })
    .await;
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(detail(&h.rows()[0])["status_code"], 404);
}

#[tokio::test]
async fn a_200_without_a_usable_token_is_a_failure_naming_the_problem() {
    let cases = [
        ("<html>oops</html>", "body_not_json"),
        ("[]", "body_not_object"),
        (r#"{"token_type":"Bearer"}"#, "access_token_missing"),
        (r#"{"access_token":""}"#, "access_token_empty"),
        (
            r#"{"access_token":"abc","expires_in":-1}"#,
            "expires_in_not_positive",
        ),
        (
            r#"{"access_token":"abc","token_type":"mac"}"#,
            "token_type_not_bearer",
        ),
    ];
    for (body, reason) in cases {
        let h = Harness::start().await;
        h.endpoint.script([Scripted::status(200, body)]);
        assert_eq!(h.manager.get_token().await, None, "{body}");
        assert_eq!(h.endpoint.request_count(), 1, "{body}: not retried");
        let d = detail(&h.rows()[0]);
        assert_eq!(d["error"], "invalid_token_response", "{body}");
        assert_eq!(d["reason"], reason, "{body}");
    }
}

#[tokio::test]
async fn a_server_that_is_down_is_retried_then_recorded() {
    // Bind and drop a listener: the port is closed, connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.base_url = format!("http://127.0.0.1:{port}")
    })
    .await;
    assert_eq!(h.manager.get_token().await, None);
    let rows = h.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        detail(&rows[0]),
        json!({"error": "max_retries_exceeded", "attempts": 3, "last_error": "connection_error"})
    );
}

#[tokio::test]
async fn a_slow_server_times_out_and_is_retried() {
    let h = Harness::with(EndpointConfig::default(), |s| s.first_byte_timeout_ms = 200).await;
    h.endpoint
        .script([Scripted::status(200, "{}").after(Duration::from_secs(2))]);
    let token = h.manager.get_token().await;
    assert!(token.is_some(), "the second attempt succeeds");
    assert_eq!(h.endpoint.request_count(), 2);
    assert_eq!(h.event_types(), ["TOKEN_ACQUIRED"]);
}
