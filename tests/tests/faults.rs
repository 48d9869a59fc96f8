//! Network faults and time bounds against misbehaving loopback servers.

use serde_json::json;
use std::time::{Duration, Instant};
use token_e2e::{Fault, FaultServer, Harness, detail, manager_for, rows_of};
use token_host::endpoint::{EndpointConfig, Scripted, TokenEndpoint};

fn quick(s: &mut token_host::Settings) {
    s.connect_timeout_ms = 500;
    s.first_byte_timeout_ms = 300;
    s.between_bytes_timeout_ms = 300;
    s.acquisition_deadline_ms = 2_000;
}

#[tokio::test]
async fn a_server_that_never_answers_cannot_hold_get_token_past_the_deadline() {
    let server = FaultServer::start(Fault::NeverAnswer).await;
    let dir = tempfile::tempdir().unwrap();
    let (manager, events) = manager_for(&server.base_url(), dir.path(), quick).await;
    let started = Instant::now();
    assert_eq!(manager.get_token().await, None);
    assert!(
        started.elapsed() < Duration::from_millis(3_000),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(server.request_count(), 3);
    let rows = rows_of(&events);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        detail(&rows[0]),
        json!({"error": "max_retries_exceeded", "attempts": 3, "last_error": "timeout"})
    );
}

#[tokio::test]
async fn a_server_that_trickles_a_byte_at_a_time_is_cut_off_by_the_deadline() {
    // Every byte arrives within the between-bytes timeout; only the
    // overall deadline can stop it.
    let server = FaultServer::start(Fault::Trickle {
        len: 1_000,
        every: Duration::from_millis(100),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (manager, events) = manager_for(&server.base_url(), dir.path(), quick).await;
    let started = Instant::now();
    assert_eq!(manager.get_token().await, None);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_500) && took < Duration::from_millis(3_500),
        "took {took:?}"
    );
    let d = detail(&rows_of(&events)[0]);
    assert_eq!(d["error"], "max_retries_exceeded");
    assert_eq!(d["last_error"], "timeout");
}

#[tokio::test]
async fn a_connection_reset_mid_body_is_a_retried_connection_failure() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"access_token\":\"abc".to_vec();
    let server = FaultServer::start(Fault::RawThenReset(head)).await;
    let dir = tempfile::tempdir().unwrap();
    let (manager, events) = manager_for(&server.base_url(), dir.path(), quick).await;
    assert_eq!(manager.get_token().await, None);
    assert_eq!(server.request_count(), 3, "a reset is transient: retried");
    let d = detail(&rows_of(&events)[0]);
    assert_eq!(d["error"], "max_retries_exceeded");
    assert!(
        ["connection_error", "protocol_error"].contains(&d["last_error"].as_str().unwrap()),
        "{d}"
    );
}

#[tokio::test]
async fn a_body_shorter_than_announced_is_a_retried_protocol_failure() {
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{\"access_token\":\"abc".to_vec();
    let server = FaultServer::start(Fault::Raw(head)).await;
    let dir = tempfile::tempdir().unwrap();
    let (manager, events) = manager_for(&server.base_url(), dir.path(), quick).await;
    assert_eq!(manager.get_token().await, None);
    let d = detail(&rows_of(&events)[0]);
    assert_eq!(d["error"], "max_retries_exceeded", "{d}");
}

#[tokio::test]
async fn truncated_json_with_a_matching_length_is_an_invalid_response() {
    let h = Harness::start().await;
    h.endpoint
        .script([Scripted::status(200, r#"{"access_token":"abc","expi"#)]);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(detail(&h.rows()[0])["reason"], "body_not_json");
}

#[tokio::test]
async fn tls_to_a_plain_http_port_fails_without_retry() {
    let endpoint = TokenEndpoint::start(EndpointConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = format!("https://{}", endpoint.addr());
    let (manager, events) = manager_for(&base, dir.path(), quick).await;
    assert_eq!(manager.get_token().await, None);
    assert_eq!(manager.egress().sent(), 1, "not retried");
    assert_eq!(detail(&rows_of(&events)[0]), json!({"error": "tls_error"}));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let h = Harness::start().await;
    let mut redirect = Scripted::status(302, "");
    redirect.headers = vec![("location".into(), "http://127.0.0.1:9/elsewhere".into())];
    h.endpoint.script([redirect]);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 1);
    assert_eq!(
        h.manager.egress().denied(),
        0,
        "the Location was never requested"
    );
    assert_eq!(
        detail(&h.rows()[0]),
        json!({"status_code": 302, "error": "unexpected_redirect"})
    );
}

#[tokio::test]
async fn an_announced_oversized_body_is_refused_without_reading_it() {
    let h = Harness::start().await;
    h.endpoint
        .script([Scripted::status(200, vec![b' '; 2 << 20])]);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(h.endpoint.request_count(), 1, "not retried");
    assert_eq!(detail(&h.rows()[0]), json!({"error": "response_too_large"}));
}

#[tokio::test]
async fn a_chunked_oversized_body_is_cut_at_the_cap() {
    let mut raw =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..64 {
        raw.extend_from_slice(b"8000\r\n");
        raw.extend_from_slice(&[b' '; 0x8000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let server = FaultServer::start(Fault::Raw(raw)).await;
    let dir = tempfile::tempdir().unwrap();
    let (manager, events) = manager_for(&server.base_url(), dir.path(), quick).await;
    assert_eq!(manager.get_token().await, None);
    assert_eq!(server.request_count(), 1);
    assert_eq!(
        detail(&rows_of(&events)[0]),
        json!({"error": "response_too_large"})
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_recorded() {
    let h = Harness::with(EndpointConfig::default(), |s| {
        s.backoff_min_ms = 10;
        s.backoff_max_ms = 2_000;
    })
    .await;
    let mut busy = Scripted::status(429, "");
    busy.headers = vec![("retry-after".into(), "1".into())];
    h.endpoint.script([busy.clone(), busy.clone(), busy]);
    assert_eq!(h.manager.get_token().await, None);
    let requests = h.endpoint.requests();
    for pair in requests.windows(2) {
        let wait = pair[1].received_at - pair[0].received_at;
        assert!(
            wait >= Duration::from_millis(1_000) && wait < Duration::from_millis(1_800),
            "{wait:?}"
        );
    }
    assert_eq!(
        detail(&h.rows()[0]),
        json!({"error": "max_retries_exceeded", "attempts": 3, "last_status": 429, "retry_after_seconds": 1, "waited_ms": 2000})
    );
}

#[tokio::test]
async fn retry_after_beyond_the_largest_backoff_is_capped() {
    let h = Harness::start().await; // backoff max 50 ms in the fixtures
    let mut busy = Scripted::status(503, "");
    busy.headers = vec![("retry-after".into(), "Fri, 31 Dec 9999 23:59:59 GMT".into())];
    h.endpoint.script([busy]);
    let started = Instant::now();
    assert!(h.manager.get_token().await.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
