//! A small HTTP/1.1 server on 127.0.0.1 with fault injection: a peer answers requests through
//! a [`Service`]; `POST /_peer/fault` makes the next requests fail the way services fail.
//!
//! Faults (JSON body `{"mode": …, "count": N, "retry_after": S}`, `count` default 1):
//! `throttle` (429 with `Retry-After`), `unavailable` (503), `stall` (no answer for an hour),
//! `reset` (the connection is closed without an answer); `none` clears them. With
//! `SEALKIT_TESTPEERS_LOG` set, every request and answer is written to stderr.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A request as a peer sees it: method, path, query and body.
#[derive(Debug)]
pub struct PeerRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path, percent-decoded.
    pub path: String,
    /// The query string's pairs, percent-decoded.
    pub query: Vec<(String, String)>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl PeerRequest {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> std::collections::HashMap<String, String> {
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(&v.replace('+', " "))))
            .collect()
    }
}

/// A peer's answer: status, JSON body and extra headers.
#[derive(Debug)]
pub struct PeerResponse {
    /// The status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

impl PeerResponse {
    /// 200 with `body`.
    pub fn ok(body: Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
            headers: Vec::new(),
        }
    }
}

/// What a peer does with a request.
pub trait Service: Send + Sync + 'static {
    /// Answers `request`.
    fn handle(&self, request: &PeerRequest) -> PeerResponse;

    /// The error body of this service for a failure status (`429`, `503`) a fault injects.
    fn fault_body(&self, status: StatusCode, message: &str) -> Value;
}

/// The faults still to inject.
#[derive(Debug, Default)]
struct Faults {
    mode: Option<String>,
    left: u64,
    retry_after: u64,
}

/// Serves `service` on 127.0.0.1:`port` (0: any free port); returns the address, and runs
/// until the process ends.
pub async fn serve(service: Arc<dyn Service>, port: u16) -> std::io::Result<SocketAddr> {
    serve_on(service, port, None).await
}

/// Serves `service` over TLS (`tls`) on 127.0.0.1:`port`, like [`serve`].
pub async fn serve_tls(
    service: Arc<dyn Service>,
    port: u16,
    tls: tokio_rustls::TlsAcceptor,
) -> std::io::Result<SocketAddr> {
    serve_on(service, port, Some(tls)).await
}

async fn serve_on(
    service: Arc<dyn Service>,
    port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let faults = Arc::new(Mutex::new(Faults::default()));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (service, faults, tls) = (service.clone(), faults.clone(), tls.clone());
            tokio::spawn(async move {
                let handler = service_fn(move |req| {
                    let (service, faults) = (service.clone(), faults.clone());
                    async move { answer(&*service, &faults, req).await }
                });
                // A `reset` fault ends the connection with an error: nothing is answered.
                match tls {
                    None => {
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), handler)
                            .await;
                    }
                    Some(tls) => {
                        // A client that does not trust the certificate ends the handshake.
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), handler)
                                .await;
                        }
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// The error a `reset` fault returns to drop the connection.
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by a fault")
    }
}

impl std::error::Error for Reset {}

async fn answer(
    service: &dyn Service,
    faults: &Mutex<Faults>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Reset> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (path, query) = match parts.uri.path_and_query() {
        Some(pq) => (pq.path().to_string(), pq.query().unwrap_or("").to_string()),
        None => (String::new(), String::new()),
    };
    if path == "/_peer/fault" {
        return Ok(set_fault(faults, &body));
    }
    let injected = {
        let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
        if f.left > 0 {
            f.left -= 1;
            f.mode.clone().map(|m| (m, f.retry_after))
        } else {
            None
        }
    };
    if let Some((mode, retry_after)) = injected {
        match mode.as_str() {
            "throttle" => {
                let mut r = respond(PeerResponse {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    body: service.fault_body(StatusCode::TOO_MANY_REQUESTS, "Quota exceeded"),
                    headers: Vec::new(),
                });
                r.headers_mut().insert("retry-after", retry_after.into());
                return Ok(r);
            }
            "unavailable" => {
                return Ok(respond(PeerResponse {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    body: service.fault_body(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "The service is unavailable",
                    ),
                    headers: Vec::new(),
                }));
            }
            "stall" => tokio::time::sleep(std::time::Duration::from_secs(3600)).await,
            "reset" => return Err(Reset),
            _ => {}
        }
    }
    let request = PeerRequest {
        method: parts.method,
        path: percent_decode(&path),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(&v.replace('+', " ")))
            })
            .collect(),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body,
    };
    let answer = service.handle(&request);
    if std::env::var_os("SEALKIT_TESTPEERS_LOG").is_some() {
        eprintln!(
            "{} {}?{} {} -> {} {}",
            request.method,
            request.path,
            query,
            String::from_utf8_lossy(&request.body),
            answer.status.as_u16(),
            answer.body
        );
    }
    Ok(respond(answer))
}

fn set_fault(faults: &Mutex<Faults>, body: &[u8]) -> Response<Full<Bytes>> {
    let spec: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mode = spec["mode"].as_str().unwrap_or("none");
    let mut f = faults.lock().unwrap_or_else(|e| e.into_inner());
    *f = match mode {
        "throttle" | "unavailable" | "stall" | "reset" => Faults {
            mode: Some(mode.to_string()),
            left: spec["count"].as_u64().unwrap_or(1),
            retry_after: spec["retry_after"].as_u64().unwrap_or(1),
        },
        _ => Faults::default(),
    };
    respond(PeerResponse::ok(json!({ "mode": mode, "count": f.left })))
}

fn respond(r: PeerResponse) -> Response<Full<Bytes>> {
    // `null` is an empty body (`204 No Content`).
    let body = if r.body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(r.body.to_string())
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = r.status;
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    for (name, value) in r.headers {
        if let Ok(value) = value.parse() {
            headers.insert(name, value);
        }
    }
    response
}

/// Decodes `%XX` escapes (invalid ones are kept as written).
pub fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? << 4 | hex(bytes[i + 2])?))
            .flatten();
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
