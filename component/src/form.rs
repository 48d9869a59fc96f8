//! The token request body and client authentication (RFC 6749 §2.3.1, §4.4.2).

use crate::settings::{ClientAuth, Settings};

/// Append `s` to `out` as `application/x-www-form-urlencoded` (WHATWG URL
/// standard): unreserved bytes stay, space becomes `+`, the rest `%XX` of UTF-8.
pub fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
}

/// Form-encode `s` into a new string.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    encode_into(&mut out, s);
    out
}

/// The body and the optional `Authorization` header of a token request.
pub struct TokenRequestParts {
    /// `application/x-www-form-urlencoded` body.
    pub body: String,
    /// `Basic …` for `client_secret_basic`.
    pub authorization: Option<String>,
}

/// Build the client-credentials request for `settings`.
pub fn token_request(settings: &Settings) -> TokenRequestParts {
    let mut body = String::from("grant_type=client_credentials");
    let mut field = |name: &str, value: &str| {
        body.push('&');
        body.push_str(name);
        body.push('=');
        encode_into(&mut body, value);
    };
    let authorization = match settings.client_auth {
        ClientAuth::SecretPost => {
            field("client_id", &settings.client_id);
            field("client_secret", &settings.client_secret);
            None
        }
        ClientAuth::SecretBasic => {
            // §2.3.1: both parts are form-encoded before they are joined.
            let pair = format!(
                "{}:{}",
                encode(&settings.client_id),
                encode(&settings.client_secret)
            );
            Some(format!("Basic {}", crate::base64::encode(pair.as_bytes())))
        }
    };
    for (name, value) in [("scope", &settings.scope), ("audience", &settings.audience)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            field(name, value);
        }
    }
    TokenRequestParts {
        body,
        authorization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: &str, secret: &str, auth: ClientAuth) -> Settings {
        Settings {
            client_id: id.into(),
            client_secret: secret.into(),
            client_auth: auth,
            ..Settings::default()
        }
    }

    #[test]
    fn encodes_reserved_and_non_ascii() {
        assert_eq!(
            encode("a b+c&d=e%f:g/ç"),
            "a+b%2Bc%26d%3De%25f%3Ag%2F%C3%A7"
        );
        assert_eq!(encode("AZaz09-._*"), "AZaz09-._*");
    }

    #[test]
    fn secret_post_puts_credentials_in_the_body() {
        let parts = token_request(&settings("my id", "p&ss=wörd", ClientAuth::SecretPost));
        assert_eq!(
            parts.body,
            "grant_type=client_credentials&client_id=my+id&client_secret=p%26ss%3Dw%C3%B6rd"
        );
        assert!(parts.authorization.is_none());
    }

    #[test]
    fn secret_basic_encodes_before_base64() {
        let parts = token_request(&settings("id:1", "s%+ é", ClientAuth::SecretBasic));
        assert_eq!(parts.body, "grant_type=client_credentials");
        let expected = crate::base64::encode(b"id%3A1:s%25%2B+%C3%A9");
        assert_eq!(parts.authorization.unwrap(), format!("Basic {expected}"));
    }

    #[test]
    fn scope_is_optional() {
        let mut s = settings("id", "secret", ClientAuth::SecretPost);
        s.scope = Some("read write".into());
        assert!(token_request(&s).body.ends_with("&scope=read+write"));
        s.audience = Some("https://api.example.com".into());
        assert!(
            token_request(&s)
                .body
                .ends_with("&scope=read+write&audience=https%3A%2F%2Fapi.example.com")
        );
    }
}
