//! Property tests (the fuzzing suite) for the parsers that read what the
//! network sends: the token response parser and the `Retry-After` parser.
//!
//! In CI they run proptest's default 256 cases each. For a long run:
//! `FUZZ_SECONDS=300 cargo test -p token-component --test fuzz -- --ignored --nocapture`
//! (`just fuzz`), which prints how many inputs were executed.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use token_component::outcome::{HttpResponse, Verdict, classify};
use token_component::{response, retry_after};

const NOW: i64 = 1_800_000_000;

/// JSON-shaped inputs: mostly near-valid token responses, with every field
/// drawn from values that are right, wrong, or hostile.
fn token_like() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[ -~]{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"Bearer\"".to_owned()),
        Just("{}".to_owned()),
        Just("[]".to_owned()),
    ];
    let key = prop_oneof![
        Just("access_token"),
        Just("expires_in"),
        Just("token_type"),
        Just("error"),
        Just("scope"),
    ];
    let body = prop::collection::vec((key, value), 0..6).prop_map(|fields| {
        let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", inner.join(","))
    });
    (body, any::<Vec<u8>>(), 0usize..3).prop_map(|(body, junk, how)| {
        let mut bytes = body.into_bytes();
        match how {
            0 => {}
            1 => bytes.extend_from_slice(&junk),
            _ => {
                // Overwrite a few bytes: truncations, bad UTF-8, broken syntax.
                for (i, b) in junk.iter().take(4).enumerate() {
                    let at = (usize::from(*b) * 31 + i * 7) % bytes.len().max(1);
                    if let Some(slot) = bytes.get_mut(at) {
                        *slot = *b;
                    }
                }
            }
        }
        bytes
    })
}

fn check_response(body: &[u8]) {
    match response::parse(body, NOW) {
        Ok(grant) => {
            assert!(!grant.access_token.is_empty());
            assert!(grant.access_token.bytes().all(|b| b.is_ascii_graphic()));
            assert!(grant.expires_in > 0 && grant.expires_in <= response::MAX_EXPIRES_IN);
            assert_eq!(grant.token_type, "Bearer");
        }
        Err(invalid) => assert!(!invalid.reason().is_empty()),
    }
    // The whole classification, for every status, never panics either.
    for status in [200, 400, 401, 429, 503] {
        let resp = HttpResponse {
            status,
            body: body.to_vec(),
            retry_after: None,
        };
        if let Verdict::Fail(f) = classify(Ok(resp), NOW) {
            let detail: serde_json::Value = serde_json::from_str(&f.detail()).unwrap();
            assert!(detail["error"].is_string());
        }
    }
}

fn check_retry_after(value: &str) {
    if let Some(secs) = retry_after::parse(value, NOW) {
        let v = value.trim();
        if v.bytes().all(|b| b.is_ascii_digit()) {
            assert_eq!(secs, v.parse::<u64>().unwrap_or(u64::MAX));
        }
    }
}

fn retry_after_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25}",
        "(Mon|Tue|Sun|Xyz), [0-9]{1,3} (Jan|Feb|Nov|Foo) [0-9]{3,5} [0-9]{1,2}:[0-9]{2}:[0-9]{2} (GMT|UTC)",
    ]
}

proptest! {
    #[test]
    fn token_parser_never_panics_on_bytes(body in any::<Vec<u8>>()) {
        check_response(&body);
    }

    #[test]
    fn token_parser_never_panics_on_token_like_json(body in token_like()) {
        check_response(&body);
    }

    #[test]
    fn valid_responses_round_trip(token in "[!-~]{1,200}", expires_in in 1i64..=315_000_000) {
        let body = serde_json::json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"});
        let grant = response::parse(body.to_string().as_bytes(), NOW).unwrap();
        prop_assert_eq!(grant.access_token, token);
        prop_assert_eq!(grant.expires_in, expires_in);
    }

    #[test]
    fn retry_after_parser_never_panics(value in retry_after_like()) {
        check_retry_after(&value);
    }
}

/// The long run: as many generated inputs as fit in `FUZZ_SECONDS`.
#[test]
#[ignore = "long-running; run with FUZZ_SECONDS=300 -- --ignored"]
fn fuzz_for_a_while() {
    let seconds: u64 = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    let config = Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    };
    let (responses, dates) = (std::cell::Cell::new(0u64), std::cell::Cell::new(0u64));
    while std::time::Instant::now() < deadline {
        // A fresh runner (fresh random seed) each round: a finished runner
        // would return at once.
        TestRunner::new(config.clone())
            .run(&prop_oneof![any::<Vec<u8>>(), token_like()], |body| {
                check_response(&body);
                responses.set(responses.get() + 1);
                Ok(())
            })
            .unwrap();
        TestRunner::new(config.clone())
            .run(&retry_after_like(), |value| {
                check_retry_after(&value);
                dates.set(dates.get() + 1);
                Ok(())
            })
            .unwrap();
    }
    let (responses, dates) = (responses.get(), dates.get());
    println!(
        "fuzzed for {seconds} s: {responses} token responses, {dates} Retry-After values, no failure"
    );
}
