//! The signer's HTTP adapter (hyper 1, HTTP/1.1, TLS through rustls when
//! asked): routes, the bearer token, the body limit, JSON in and out. All
//! the deciding is in [`super::service`].
//!
//! Every call is logged once, at info, on target `lazysnap::signer`:
//! method, route (the pattern, never the query), the token's prefix,
//! status, error code and duration. Never a token, a header or a URL.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api;
use super::service::{ApiError, ApiResult, Signer};
use crate::error::{Error, Result};

/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 512;

/// Time a client has to send a request's head, and a TLS handshake.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send a request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Accept connections on `listener` forever, each served in its own task.
pub async fn serve(
    listener: tokio::net::TcpListener,
    signer: Arc<Signer>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("connection slots closed".into()))?;
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors and the like: pause, go on.
                tracing::warn!(target: "lazysnap::signer", "accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let signer = signer.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let signer = signer.clone();
                async move { Ok::<_, Infallible>(handle(&signer, req).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT);
            let served = match tls {
                None => http.serve_connection(TokioIo::new(sock), service).await,
                Some(acceptor) => match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(sock)).await {
                    Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!(target: "lazysnap::signer", "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = served {
                tracing::debug!(target: "lazysnap::signer", "connection ended: {e}");
            }
        });
    }
}

/// A TLS acceptor from a PEM certificate chain and private key.
pub fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |path: &std::path::Path, why: String| Error::Invalid {
        what: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, format!("reading certificates: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, format!("reading certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad(cert, "no certificate in it".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, format!("reading the private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| bad(cert, format!("certificate and key do not go together: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What one call did, for its log line.
struct Call {
    route: &'static str,
    prefix: Option<String>,
}

async fn handle(signer: &Signer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let t0 = Instant::now();
    let method = req.method().clone();
    let mut call = Call {
        route: "?",
        prefix: None,
    };
    let (status, body) = match route(signer, req, &mut call).await {
        Ok(body) => (200, body),
        Err(e) => (e.status, to_json(&e.body())),
    };
    let code = match &body {
        _ if status == 200 => String::new(),
        b => serde_json::from_slice::<api::ErrorBody>(b)
            .map(|e| format!(" {}", e.error.code))
            .unwrap_or_default(),
    };
    tracing::info!(
        target: "lazysnap::signer",
        "{method} {} prefix={} {status}{code} {:.1}ms",
        call.route,
        call.prefix.as_deref().unwrap_or("-"),
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    // Answers hold presigned URLs: no cache keeps them.
    headers.insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    resp
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    match serde_json::to_vec(v) {
        Ok(b) => Bytes::from(b),
        Err(_) => Bytes::from_static(br#"{"error":{"code":"internal","message":"encoding the answer"}}"#),
    }
}

fn ok<T: Serialize>(v: ApiResult<T>) -> ApiResult<Bytes> {
    v.map(|v| to_json(&v))
}

async fn route(signer: &Signer, req: Request<Incoming>, call: &mut Call) -> ApiResult<Bytes> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        call.route = "/healthz";
        if method != Method::GET && method != Method::HEAD {
            return Err(not_allowed());
        }
        return ok(Ok(api::Health {
            status: "ok".into(),
            versions: vec![api::VERSION.into()],
        }));
    }
    let Some(rest) = path.strip_prefix("/v1/") else {
        return Err(ApiError::new(
            404,
            "no_route",
            "no such route (the API lives under /v1/)",
        ));
    };
    // The token first: without one, not even whether a route exists.
    let grant = signer.authorise(bearer(&req).as_deref())?;
    call.prefix = Some(grant.prefix.clone());
    match rest {
        "spec" => {
            call.route = "/v1/spec";
            post(&method)?;
            ok(signer.spec(&grant, &body(req).await?).await)
        }
        "snapshots" => {
            call.route = "/v1/snapshots";
            if method != Method::GET {
                return Err(not_allowed());
            }
            ok(signer.list(&grant).await)
        }
        "uploads" => {
            call.route = "/v1/uploads";
            post(&method)?;
            ok(signer.create_upload(&grant, &body(req).await?).await)
        }
        "uploads/parts" => {
            call.route = "/v1/uploads/parts";
            post(&method)?;
            ok(signer.upload_parts(&grant, &body(req).await?).await)
        }
        "uploads/complete" => {
            call.route = "/v1/uploads/complete";
            post(&method)?;
            ok(signer.complete_upload(&grant, &body(req).await?).await)
        }
        "uploads/abort" => {
            call.route = "/v1/uploads/abort";
            post(&method)?;
            ok(signer.abort_upload(&grant, &body(req).await?).await)
        }
        _ => match rest.strip_prefix("snapshots/") {
            Some(name) => {
                call.route = "/v1/snapshots/{name}";
                if method != Method::DELETE {
                    return Err(not_allowed());
                }
                ok(signer.delete(&grant, &percent_decode(name)?).await)
            }
            None => Err(ApiError::new(404, "no_route", "no such route")),
        },
    }
}

fn not_allowed() -> ApiError {
    ApiError::new(405, "method_not_allowed", "method not allowed on this route")
}

fn post(method: &Method) -> ApiResult<()> {
    if method == Method::POST {
        Ok(())
    } else {
        Err(not_allowed())
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(req: &Request<Incoming>) -> Option<String> {
    let v = req.headers().get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_string())
}

/// A body over the limit is still read, up to this many bytes, before the
/// 413 is sent: a server that answers and closes while the client is still
/// writing resets the connection, and the client sees a broken pipe
/// instead of the answer. Past this, the connection is closed unread.
const DRAIN_MAX: usize = 4 * api::MAX_BODY;

/// The JSON body, at most [`api::MAX_BODY`] bytes.
async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> ApiResult<T> {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut over = declared.is_some_and(|n| n > api::MAX_BODY as u64);
    let mut incoming = req.into_body();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    let read = tokio::time::timeout(BODY_TIMEOUT, async {
        while let Some(frame) = incoming.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
            seen = seen.saturating_add(data.len());
            over |= seen > api::MAX_BODY;
            if over {
                kept = Vec::new();
                if seen > DRAIN_MAX {
                    break;
                }
            } else {
                kept.extend_from_slice(&data);
            }
        }
        Ok::<(), hyper::Error>(())
    })
    .await;
    if over {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("request body over {} bytes", api::MAX_BODY),
        ));
    }
    match read {
        Err(_) => return Err(ApiError::new(408, "timeout", "the request body took too long")),
        Ok(Err(_)) => return Err(ApiError::bad_request("the request body was cut short")),
        Ok(Ok(())) => {}
    }
    serde_json::from_slice(&kept).map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
}

/// Decode `%XX` escapes of a path segment (strictly: a stray `%` or bytes
/// that are not UTF-8 are a bad name).
fn percent_decode(s: &str) -> ApiResult<String> {
    let bad = || ApiError::new(400, "bad_name", "bad percent-encoding in the snapshot name");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("org/repo/a%20b").expect("ok"), "org/repo/a b");
        assert_eq!(percent_decode("org%2Frepo%2F%2e%2e").expect("ok"), "org/repo/..");
        assert_eq!(percent_decode("%C3%A9").expect("ok"), "é");
        for bad in ["%", "%2", "%zz", "%C3", "a%G0"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }
}
