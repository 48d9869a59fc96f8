//! The transport: one token request over `wasi:http/outgoing-handler`.

use crate::manager::TokenRequest;
use crate::outcome::{HttpResponse, TransportError};
use crate::settings::Scheme;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme as WasiScheme,
};
use wasi::io::streams::StreamError;

/// Token responses are small; a larger body is refused without reading it all.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Send `request` and read the whole (capped) response.
pub fn post(request: &TokenRequest<'_>) -> Result<HttpResponse, TransportError> {
    let mut headers = vec![
        (
            "content-type".to_owned(),
            b"application/x-www-form-urlencoded".to_vec(),
        ),
        ("accept".to_owned(), b"application/json".to_vec()),
    ];
    if let Some(auth) = request.authorization {
        headers.push(("authorization".to_owned(), auth.as_bytes().to_vec()));
    }
    let fields = Fields::from_list(&headers).map_err(|_| TransportError::Protocol)?;
    let outgoing = OutgoingRequest::new(fields);
    let endpoint = request.endpoint;
    let scheme = match endpoint.scheme {
        Scheme::Http => WasiScheme::Http,
        Scheme::Https => WasiScheme::Https,
    };
    let authority = endpoint.authority();
    let set = outgoing.set_method(&Method::Post).is_ok()
        && outgoing.set_scheme(Some(&scheme)).is_ok()
        && outgoing.set_authority(Some(&authority)).is_ok()
        && outgoing
            .set_path_with_query(Some(&endpoint.path_with_query))
            .is_ok();
    if !set {
        return Err(TransportError::Protocol);
    }
    let body = outgoing.body().map_err(|_| TransportError::Protocol)?;

    let options = RequestOptions::new();
    let ns = |ms: u64| ms.saturating_mul(1_000_000);
    // A host may refuse to set a timeout; the request still goes, with the host's.
    let _ = options.set_connect_timeout(Some(ns(request.timeouts.connect_ms)));
    let _ = options.set_first_byte_timeout(Some(ns(request.timeouts.first_byte_ms)));
    let _ = options.set_between_bytes_timeout(Some(ns(request.timeouts.between_bytes_ms)));

    let future = outgoing_handler::handle(outgoing, Some(options)).map_err(map_error)?;
    // A request the host refuses fails the body write too; the response
    // future says why, so it is consulted first.
    let written = write_body(body, request.body.as_bytes());

    let deadline =
        wasi::clocks::monotonic_clock::now().saturating_add(ns(request.timeouts.total_ms));
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(map_error(code)),
        Some(Err(())) | None => return Err(TransportError::Protocol),
    };
    written?;
    let status = response.status();
    let headers = response.headers();
    let header = |name: &str| {
        let values = headers.get(name);
        values
            .first()
            .and_then(|v| String::from_utf8(v.clone()).ok())
    };
    let declared = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let retry_after = header("retry-after");
    drop(headers);
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(TransportError::BodyTooLarge);
    }
    let incoming = response.consume().map_err(|_| TransportError::Protocol)?;
    let body = read_body(&incoming, deadline)?;
    Ok(HttpResponse {
        status,
        body,
        retry_after,
    })
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), TransportError> {
    {
        let stream = body.write().map_err(|_| TransportError::Protocol)?;
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for chunk in bytes.chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None).map_err(map_error)
}

/// Read the body until it ends, the cap is passed, or `deadline` (monotonic
/// nanoseconds) arrives: the between-bytes timeout alone would let a server
/// that sends a byte a second hold the call for as long as it likes.
fn read_body(incoming: &IncomingBody, deadline: u64) -> Result<Vec<u8>, TransportError> {
    let stream = incoming.stream().map_err(|_| TransportError::Protocol)?;
    let timer = wasi::clocks::monotonic_clock::subscribe_instant(deadline);
    let readable = stream.subscribe();
    let mut body = Vec::new();
    loop {
        let ready = wasi::io::poll::poll(&[&readable, &timer]);
        if !ready.contains(&0) {
            return Err(TransportError::Timeout);
        }
        match stream.read(16 * 1024) {
            Ok(chunk) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY_BYTES {
                    return Err(TransportError::BodyTooLarge);
                }
            }
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}

fn stream_error(e: StreamError) -> TransportError {
    match e {
        StreamError::LastOperationFailed(err) => wasi::http::types::http_error_code(&err)
            .map(map_error)
            .unwrap_or(TransportError::Connection),
        StreamError::Closed => TransportError::Connection,
    }
}

fn map_error(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::ConnectionTimeout
        | ErrorCode::ConnectionReadTimeout
        | ErrorCode::ConnectionWriteTimeout
        | ErrorCode::HttpResponseTimeout
        | ErrorCode::DnsTimeout => TransportError::Timeout,
        ErrorCode::DnsError(_)
        | ErrorCode::DestinationNotFound
        | ErrorCode::DestinationUnavailable
        | ErrorCode::DestinationIpUnroutable
        | ErrorCode::ConnectionRefused
        | ErrorCode::ConnectionTerminated
        | ErrorCode::ConnectionLimitReached => TransportError::Connection,
        ErrorCode::TlsProtocolError
        | ErrorCode::TlsCertificateError
        | ErrorCode::TlsAlertReceived(_) => TransportError::Tls,
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => TransportError::Denied,
        ErrorCode::HttpResponseBodySize(_) => TransportError::BodyTooLarge,
        _ => TransportError::Protocol,
    }
}
