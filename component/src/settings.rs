//! Settings and the token endpoint they name.
//!
//! The host parses the same URL with [`Endpoint::parse`] to decide where the
//! component's outgoing HTTP may go, so the guest and the host can never
//! disagree about the endpoint.

use std::fmt;

/// Default token endpoint path (SPEC §2).
pub const DEFAULT_TOKEN_PATH: &str = "/coreapi/access-management/v1/token";

/// How the client authenticates to the token endpoint (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Id and secret in the form body.
    #[default]
    SecretPost,
    /// HTTP Basic with the form-urlencoded id and secret.
    SecretBasic,
}

/// Everything the manager needs; mirrors the WIT `settings` record.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// Gateway base URL.
    pub base_url: String,
    /// OAuth2 client id (secret: never printed).
    pub client_id: String,
    /// OAuth2 client secret (secret: never printed).
    pub client_secret: String,
    /// Token endpoint path.
    pub token_path: String,
    /// Optional `scope` form parameter.
    pub scope: Option<String>,
    /// Optional `audience` form parameter.
    pub audience: Option<String>,
    /// Client authentication method.
    pub client_auth: ClientAuth,
    /// Refresh this many seconds before expiry.
    pub refresh_margin_seconds: u32,
    /// Attempts in all for one acquisition.
    pub max_attempts: u32,
    /// Backoff multiplier (ms).
    pub backoff_multiplier_ms: u32,
    /// Smallest backoff wait (ms).
    pub backoff_min_ms: u32,
    /// Largest backoff wait (ms).
    pub backoff_max_ms: u32,
    /// Connect timeout (ms).
    pub connect_timeout_ms: u32,
    /// First-byte timeout (ms).
    pub first_byte_timeout_ms: u32,
    /// Between-bytes timeout (ms).
    pub between_bytes_timeout_ms: u32,
    /// Deadline for one whole acquisition (ms).
    pub acquisition_deadline_ms: u32,
    /// Wait after a failed refresh while the cached token is unexpired (s).
    pub failure_cooldown_seconds: u32,
    /// Quiet period after 401/403 (s).
    pub invalid_credentials_cooldown_seconds: u32,
    /// Refresh-point jitter, as a percentage of the margin.
    pub refresh_jitter_percent: u8,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            token_path: DEFAULT_TOKEN_PATH.to_owned(),
            scope: None,
            audience: None,
            client_auth: ClientAuth::SecretPost,
            refresh_margin_seconds: 300,
            max_attempts: 3,
            backoff_multiplier_ms: 1_000,
            backoff_min_ms: 2_000,
            backoff_max_ms: 10_000,
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 10_000,
            between_bytes_timeout_ms: 10_000,
            acquisition_deadline_ms: 60_000,
            failure_cooldown_seconds: 30,
            invalid_credentials_cooldown_seconds: 60,
            refresh_jitter_percent: 10,
        }
    }
}

impl Settings {
    /// True iff base URL, client id and client secret are all non-empty (SPEC §2).
    pub fn is_configured(&self) -> bool {
        !self.base_url.trim().is_empty()
            && !self.client_id.is_empty()
            && !self.client_secret.is_empty()
    }
}

/// Redacts the credentials: `Debug` output may end up in logs.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("base_url", &self.base_url)
            .field("client_id", &crate::redact::client_id(&self.client_id))
            .field("client_secret", &"<redacted>")
            .field("token_path", &self.token_path)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .field("client_auth", &self.client_auth)
            .field("refresh_margin_seconds", &self.refresh_margin_seconds)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_multiplier_ms", &self.backoff_multiplier_ms)
            .field("backoff_min_ms", &self.backoff_min_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("first_byte_timeout_ms", &self.first_byte_timeout_ms)
            .field("between_bytes_timeout_ms", &self.between_bytes_timeout_ms)
            .field("acquisition_deadline_ms", &self.acquisition_deadline_ms)
            .field("failure_cooldown_seconds", &self.failure_cooldown_seconds)
            .field(
                "invalid_credentials_cooldown_seconds",
                &self.invalid_credentials_cooldown_seconds,
            )
            .field("refresh_jitter_percent", &self.refresh_jitter_percent)
            .finish()
    }
}

/// URL scheme of the token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP: loopback only.
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    /// The scheme's name as in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// The port a URL without one means.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The token endpoint: `{base_url}{token_path}`, split as `wasi:http` wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host name or IP literal (IPv6 with brackets), lower case.
    pub host: String,
    /// Port; the scheme's default when the URL names none.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path_with_query: String,
}

/// Why a base URL or token path is refused. The messages name the variable and
/// how to fix it; they never contain credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// The base URL is empty.
    Empty,
    /// No `scheme://` prefix, or a scheme other than http/https.
    Scheme(String),
    /// `http://` to a host that is not loopback.
    PlainHttp(String),
    /// No host after the scheme.
    MissingHost,
    /// `user:password@` in the URL.
    UserInfo,
    /// A port that is not a number in 1..=65535.
    Port(String),
    /// A character that cannot appear in a host.
    Host(String),
    /// A query or fragment in the base URL.
    QueryOrFragment,
    /// The token path is empty or has characters a path cannot have.
    TokenPath(String),
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Empty => write!(
                f,
                "MMC_API_BASE_URL is empty; set it to the gateway URL, e.g. https://gateway.example.com"
            ),
            UrlError::Scheme(s) => {
                write!(f, "MMC_API_BASE_URL must start with https:// (found `{s}`)")
            }
            UrlError::PlainHttp(host) => write!(
                f,
                "MMC_API_BASE_URL uses http:// for `{host}`; plain HTTP is allowed only for loopback hosts, use https://"
            ),
            UrlError::MissingHost => write!(
                f,
                "MMC_API_BASE_URL has no host; expected e.g. https://gateway.example.com"
            ),
            UrlError::UserInfo => write!(
                f,
                "MMC_API_BASE_URL must not contain credentials (user@ or user:password@); put them in MMC_API_CLIENT_ID and MMC_API_CLIENT_SECRET"
            ),
            UrlError::Port(p) => write!(
                f,
                "MMC_API_BASE_URL has an invalid port `{p}`; expected a number from 1 to 65535"
            ),
            UrlError::Host(h) => write!(f, "MMC_API_BASE_URL has an invalid host `{h}`"),
            UrlError::QueryOrFragment => write!(
                f,
                "MMC_API_BASE_URL must not contain `?` or `#`; give the query in MMC_API_TOKEN_PATH if the gateway needs one"
            ),
            UrlError::TokenPath(p) => write!(
                f,
                "MMC_API_TOKEN_PATH `{p}` is not a valid path; expected e.g. /coreapi/access-management/v1/token"
            ),
        }
    }
}

impl std::error::Error for UrlError {}

impl Endpoint {
    /// Parse `base_url` and join `token_path` to it.
    ///
    /// Accepts `https://host[:port][/prefix]`, and `http://` only for loopback
    /// hosts (`localhost`, `127.0.0.0/8`, `[::1]`).
    pub fn parse(base_url: &str, token_path: &str) -> Result<Endpoint, UrlError> {
        let base = base_url.trim();
        if base.is_empty() {
            return Err(UrlError::Empty);
        }
        let (scheme, rest) = match base.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, _)) => return Err(UrlError::Scheme(format!("{s}://"))),
            None => return Err(UrlError::Scheme(base.chars().take(16).collect())),
        };
        if rest.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment);
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UrlError::UserInfo);
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => scheme.default_port(),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(UrlError::Port(p.to_owned())),
            },
        };
        let host = host.to_ascii_lowercase();
        if scheme == Scheme::Http && !is_loopback(&host) {
            return Err(UrlError::PlainHttp(host));
        }
        let path = token_path.trim();
        if path.is_empty()
            || path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '#')
        {
            return Err(UrlError::TokenPath(path.chars().take(64).collect()));
        }
        let prefix = prefix.trim_end_matches('/');
        let path_with_query = if path.starts_with('/') {
            format!("{prefix}{path}")
        } else {
            format!("{prefix}/{path}")
        };
        Ok(Endpoint {
            scheme,
            host,
            port,
            path_with_query,
        })
    }

    /// `host:port`, as sent in the request's authority.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The full URL, for messages.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.path_with_query
        )
    }
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), UrlError> {
    if authority.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| UrlError::Host(authority.to_owned()))?;
        let host = &authority[..end + 2];
        match &rest[end + 1..] {
            "" => (host, None),
            p => (
                host,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| UrlError::Host(authority.to_owned()))?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(UrlError::MissingHost);
    }
    let valid =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']');
    if !host.chars().all(valid) {
        return Err(UrlError::Host(host.to_owned()));
    }
    Ok((host, port))
}

/// Loopback hosts, where plain HTTP cannot leave the machine.
pub fn is_loopback(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") || host == "[::1]" {
        return true;
    }
    let mut octets = host.split('.');
    octets.next() == Some("127")
        && host.split('.').count() == 4
        && octets.all(|o| o.parse::<u8>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_and_path() {
        let e = Endpoint::parse("https://gw.example.com", DEFAULT_TOKEN_PATH).unwrap();
        assert_eq!(e.scheme, Scheme::Https);
        assert_eq!(e.authority(), "gw.example.com:443");
        assert_eq!(e.path_with_query, DEFAULT_TOKEN_PATH);
        let e = Endpoint::parse("https://GW.example.com:8443/prefix/", "oauth/token").unwrap();
        assert_eq!(e.authority(), "gw.example.com:8443");
        assert_eq!(e.path_with_query, "/prefix/oauth/token");
        assert_eq!(e.url(), "https://gw.example.com:8443/prefix/oauth/token");
    }

    #[test]
    fn plain_http_only_for_loopback() {
        assert!(Endpoint::parse("http://127.0.0.1:8080", "/t").is_ok());
        assert!(Endpoint::parse("http://localhost", "/t").is_ok());
        assert!(Endpoint::parse("http://[::1]:9000", "/t").is_ok());
        assert_eq!(
            Endpoint::parse("http://gw.example.com", "/t"),
            Err(UrlError::PlainHttp("gw.example.com".into()))
        );
        assert!(matches!(
            Endpoint::parse("http://127.0.0.1.evil.com", "/t"),
            Err(UrlError::PlainHttp(_))
        ));
    }

    #[test]
    fn refuses_bad_urls_with_clear_messages() {
        assert_eq!(Endpoint::parse("", "/t"), Err(UrlError::Empty));
        assert!(matches!(
            Endpoint::parse("ftp://x", "/t"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            Endpoint::parse("gateway.example.com", "/t"),
            Err(UrlError::Scheme(_))
        ));
        assert_eq!(
            Endpoint::parse("https://", "/t"),
            Err(UrlError::MissingHost)
        );
        assert_eq!(
            Endpoint::parse("https://u:p@gw", "/t"),
            Err(UrlError::UserInfo)
        );
        assert!(matches!(
            Endpoint::parse("https://gw:99999", "/t"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            Endpoint::parse("https://gw:0", "/t"),
            Err(UrlError::Port(_))
        ));
        assert!(matches!(
            Endpoint::parse("https://g w", "/t"),
            Err(UrlError::Host(_))
        ));
        assert_eq!(
            Endpoint::parse("https://gw?x=1", "/t"),
            Err(UrlError::QueryOrFragment)
        );
        assert!(matches!(
            Endpoint::parse("https://gw", " "),
            Err(UrlError::TokenPath(_))
        ));
        let msg = Endpoint::parse("https://user:hunter2@gw", "/t")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(msg.contains("MMC_API_CLIENT_ID"), "{msg}");
    }

    #[test]
    fn configured_needs_all_three() {
        let mut s = Settings::default();
        assert!(!s.is_configured());
        s.base_url = "https://gw".into();
        s.client_id = "id".into();
        assert!(!s.is_configured());
        s.client_secret = "secret".into();
        assert!(s.is_configured());
    }

    #[test]
    fn debug_redacts_credentials() {
        let s = Settings {
            client_id: "client-abcdef".into(),
            client_secret: "s3cr3t-value".into(),
            ..Settings::default()
        };
        let out = format!("{s:?}");
        assert!(
            !out.contains("s3cr3t-value") && !out.contains("client-abcdef"),
            "{out}"
        );
        assert!(out.contains("clie***"), "{out}");
    }
}
