//! The component's only way out: `wasi:http`, restricted to the token endpoint.

use http::Uri;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use token_component::settings::{Endpoint, Scheme};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// No phase of a request may wait longer than this, whatever the guest asks
/// (wasmtime's own default is 600 s per phase).
pub const MAX_PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Used for a phase the guest leaves unset.
pub const DEFAULT_PHASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests let through and denied, shared with the [`crate::TokenManager`].
#[derive(Debug, Default)]
pub struct EgressStats {
    sent: AtomicU64,
    denied: AtomicU64,
}

impl EgressStats {
    /// Requests sent to the token endpoint.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    /// Requests refused by the policy.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

/// The egress policy: only the token endpoint's scheme, host and port.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    allowed: Option<(Scheme, String, u16)>,
    stats: Arc<EgressStats>,
}

impl EgressPolicy {
    /// Allow only `endpoint`'s origin (`None` denies everything), counting
    /// into `stats`.
    pub fn new(endpoint: Option<&Endpoint>, stats: Arc<EgressStats>) -> Self {
        EgressPolicy {
            allowed: endpoint.map(|e| (e.scheme, e.host.clone(), e.port)),
            stats,
        }
    }

    /// Whether a request to `uri` may leave.
    pub fn allows(&self, uri: &Uri) -> bool {
        let Some((scheme, host, port)) = &self.allowed else {
            return false;
        };
        let uri_scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            _ => return false,
        };
        let Some(uri_host) = uri.host() else {
            return false;
        };
        uri_scheme == *scheme
            && uri_host.eq_ignore_ascii_case(host)
            && uri.port_u16().unwrap_or(scheme.default_port()) == *port
    }
}

fn clamp(options: Option<RequestOptions>) -> RequestOptions {
    let phase =
        |t: Option<Duration>| Some(t.unwrap_or(DEFAULT_PHASE_TIMEOUT).min(MAX_PHASE_TIMEOUT));
    let o = options.unwrap_or_default();
    RequestOptions {
        connect_timeout: phase(o.connect_timeout),
        first_byte_timeout: phase(o.first_byte_timeout),
        between_bytes_timeout: phase(o.between_bytes_timeout),
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type ResponseFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

impl WasiHttpHooks for EgressPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> ResponseFuture {
        // The target is the request URI, which wasmtime builds from the
        // guest's scheme and authority; a guest `Host` header is forbidden.
        if !self.allows(request.uri()) {
            self.stats.denied.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                scheme = request.uri().scheme_str().unwrap_or(""),
                authority = request.uri().authority().map(|a| a.as_str()).unwrap_or(""),
                "outgoing request denied: not the token endpoint"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(method = %request.method(), path = request.uri().path(), "token request");
        let options = clamp(options);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) =
                wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(base: &str) -> EgressPolicy {
        EgressPolicy::new(
            Some(&Endpoint::parse(base, "/token").unwrap()),
            Arc::default(),
        )
    }

    #[test]
    fn only_the_token_origin() {
        let p = policy("https://gw.example.com");
        assert!(p.allows(&"https://gw.example.com/token".parse().unwrap()));
        assert!(p.allows(&"https://GW.example.com:443/other".parse().unwrap()));
        assert!(!p.allows(&"http://gw.example.com/token".parse().unwrap()));
        assert!(!p.allows(&"https://gw.example.com:8443/token".parse().unwrap()));
        assert!(!p.allows(&"https://evil.example.com/token".parse().unwrap()));
        assert!(!p.allows(&"/token".parse().unwrap()));
        let p = policy("http://127.0.0.1:8080");
        assert!(p.allows(&"http://127.0.0.1:8080/t".parse().unwrap()));
        assert!(!p.allows(&"http://127.0.0.1:8081/t".parse().unwrap()));
        assert!(
            !EgressPolicy::new(None, Arc::default())
                .allows(&"https://gw.example.com/".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_host_header_cannot_redirect_a_request() {
        use http_body_util::BodyExt;
        let mut p = policy("https://gw.example.com");
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = http::Request::post("https://evil.example.com/token")
            .header(http::header::HOST, "gw.example.com")
            .body(body)
            .unwrap();
        let response = Box::into_pin(p.send_request(request, None, Box::new(async { Ok(()) })));
        assert!(matches!(response.await, Err(HttpError::HttpRequestDenied)));
        assert_eq!(p.stats.denied(), 1);
        // and the guest may not set one at all
        assert!(wasmtime_wasi_http::DEFAULT_FORBIDDEN_HEADERS.contains(&http::header::HOST));
    }

    #[test]
    fn timeouts_are_defaulted_and_capped() {
        let o = clamp(Some(RequestOptions {
            connect_timeout: Some(Duration::from_secs(600)),
            ..Default::default()
        }));
        assert_eq!(o.connect_timeout, Some(MAX_PHASE_TIMEOUT));
        assert_eq!(o.first_byte_timeout, Some(DEFAULT_PHASE_TIMEOUT));
    }
}
