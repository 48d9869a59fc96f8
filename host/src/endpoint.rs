//! A local OAuth2 token endpoint (client-credentials grant) on 127.0.0.1.
//!
//! It serves the `demo` and is the base of the end-to-end test fixtures: it
//! checks the client's credentials (`client_secret_post` or `_basic`), issues
//! real HS256-signed JWTs, records every request, and can be scripted to
//! answer the next requests with any status, body and delay.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What the endpoint accepts and issues.
#[derive(Clone)]
pub struct EndpointConfig {
    /// The one client it knows.
    pub client_id: String,
    /// Its secret.
    pub client_secret: String,
    /// The path it serves (other paths get 404).
    pub path: String,
    /// `expires_in` of issued tokens, seconds.
    pub lifetime_secs: u64,
    /// `iss` claim.
    pub issuer: String,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            client_id: "brasilintel-demo-client".into(),
            client_secret: random_hex(16),
            path: token_component::settings::DEFAULT_TOKEN_PATH.into(),
            lifetime_secs: 3600,
            issuer: "brasilintel-demo-endpoint".into(),
        }
    }
}

/// A canned answer for one request.
#[derive(Clone, Debug, Default)]
pub struct Scripted {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Scripted {
    /// A status with a body.
    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Scripted {
            status,
            body: body.into(),
            ..Scripted::default()
        }
    }

    /// A 200 with a JSON body.
    pub fn json(body: serde_json::Value) -> Self {
        Scripted::status(200, body.to_string())
    }

    /// Answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// One request as the endpoint saw it. Holds credentials: no `Debug`.
#[derive(Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// Raw body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub received_at: std::time::Instant,
}

impl RecordedRequest {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as decoded form fields.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_form(&String::from_utf8_lossy(&self.body))
    }

    /// The first value of a form field.
    pub fn form_value(&self, name: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

struct State {
    config: EndpointConfig,
    key: Vec<u8>,
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<Scripted>>,
    issued: Mutex<Vec<String>>,
}

/// A running endpoint; stops when dropped.
pub struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    /// Listen on an ephemeral port of 127.0.0.1.
    pub async fn start(config: EndpointConfig) -> std::io::Result<TokenEndpoint> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            key: random_bytes(32),
            requests: Mutex::default(),
            script: Mutex::default(),
            issued: Mutex::default(),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(TokenEndpoint { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`, the base URL to configure.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it accepts.
    pub fn config(&self) -> &EndpointConfig {
        &self.state.config
    }

    /// Answer the next requests with these, in order, before behaving normally.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        lock(&self.state.script).extend(answers);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        lock(&self.state.requests).len()
    }

    /// Every token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state.issued).clone()
    }

    /// Check a token's signature and expiry; returns its claims.
    pub fn verify(&self, token: &str) -> Option<serde_json::Value> {
        let (signed, sig) = token.rsplit_once('.')?;
        let expected = sign(&self.state.key, signed);
        if URL_SAFE_NO_PAD.encode(expected) != sig {
            return None;
        }
        let payload = signed.split('.').nth(1)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims["exp"].as_u64()? > unix_now()).then_some(claims)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        received_at: std::time::Instant::now(),
    };
    lock(&state.requests).push(recorded.clone());
    let scripted = lock(&state.script).pop_front();
    let answer = match scripted {
        Some(s) => s,
        None => grant(&state, &recorded),
    };
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let mut response = Response::builder().status(answer.status);
    for (k, v) in &answer.headers {
        response = response.header(k, v);
    }
    Ok(response
        .body(Full::new(Bytes::from(answer.body)))
        .expect("valid response"))
}

/// The normal behaviour: RFC 6749 §4.4 with §5.2 errors.
fn grant(state: &State, req: &RecordedRequest) -> Scripted {
    let error =
        |status: u16, code: &str| Scripted::status(status, json!({"error": code}).to_string());
    let config = &state.config;
    if req.path.split('?').next() != Some(config.path.as_str()) {
        return error(404, "not_found");
    }
    if req.method != "POST" {
        return error(405, "invalid_request");
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    {
        return error(400, "invalid_request");
    }
    let form = req.form();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    if field("grant_type").as_deref() != Some("client_credentials") {
        return error(400, "unsupported_grant_type");
    }
    let credentials = match req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Basic "))
    {
        Some(basic) => basic_credentials(basic),
        None => field("client_id").zip(field("client_secret")),
    };
    match credentials {
        Some((id, secret)) if id == config.client_id && secret == config.client_secret => {}
        _ => return error(401, "invalid_client"),
    }
    let token = issue_jwt(state);
    lock(&state.issued).push(token.clone());
    let mut answer = Scripted::json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": config.lifetime_secs,
    }));
    answer.headers = vec![
        ("content-type".into(), "application/json".into()),
        ("cache-control".into(), "no-store".into()),
    ];
    answer
}

/// RFC 6749 §2.3.1: Base64 of the form-encoded id and secret joined by `:`.
fn basic_credentials(b64: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn issue_jwt(state: &State) -> String {
    let now = unix_now();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims = json!({
        "iss": state.config.issuer,
        "sub": state.config.client_id,
        "iat": now,
        "exp": now + state.config.lifetime_secs,
        "jti": random_hex(8),
    });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(sign(&state.key, &signed));
    format!("{signed}.{sig}")
}

fn sign(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Decode `application/x-www-form-urlencoded`.
pub fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the OS random number generator");
    buf
}

fn random_hex(n: usize) -> String {
    random_bytes(n).iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_round_trip() {
        let encoded = token_component::form::encode("a b+c&d=e%f:ç");
        assert_eq!(form_decode(&encoded), "a b+c&d=e%f:ç");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(
            parse_form("a=1&b=x+y&c"),
            [
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), String::new())
            ]
        );
    }
}
