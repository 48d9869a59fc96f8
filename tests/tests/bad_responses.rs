//! Every kind of broken 200 response, through the real component: each gets
//! a defined outcome (a token, or one TOKEN_FAILED naming the problem), never
//! a panic or a trap, never a secret in the detail.

use serde_json::{Value, json};
use token_e2e::{Harness, detail};
use token_host::endpoint::Scripted;

enum Expect {
    /// A token whose lifetime is this many seconds (± 2).
    Token(i64),
    /// TOKEN_FAILED with this `reason`.
    Reason(&'static str),
    /// TOKEN_FAILED with this `error`.
    Error(&'static str),
}

async fn check(body: impl Into<Vec<u8>>, expect: Expect) {
    let body = body.into();
    let h = Harness::start().await;
    h.endpoint.script([Scripted::status(200, body)]);
    let token = h.manager.get_token().await;
    assert_eq!(h.endpoint.request_count(), 1, "a bad 200 is not retried");
    let rows = h.rows();
    assert_eq!(rows.len(), 1, "exactly one event");
    let d: Value = detail(&rows[0]);
    let config = h.endpoint.config();
    let text = d.to_string();
    assert!(
        !text.contains(&config.client_secret) && !text.contains(&config.client_id),
        "{text}"
    );
    match expect {
        Expect::Token(lifetime) => {
            assert!(token.is_some(), "expected a token, got {d}");
            assert_eq!(rows[0].event_type, "TOKEN_ACQUIRED");
            let info = h.manager.token_info().await.unwrap();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            assert!(
                (info.expires_at - now - lifetime).abs() <= 2,
                "lifetime {} != {lifetime}",
                info.expires_at - now
            );
            assert_eq!(info.token_type, "Bearer");
        }
        Expect::Reason(reason) => {
            assert_eq!(token, None);
            assert_eq!(d["error"], "invalid_token_response", "{d}");
            assert_eq!(d["reason"], reason, "{d}");
            // the component survives: the next call gets a real token
            assert!(h.manager.get_token().await.is_some());
        }
        Expect::Error(error) => {
            assert_eq!(token, None);
            assert_eq!(d["error"], error, "{d}");
        }
    }
}

fn jwt_expiring_in(secs: i64) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "HS256"})),
        b64(json!({"exp": now + secs}))
    )
}

macro_rules! cases {
    ($($name:ident: $body:expr => $expect:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                check($body, $expect).await;
            }
        )*
    };
}

cases! {
    non_json_body: "token please" => Expect::Reason("body_not_json");
    html_error_page: "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>" => Expect::Reason("body_not_json");
    empty_body: "" => Expect::Reason("body_not_json");
    json_array: r#"[{"access_token":"abc"}]"# => Expect::Reason("body_not_object");
    access_token_missing: r#"{"token_type":"Bearer","expires_in":3600}"# => Expect::Reason("access_token_missing");
    access_token_empty: r#"{"access_token":""}"# => Expect::Reason("access_token_empty");
    access_token_a_number: r#"{"access_token":12345}"# => Expect::Reason("access_token_not_string");
    access_token_null: r#"{"access_token":null}"# => Expect::Reason("access_token_missing");
    access_token_with_spaces: r#"{"access_token":"abc def"}"# => Expect::Reason("access_token_invalid_characters");
    access_token_with_control_characters: "{\"access_token\":\"abc\\u0000def\\r\\n\"}" => Expect::Reason("access_token_invalid_characters");
    expires_in_missing_uses_the_jwt_exp: json!({"access_token": jwt_expiring_in(1234)}).to_string() => Expect::Token(1234);
    expires_in_missing_without_a_jwt_is_an_hour: r#"{"access_token":"opaque-token"}"# => Expect::Token(3600);
    expires_in_zero: r#"{"access_token":"abc","expires_in":0}"# => Expect::Reason("expires_in_not_positive");
    expires_in_negative: r#"{"access_token":"abc","expires_in":-60}"# => Expect::Reason("expires_in_not_positive");
    expires_in_a_float: r#"{"access_token":"abc","expires_in":1800.9}"# => Expect::Token(1800);
    expires_in_a_numeric_string: r#"{"access_token":"abc","expires_in":"1800"}"# => Expect::Token(1800);
    expires_in_a_non_numeric_string: r#"{"access_token":"abc","expires_in":"an hour"}"# => Expect::Reason("expires_in_not_integer");
    expires_in_over_ten_years: r#"{"access_token":"abc","expires_in":400000000}"# => Expect::Reason("expires_in_too_large");
    token_type_missing: r#"{"access_token":"abc","expires_in":600}"# => Expect::Token(600);
    token_type_lower_case_bearer: r#"{"access_token":"abc","token_type":"bearer","expires_in":600}"# => Expect::Token(600);
    token_type_not_bearer: r#"{"access_token":"abc","token_type":"mac"}"# => Expect::Reason("token_type_not_bearer");
    token_type_null: r#"{"access_token":"abc","token_type":null,"expires_in":600}"# => Expect::Token(600);
    trailing_garbage_byte: r#"{"access_token":"abc"}x"# => Expect::Reason("body_not_json");
    two_mib_body: format!(r#"{{"access_token":"abc","pad":"{}"}}"#, "x".repeat(2 << 20)) => Expect::Error("response_too_large");
    nested_ten_thousand_levels: format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000)) => Expect::Reason("body_not_json");
    invalid_utf8: b"{\"access_token\":\"abc\xff\xfe\"}".to_vec() => Expect::Reason("body_not_json");
    duplicate_access_token_keys: r#"{"access_token":"first","access_token":"second"}"# => Expect::Reason("duplicate_key");
    byte_order_mark: "\u{feff}{\"access_token\":\"abc\",\"expires_in\":900}" => Expect::Token(900);
    error_object_with_status_200: r#"{"error":"invalid_client"}"# => Expect::Reason("error_response");
}

#[tokio::test]
async fn an_error_object_with_status_200_names_the_oauth_error() {
    let h = Harness::start().await;
    h.endpoint
        .script([Scripted::status(200, r#"{"error":"invalid_client"}"#)]);
    assert_eq!(h.manager.get_token().await, None);
    assert_eq!(
        detail(&h.rows()[0]),
        json!({"status_code": 200, "error": "invalid_token_response", "reason": "error_response", "oauth_error": "invalid_client"})
    );
}
