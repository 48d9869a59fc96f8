//! What one attempt came to, what the manager does next, and the event
//! detail JSON for each outcome (SPEC §4). Details never hold a credential
//! or a token.

use crate::response::{self, Grant, Invalid};
use serde_json::{Value, json};

/// An HTTP response as the transport returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body (capped by the transport).
    pub body: Vec<u8>,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<String>,
}

/// Why no response arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// Connect, first-byte or between-bytes timeout.
    Timeout,
    /// Refused, reset, DNS failure, unreachable.
    Connection,
    /// Malformed HTTP from the server.
    Protocol,
    /// TLS handshake or certificate failure.
    Tls,
    /// The host refused the request (egress policy).
    Denied,
    /// The body was larger than the cap.
    BodyTooLarge,
}

impl TransportError {
    /// The name used in event details.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Timeout => "timeout",
            TransportError::Connection => "connection_error",
            TransportError::Protocol => "protocol_error",
            TransportError::Tls => "tls_error",
            TransportError::Denied => "request_denied",
            TransportError::BodyTooLarge => "response_too_large",
        }
    }

    /// Transient faults are worth another attempt; a denial, a TLS failure or
    /// an oversized body will not change by retrying.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            TransportError::Timeout | TransportError::Connection | TransportError::Protocol
        )
    }
}

/// The cause of a retryable failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transient {
    /// 429 or 5xx.
    Status(u16),
    /// A transient transport fault.
    Transport(TransportError),
}

/// A failure that ends an acquisition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 401 or 403.
    InvalidCredentials {
        /// The status.
        status: u16,
    },
    /// A status that is neither success, credentials nor transient.
    UnexpectedStatus {
        /// The status.
        status: u16,
        /// The OAuth `error` code of the body, if any.
        oauth_error: Option<String>,
    },
    /// A 2xx whose body is not a usable token response.
    InvalidResponse {
        /// The status.
        status: u16,
        /// What was wrong.
        invalid: Invalid,
    },
    /// A transport fault that retrying cannot fix.
    Transport(TransportError),
    /// Every attempt failed transiently.
    MaxRetries {
        /// Attempts made.
        attempts: u32,
        /// What the last one failed with.
        last: Transient,
        /// The last `Retry-After` honoured (seconds) and the time waited in all (ms).
        retry_after: Option<(u64, u64)>,
    },
    /// The settings are incomplete.
    NotConfigured,
    /// The base URL or token path is unusable.
    InvalidConfiguration(String),
}

/// What the manager does after one attempt.
#[derive(Debug)]
pub enum Verdict {
    /// A token: cache it.
    Granted(Grant),
    /// Try again (if attempts remain), after at least `retry_after` seconds
    /// when the server said so (429 and 503 only).
    Retry(Transient, Option<u64>),
    /// Stop: record and return `none`.
    Fail(Failure),
}

/// Classify the result of one attempt.
pub fn classify(result: Result<HttpResponse, TransportError>, now: i64) -> Verdict {
    let resp = match result {
        Ok(resp) => resp,
        Err(e) if e.is_transient() => return Verdict::Retry(Transient::Transport(e), None),
        Err(e) => return Verdict::Fail(Failure::Transport(e)),
    };
    match resp.status {
        200..=299 => match response::parse(&resp.body, now) {
            Ok(grant) => Verdict::Granted(grant),
            Err(invalid) => Verdict::Fail(Failure::InvalidResponse {
                status: resp.status,
                invalid,
            }),
        },
        401 | 403 => Verdict::Fail(Failure::InvalidCredentials {
            status: resp.status,
        }),
        429 | 503 => {
            let after = resp
                .retry_after
                .as_deref()
                .and_then(|v| crate::retry_after::parse(v, now));
            Verdict::Retry(Transient::Status(resp.status), after)
        }
        500..=599 => Verdict::Retry(Transient::Status(resp.status), None),
        status => Verdict::Fail(Failure::UnexpectedStatus {
            status,
            oauth_error: response::oauth_error(&resp.body),
        }),
    }
}

/// Detail of a successful acquisition or refresh. The fingerprint (first 12
/// hex digits of the token's SHA-256) lets operators tell tokens apart
/// without holding one.
pub fn grant_detail(grant: &Grant) -> String {
    json!({
        "expires_in_seconds": grant.expires_in,
        "token_type": grant.token_type,
        "token_fingerprint": fingerprint(&grant.access_token),
    })
    .to_string()
}

/// First 12 hex digits of the SHA-256 of `token`.
pub fn fingerprint(token: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = crate::sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(12);
    for b in &digest[..6] {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
    out
}

impl Failure {
    /// The `detail` JSON of the `TOKEN_FAILED` event.
    pub fn detail(&self) -> String {
        let v: Value = match self {
            Failure::InvalidCredentials { status } => {
                json!({"status_code": status, "error": "invalid_credentials"})
            }
            Failure::UnexpectedStatus {
                status,
                oauth_error,
            } => {
                let error = match status {
                    300..=399 => "unexpected_redirect",
                    400..=499 => "unexpected_client_error",
                    _ => "unexpected_status",
                };
                let mut v = json!({"status_code": status, "error": error});
                if let Some(code) = oauth_error {
                    v["oauth_error"] = json!(code);
                }
                v
            }
            Failure::InvalidResponse { status, invalid } => {
                let mut v = json!({"status_code": status, "error": "invalid_token_response", "reason": invalid.reason()});
                if let Invalid::ErrorObject(Some(code)) = invalid {
                    v["oauth_error"] = json!(code);
                }
                v
            }
            Failure::Transport(e) => json!({"error": e.as_str()}),
            Failure::MaxRetries {
                attempts,
                last,
                retry_after,
            } => {
                let mut v = json!({"error": "max_retries_exceeded", "attempts": attempts});
                match last {
                    Transient::Status(s) => v["last_status"] = json!(s),
                    Transient::Transport(e) => v["last_error"] = json!(e.as_str()),
                }
                if let Some((after, waited_ms)) = retry_after {
                    v["retry_after_seconds"] = json!(after);
                    v["waited_ms"] = json!(waited_ms);
                }
                v
            }
            Failure::NotConfigured => json!({"error": "not_configured"}),
            Failure::InvalidConfiguration(reason) => {
                json!({"error": "invalid_configuration", "reason": reason})
            }
        };
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, body: &str) -> Verdict {
        classify(
            Ok(HttpResponse {
                status,
                body: body.as_bytes().to_vec(),
                retry_after: None,
            }),
            0,
        )
    }

    fn fail(v: Verdict) -> Failure {
        match v {
            Verdict::Fail(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        assert!(matches!(
            status(200, r#"{"access_token":"t"}"#),
            Verdict::Granted(_)
        ));
        for s in [429, 500, 502, 503, 504, 599] {
            assert!(matches!(status(s, ""), Verdict::Retry(Transient::Status(x), None) if x == s));
        }
        for s in [401, 403] {
            assert_eq!(
                fail(status(s, "")),
                Failure::InvalidCredentials { status: s }
            );
        }
        assert_eq!(
            fail(status(400, r#"{"error":"invalid_client"}"#)),
            Failure::UnexpectedStatus {
                status: 400,
                oauth_error: Some("invalid_client".into())
            }
        );
        assert_eq!(
            fail(status(404, "nope")),
            Failure::UnexpectedStatus {
                status: 404,
                oauth_error: None
            }
        );
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let resp = |status| {
            Ok(HttpResponse {
                status,
                body: vec![],
                retry_after: Some("7".into()),
            })
        };
        assert!(matches!(classify(resp(429), 0), Verdict::Retry(_, Some(7))));
        assert!(matches!(classify(resp(503), 0), Verdict::Retry(_, Some(7))));
        assert!(matches!(classify(resp(500), 0), Verdict::Retry(_, None)));
        let detail = Failure::MaxRetries {
            attempts: 3,
            last: Transient::Status(429),
            retry_after: Some((7, 9_000)),
        }
        .detail();
        assert_eq!(
            detail,
            r#"{"error":"max_retries_exceeded","attempts":3,"last_status":429,"retry_after_seconds":7,"waited_ms":9000}"#
        );
    }

    #[test]
    fn transport_errors() {
        assert!(matches!(
            classify(Err(TransportError::Timeout), 0),
            Verdict::Retry(..)
        ));
        assert!(matches!(
            classify(Err(TransportError::Connection), 0),
            Verdict::Retry(..)
        ));
        assert_eq!(
            fail(classify(Err(TransportError::Denied), 0)),
            Failure::Transport(TransportError::Denied)
        );
        assert_eq!(
            fail(classify(Err(TransportError::Tls), 0)),
            Failure::Transport(TransportError::Tls)
        );
    }

    #[test]
    fn details_are_exact() {
        let grant = Grant {
            access_token: "secret-token".into(),
            token_type: "Bearer".into(),
            expires_in: 3600,
        };
        let fp = fingerprint("secret-token");
        let expected = format!(
            r#"{{"expires_in_seconds":3600,"token_type":"Bearer","token_fingerprint":"{fp}"}}"#
        );
        assert_eq!(grant_detail(&grant), expected);
        // printf abc | sha256sum: ba7816bf8f01cfea...
        assert_eq!(fingerprint("abc"), "ba7816bf8f01");
        assert_eq!(
            Failure::InvalidCredentials { status: 401 }.detail(),
            r#"{"status_code":401,"error":"invalid_credentials"}"#
        );
        assert_eq!(
            Failure::MaxRetries {
                attempts: 3,
                last: Transient::Status(503),
                retry_after: None,
            }
            .detail(),
            r#"{"error":"max_retries_exceeded","attempts":3,"last_status":503}"#
        );
        assert_eq!(
            Failure::MaxRetries {
                attempts: 3,
                last: Transient::Transport(TransportError::Timeout),
                retry_after: None,
            }
            .detail(),
            r#"{"error":"max_retries_exceeded","attempts":3,"last_error":"timeout"}"#
        );
        assert_eq!(
            Failure::UnexpectedStatus {
                status: 400,
                oauth_error: Some("invalid_client".into())
            }
            .detail(),
            r#"{"status_code":400,"error":"unexpected_client_error","oauth_error":"invalid_client"}"#
        );
        assert_eq!(
            Failure::UnexpectedStatus {
                status: 302,
                oauth_error: None
            }
            .detail(),
            r#"{"status_code":302,"error":"unexpected_redirect"}"#
        );
    }
}
