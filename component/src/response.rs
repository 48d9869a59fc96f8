//! Parsing a token endpoint's 200 response (RFC 6749 §5.1), defensively: the
//! body comes from the network and anything may be in it.

use serde_json::Value;

/// `expires_in` used when neither the response nor the token says (SPEC §4).
pub const DEFAULT_EXPIRES_IN: i64 = 3_600;
/// Lifetimes above ten years are a broken server, not an eternal token.
pub const MAX_EXPIRES_IN: i64 = 10 * 366 * 24 * 3_600;

/// A usable token response.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    /// The bearer token.
    pub access_token: String,
    /// Normalised token type (`Bearer`).
    pub token_type: String,
    /// Lifetime in seconds, > 0.
    pub expires_in: i64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("access_token", &crate::redact::token(&self.access_token))
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// What was wrong with a 200 response. Never carries the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Not JSON (or not UTF-8, or trailing bytes, or nested too deep).
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// The same key twice at the top level: ambiguous, refused.
    DuplicateKey,
    /// An OAuth error object (`{"error": …}`) despite the 200.
    ErrorObject(Option<String>),
    /// No `access_token` (or `null`).
    AccessTokenMissing,
    /// `access_token` is not a string.
    AccessTokenNotString,
    /// `access_token` is the empty string.
    AccessTokenEmpty,
    /// `access_token` has white space or control characters.
    AccessTokenInvalidChars,
    /// `expires_in` is neither an integer nor an integer string.
    ExpiresInNotNumber,
    /// `expires_in` <= 0.
    ExpiresInNotPositive,
    /// `expires_in` over ten years.
    ExpiresInTooLarge,
    /// `token_type` is not a string.
    TokenTypeNotString,
    /// `token_type` other than `Bearer`.
    TokenTypeUnsupported,
}

impl Invalid {
    /// A short machine-readable reason for the event detail.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::NotJson => "body_not_json",
            Invalid::NotObject => "body_not_object",
            Invalid::DuplicateKey => "duplicate_key",
            Invalid::ErrorObject(_) => "error_response",
            Invalid::AccessTokenMissing => "access_token_missing",
            Invalid::AccessTokenNotString => "access_token_not_string",
            Invalid::AccessTokenEmpty => "access_token_empty",
            Invalid::AccessTokenInvalidChars => "access_token_invalid_characters",
            Invalid::ExpiresInNotNumber => "expires_in_not_integer",
            Invalid::ExpiresInNotPositive => "expires_in_not_positive",
            Invalid::ExpiresInTooLarge => "expires_in_too_large",
            Invalid::TokenTypeNotString => "token_type_not_string",
            Invalid::TokenTypeUnsupported => "token_type_not_bearer",
        }
    }
}

/// Parse a 200 body. `now` (Unix seconds) turns a JWT `exp` into a lifetime.
///
/// Expiry fallback order: `expires_in`, then the (unverified) JWT `exp`
/// claim, then [`DEFAULT_EXPIRES_IN`].
pub fn parse(body: &[u8], now: i64) -> Result<Grant, Invalid> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).map_err(|_| Invalid::NotJson)?;
    if !value.is_object() {
        return Err(Invalid::NotObject);
    }
    // Two `access_token`s make the response ambiguous: parsers disagree on
    // which one counts, so neither is trusted.
    if repeats_a_top_level_key(body) {
        return Err(Invalid::DuplicateKey);
    }
    let Value::Object(map) = value else {
        return Err(Invalid::NotObject);
    };
    let access_token = match map.get("access_token") {
        None | Some(Value::Null) => {
            return Err(match map.get("error") {
                Some(e) => Invalid::ErrorObject(e.as_str().and_then(oauth_error_code)),
                None => Invalid::AccessTokenMissing,
            });
        }
        Some(Value::String(s)) if s.is_empty() => return Err(Invalid::AccessTokenEmpty),
        Some(Value::String(s)) => s,
        Some(_) => return Err(Invalid::AccessTokenNotString),
    };
    // RFC 6750 b64token characters are all visible ASCII; anything else
    // would corrupt the Authorization header it is sent in.
    if !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Invalid::AccessTokenInvalidChars);
    }
    let token_type = match map.get("token_type") {
        None | Some(Value::Null) => "Bearer".to_owned(),
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => "Bearer".to_owned(),
        Some(Value::String(_)) => return Err(Invalid::TokenTypeUnsupported),
        Some(_) => return Err(Invalid::TokenTypeNotString),
    };
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => jwt_lifetime(access_token, now).unwrap_or(DEFAULT_EXPIRES_IN),
        Some(v) => expires_in(v)?,
    };
    if expires_in <= 0 {
        return Err(Invalid::ExpiresInNotPositive);
    }
    if expires_in > MAX_EXPIRES_IN {
        return Err(Invalid::ExpiresInTooLarge);
    }
    Ok(Grant {
        access_token: access_token.clone(),
        token_type,
        expires_in,
    })
}

/// Whether the top-level object of `body` (valid JSON, already parsed)
/// names a key twice. A scan rather than a second, duplicate-refusing serde
/// deserializer: that one cost the component 35 KB.
fn repeats_a_top_level_key(body: &[u8]) -> bool {
    let mut keys: Vec<String> = Vec::new();
    let (mut depth, mut expect_key, mut i) = (0usize, false, 0usize);
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let start = i;
                i += 1;
                while let Some(&c) = body.get(i) {
                    match c {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                if depth == 1 && expect_key {
                    expect_key = false;
                    // Decode escapes: `"a\u0062"` and `"ab"` are one key.
                    if let Some(Ok(Value::String(key))) =
                        body.get(start..=i).map(serde_json::from_slice)
                    {
                        if keys.contains(&key) {
                            return true;
                        }
                        keys.push(key);
                    }
                }
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && b == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    false
}

fn expires_in(v: &Value) -> Result<i64, Invalid> {
    match v {
        Value::Number(n) => n
            .as_i64()
            // A float lifetime is rounded down; a huge one is "too large".
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
            })
            .ok_or(Invalid::ExpiresInTooLarge),
        // Some gateways send the number as a string; accept only digits.
        Value::String(s) => {
            let s = s.trim();
            if let Some(digits) = s.strip_prefix('-')
                && !digits.is_empty()
                && digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(Invalid::ExpiresInNotPositive);
            }
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Invalid::ExpiresInNotNumber);
            }
            Ok(s.parse::<i64>().unwrap_or(i64::MAX))
        }
        _ => Err(Invalid::ExpiresInNotNumber),
    }
}

/// Seconds until the unverified `exp` claim of a JWT, if it is one.
fn jwt_lifetime(token: &str, now: i64) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: Value = serde_json::from_slice(&crate::base64::decode_url(payload)?).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    Some(exp.saturating_sub(now)).filter(|&s| s > 0)
}

/// The OAuth `error` code of an error body (RFC 6749 §5.2), if it has one.
pub fn oauth_error(body: &[u8]) -> Option<String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let value: Value = serde_json::from_slice(body).ok()?;
    oauth_error_code(value.get("error")?.as_str()?)
}

/// Keep an error code only if it is what §5.2 allows (printable ASCII without
/// `"` and `\`), and short: it goes into the event detail.
fn oauth_error_code(code: &str) -> Option<String> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    ok.then(|| code.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn ok(body: &str) -> Grant {
        parse(body.as_bytes(), NOW).unwrap()
    }

    fn err(body: &[u8]) -> Invalid {
        parse(body, NOW).unwrap_err()
    }

    #[test]
    fn a_complete_response() {
        let g = ok(r#"{"access_token":"abc","token_type":"Bearer","expires_in":1200}"#);
        assert_eq!(
            (g.access_token.as_str(), g.token_type.as_str(), g.expires_in),
            ("abc", "Bearer", 1200)
        );
    }

    #[test]
    fn defaults_and_normalisation() {
        let g = ok(r#"{"access_token":"abc"}"#);
        assert_eq!(
            (g.token_type.as_str(), g.expires_in),
            ("Bearer", DEFAULT_EXPIRES_IN)
        );
        assert_eq!(
            ok(r#"{"access_token":"abc","token_type":"bearer"}"#).token_type,
            "Bearer"
        );
        assert_eq!(
            ok(r#"{"access_token":"abc","token_type":null,"expires_in":null}"#).expires_in,
            3600
        );
        assert_eq!(
            ok(r#"{"access_token":"abc","expires_in":"900"}"#).expires_in,
            900
        );
        assert_eq!(
            ok(r#"{"access_token":"abc","expires_in":899.7}"#).expires_in,
            899
        );
        assert_eq!(ok("\u{feff}{\"access_token\":\"abc\"}").access_token, "abc");
    }

    #[test]
    fn jwt_exp_when_expires_in_is_absent() {
        let payload = crate::base64::encode(format!(r#"{{"exp":{}}}"#, NOW + 777).as_bytes());
        let payload = payload
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_");
        let jwt = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(
            ok(&format!(r#"{{"access_token":"{jwt}"}}"#)).expires_in,
            777
        );
        // expires_in wins over exp
        assert_eq!(
            ok(&format!(r#"{{"access_token":"{jwt}","expires_in":60}}"#)).expires_in,
            60
        );
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(err(b"<html>502</html>"), Invalid::NotJson);
        assert_eq!(err(b""), Invalid::NotJson);
        assert_eq!(err(b"[1,2]"), Invalid::NotObject);
        assert_eq!(err(br#"{"access_token":"a"}x"#), Invalid::NotJson);
        assert_eq!(err(b"{\"access_token\":\"\xff\"}"), Invalid::NotJson);
        let deep = "[".repeat(10_000);
        assert_eq!(err(deep.as_bytes()), Invalid::NotJson);
        assert_eq!(
            err(br#"{"error":"invalid_client"}"#),
            Invalid::ErrorObject(Some("invalid_client".into()))
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        assert_eq!(
            err(br#"{"access_token":"a","access_token":"b"}"#),
            Invalid::DuplicateKey
        );
        assert_eq!(
            err(br#"{"access_token":"a","access\u005ftoken":"b"}"#),
            Invalid::DuplicateKey
        );
        assert_eq!(
            ok(r#"{"access_token":"a,\"access_token\":","k":["access_token","access_token"]}"#)
                .access_token,
            "a,\"access_token\":"
        );
        // nested duplicates do not matter
        assert_eq!(
            ok(r#"{"access_token":"a","x":{"k":1,"k":2}}"#).access_token,
            "a"
        );
    }

    #[test]
    fn bad_access_tokens() {
        assert_eq!(err(br#"{}"#), Invalid::AccessTokenMissing);
        assert_eq!(
            err(br#"{"access_token":null}"#),
            Invalid::AccessTokenMissing
        );
        assert_eq!(err(br#"{"access_token":""}"#), Invalid::AccessTokenEmpty);
        assert_eq!(
            err(br#"{"access_token":42}"#),
            Invalid::AccessTokenNotString
        );
        assert_eq!(
            err(br#"{"access_token":"a b"}"#),
            Invalid::AccessTokenInvalidChars
        );
        assert_eq!(
            err(br#"{"access_token":"a\nb"}"#),
            Invalid::AccessTokenInvalidChars
        );
    }

    #[test]
    fn bad_lifetimes_and_types() {
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":0}"#),
            Invalid::ExpiresInNotPositive
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":-5}"#),
            Invalid::ExpiresInNotPositive
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":"-5"}"#),
            Invalid::ExpiresInNotPositive
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":"soon"}"#),
            Invalid::ExpiresInNotNumber
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":true}"#),
            Invalid::ExpiresInNotNumber
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":999999999999}"#),
            Invalid::ExpiresInTooLarge
        );
        assert_eq!(
            err(br#"{"access_token":"a","expires_in":1e300}"#),
            Invalid::ExpiresInTooLarge
        );
        assert_eq!(
            err(br#"{"access_token":"a","token_type":"mac"}"#),
            Invalid::TokenTypeUnsupported
        );
        assert_eq!(
            err(br#"{"access_token":"a","token_type":7}"#),
            Invalid::TokenTypeNotString
        );
    }

    #[test]
    fn oauth_error_codes_are_sanitised() {
        assert_eq!(
            oauth_error(br#"{"error":"invalid_client"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(oauth_error(br#"{"error":"bad\"quote"}"#), None);
        assert_eq!(oauth_error(b"not json"), None);
        assert_eq!(oauth_error(br#"{"error":42}"#), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let g = ok(r#"{"access_token":"abcdefghijklmnopqrstuvwxyz0123456789"}"#);
        assert!(!format!("{g:?}").contains("ijklmnop"));
    }
}
